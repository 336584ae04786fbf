# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the configured online CA client from plain settings (the ``online_ca`` mapping)."""

from __future__ import annotations

from ..errors import ValidationError
from ..vocabulary import ONLINE_CA_TYPES, check_bool, check_choice, check_int_range, check_port
from .adcs import AdcsIssuer
from .est import EstIssuer
from .transport import AUTH_METHODS, Connection, check_hostname

TIMEOUT_SECONDS = (1, 300)
SETTINGS = ("type", "hostname", "port", "template", "username", "profile_label", "auth", "client_certificate",
            "client_key", "timeout_seconds", "ec_supported")


def build(settings: dict, trust_pems, *, password=None, fips_mode: bool = False, field: str = "online_ca"):
    """An EstIssuer or AdcsIssuer for ``settings``; ``trust_pems`` is the content of CAPF-trust.

    The password comes separately because it is kept as a secret, never in the settings."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValidationError(f"{field}.{unknown[0]}", "is not an online CA setting; known: " + ", ".join(SETTINGS))
    kind = check_choice(f"{field}.type", settings.get("type"), ONLINE_CA_TYPES)
    if kind == "microsoft" and check_bool("fips_mode", fips_mode):
        raise ValidationError(f"{field}.type", "must not be microsoft in FIPS mode (use est)", kind)
    auth = check_choice(f"{field}.auth", settings.get("auth") or "basic", AUTH_METHODS)
    if auth == "ntlm" and kind != "microsoft":
        raise ValidationError(f"{field}.auth", "ntlm is only available for the microsoft type", auth)
    connection = Connection(
        hostname=check_hostname(settings.get("hostname"), f"{field}.hostname"),
        port=check_port(settings.get("port", 443), f"{field}.port"),
        trust_pems=tuple(trust_pems),
        username=settings.get("username") or None,
        password=password,
        auth=auth,
        client_certificate=settings.get("client_certificate") or None,
        client_key=settings.get("client_key") or None,
        timeout=check_int_range(f"{field}.timeout_seconds", settings.get("timeout_seconds", 30), TIMEOUT_SECONDS,
                                " seconds"),
    )
    if kind == "est":
        if settings.get("template"):
            raise ValidationError(f"{field}.template", "applies to the microsoft type only", settings["template"])
        return EstIssuer(connection, settings.get("profile_label"),
                         ec_supported=check_bool(f"{field}.ec_supported", settings.get("ec_supported", True)))
    if settings.get("profile_label"):
        raise ValidationError(f"{field}.profile_label", "applies to the est type only", settings["profile_label"])
    if not settings.get("template"):
        raise ValidationError(f"{field}.template", "is required for the microsoft type")
    return AdcsIssuer(connection, settings["template"],
                      ec_supported=check_bool(f"{field}.ec_supported", settings.get("ec_supported", False)))
