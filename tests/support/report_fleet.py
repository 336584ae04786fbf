"""A store like the demo's (200 phones, mixed pools, modes and outcomes) made in well under a second.

The bench's fleet generator writes phones, certificates and CSRs into the real schema; on top of
it untrusted descriptions and pools are set as an administrator sets them (one bulk change on the
converge path of phone settings), and a few phones go through the store's own record functions
sessions use: failed operations with reasons, repeated authentication failures up to a lock-out.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import fleet  # noqa: E402  pylint: disable=wrong-import-position
from _opencapf import phone_config  # noqa: E402  pylint: disable=wrong-import-position
from _opencapf.store import phones as phone_records  # noqa: E402  pylint: disable=wrong-import-position

# Text a hostile or careless administrator could store in a description or a pool name: if the
# page ever stops escaping, it runs a script, loads an image or breaks out of the JSON island.
HOSTILE_DESCRIPTION = ('<script>window.__pwned = 1</script><img src="http://192.0.2.1/x.png" '
                       'onerror="window.__pwned = 2">&amp; "quoted" \'single\' </script><!--')
HOSTILE_POOL = '<svg onload="window.__pwned = 3">'
HOSTILE_REASON = '</title></svg><script>window.__pwned = 4</script>'
HOSTILE_POOL_PHONES = 30  # the largest pool, so that its name is a chart label too
LOCKOUT_FAILURES = 3
FIRST_MAC = 0x00DE00000000
FAILURE_REASONS = ("key generation timed out", "authentication string mismatch", "CSR refused: wrong_key")


def make(store, phones: int = 200) -> dict:
    """Fill ``store`` with ``phones`` phones; return what was made beyond the generator's mix."""
    generated = fleet.generate(store, phones, seed=17, first_mac=FIRST_MAC)
    names = [f"SEP{FIRST_MAC + index:012X}" for index in range(phones)]
    failed = {names[index]: FAILURE_REASONS[index % len(FAILURE_REASONS)] for index in range(1, 10)}
    failed[names[12]] = HOSTILE_REASON
    locked = names[10:12]
    with store.transaction() as tx:
        hostile = names[:HOSTILE_POOL_PHONES]
        current = phone_records.by_name(tx, hostile)
        phone_config.converge_many(tx, "test", b"", [
            (current[name], phone_config.PhoneRequest(name, phone_config.check_settings(
                {"device_pool": HOSTILE_POOL, "description": HOSTILE_DESCRIPTION if name == names[0] else None})))
            for name in hostile], via="bulk")
        for name, reason in failed.items():
            phone_records.set_operation_result(tx, "test", phone_records.get(tx, name), "failed", reason)
        for name in locked:
            for _attempt in range(LOCKOUT_FAILURES):
                phone = phone_records.get(tx, name)
                phone_records.record_auth_failure(tx, "test", phone, LOCKOUT_FAILURES, "authentication string mismatch",
                                                  operation=phone["operation"])
    return {"generated": generated, "names": names, "failed": failed, "locked": locked}
