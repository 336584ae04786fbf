# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which address family a phone uses to reach CAPF: Table 2 of the source, row by row.


Key: (phone IP mode, address families on the phone, address families of CAPF). Value: the
families the phone tries, in order; an empty tuple means the phone cannot connect. Row 3 is
kept as the source states it: a dual-stack phone with only an IPv6 address still falls back to
IPv4 when IPv6 fails.
"""

from __future__ import annotations

import functools

from ..errors import ValidationError

IP_MODES = ("dual", "ipv4", "ipv6")
BOTH = frozenset({4, 6})
V4 = frozenset({4})
V6 = frozenset({6})

TABLE_2 = {
    ("dual", BOTH, BOTH): (6, 4),
    ("dual", V4, BOTH): (4,),
    ("dual", V6, BOTH): (6, 4),
    ("dual", V4, V4): (4,),
    ("dual", BOTH, V6): (6,),
    ("dual", BOTH, V4): (4,),
    ("dual", V4, V6): (),
    ("dual", V6, V4): (),
    ("dual", V6, V6): (6,),
    ("ipv4", V4, BOTH): (4,),
    ("ipv6", V6, BOTH): (6,),
    ("ipv4", V4, V4): (4,),
    ("ipv4", V4, V6): (),
    ("ipv6", V6, V6): (6,),
    ("ipv6", V6, V4): (),
}
# The source's table has these 15 data rows (it is printed in two parts, each with its own header
# line): every combination of phone mode, phone families and CAPF families that can occur.


def _host(entry) -> str:
    """The address of a CAPF address or of an ``(address, port)`` pair."""
    return str(entry[0] if isinstance(entry, (tuple, list)) else entry)


def families(addresses) -> frozenset:
    return frozenset(_family(_host(address)) for address in addresses)


@functools.lru_cache(maxsize=4096)
def _family(host: str) -> int:
    """4 or 6 (parsed once per address: every phone of a fleet orders the same CAPF addresses)."""
    import ipaddress
    return ipaddress.ip_address(host.split("%", maxsplit=1)[0]).version


def plan(ip_mode: str, phone_families, capf_families) -> tuple:
    """The families to try in order (Table 2); () when the phone cannot connect."""
    if ip_mode not in IP_MODES:
        raise ValidationError("ip_mode", "must be one of " + ", ".join(IP_MODES), ip_mode)
    phone_families = frozenset(phone_families)
    capf_families = frozenset(capf_families)
    if ip_mode == "ipv4":
        phone_families &= V4
    elif ip_mode == "ipv6":
        phone_families &= V6
    key = (ip_mode, phone_families, capf_families)
    if key in TABLE_2:
        return TABLE_2[key]
    return ()


def ordered_addresses(ip_mode: str, phone_families, capf_addresses) -> list:
    """CAPF addresses (or ``(address, port)`` pairs) in the order the phone tries them: by family as
    Table 2 says, in the order given within a family."""
    order = plan(ip_mode, phone_families, families(capf_addresses))
    result = []
    for family in order:
        result += [a for a in capf_addresses if families([a]) == frozenset({family})]
    return result
