# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Service parameters: names, defaults and validation, defined once.

The store keeps one row per parameter; a parameter that was never set reads as its default.
Online CA settings are a nested mapping kept under ``online_ca``; its password is a secret and is
kept encrypted (see ``secrets``), never in this mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import vocabulary as v
from .errors import ValidationError


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    check: Callable[[Any, str], Any]
    kind: str  # JSON-Schema type of the value
    description: str
    choices: tuple | None = None
    bounds: tuple[int, int] | None = None
    restart: bool = False  # applies only when the service starts: a change needs a restart, not a reload
    items: str = "string"  # JSON-Schema type of the elements of an array value


def _choice(choices):
    return lambda value, field: v.check_choice(field, value, choices)


def _range(bounds, unit=""):
    return lambda value, field: v.check_int_range(field, value, bounds, unit)


def _bool(value, field):
    return v.check_bool(field, value)


PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter("issuer", "capf", _choice(v.ISSUERS), "string",
                  "Certificate Issuer to Endpoint: CAPF signs, or an online or offline third-party CA.",
                  choices=v.ISSUERS),
        Parameter("validity_days", 1825, v.check_validity_days, "integer",
                  "Duration of LSC validity in days, never past the signing CAPF certificate's notAfter (online CA: "
                  "what the CA grants).",
                  bounds=v.VALIDITY_DAYS),
        Parameter("keepalive_minutes", 15, v.check_keepalive_minutes, "integer",
                  "Keep-alive timer for CAPF to endpoint connections.", bounds=v.KEEPALIVE_MINUTES),
        Parameter("enable_ipv6", False, _bool, "boolean",
                  "Listen on and accept phones over IPv6 (refusing IPv6 peers applies to the next connection; "
                  "listening on IPv6 addresses when the service starts or restarts).", restart=True),
        Parameter("key_order", "rsa", _choice(v.KEY_ORDERS), "string",
                  "Default key order for new phones.", choices=v.KEY_ORDERS),
        Parameter("rsa_key_size", 2048, v.check_rsa_key_size, "integer",
                  "Default RSA key size for new phones.", choices=v.RSA_KEY_SIZES),
        Parameter("ec_key_size", 256, v.check_ec_key_size, "integer",
                  "Default EC key size for new phones.", choices=v.EC_KEY_SIZES),
        Parameter("keygen_timeout_minutes", 30, _range(v.KEYGEN_TIMEOUT_MINUTES, " minutes"), "integer",
                  "Maximum time a phone may take to generate its key.",
                  bounds=v.KEYGEN_TIMEOUT_MINUTES),
        Parameter("keygen_attempts", 3, _range(v.KEYGEN_ATTEMPTS), "integer",
                  "Maximum key-generation attempts before the operation fails.",
                  bounds=v.KEYGEN_ATTEMPTS),
        Parameter("lockout_failures", 5, _range(v.LOCKOUT_FAILURES), "integer",
                  "Wrong authentication strings accepted before a phone is locked out.",
                  bounds=v.LOCKOUT_FAILURES),
        Parameter("listen_addresses", ["0.0.0.0"], v.check_listen_addresses, "array",
                  "Addresses the CAPF service listens on; applies when the service starts or restarts.", restart=True),
        Parameter("port", 3804, v.check_port, "integer",
                  "TCP port of the CAPF service; applies when the service starts or restarts.", bounds=v.PORT,
                  restart=True),
        Parameter("max_sessions", 1000, _range(v.MAX_SESSIONS), "integer",
                  "Concurrent phone sessions each worker process serves at once; further connections wait.",
                  bounds=v.MAX_SESSIONS),
        Parameter("max_sessions_per_address", 100, _range(v.MAX_SESSIONS_PER_ADDRESS), "integer",
                  "Connections one IP address may hold open at once (handshaking, waiting or in a session); "
                  "further connections from it are refused.", bounds=v.MAX_SESSIONS_PER_ADDRESS),
        Parameter("processes", 0, _range(v.SERVICE_PROCESSES), "integer",
                  "Worker processes of the CAPF service sharing its port; 0: one per CPU core the service may use, "
                  f"at most {v.AUTOMATIC_PROCESSES_CAP}; applies when the service starts or restarts.",
                  bounds=v.SERVICE_PROCESSES, restart=True),
        Parameter("event_loop", "auto", _choice(v.EVENT_LOOPS), "string",
                  "Event loop of the CAPF service: uvloop (an event loop in C) when installed (auto), the standard asyncio "
                  "loop, or uvloop; applies when the service starts or restarts.", choices=v.EVENT_LOOPS, restart=True),
        Parameter("scheduler_interval_seconds", 10, _range(v.SCHEDULER_INTERVAL_SECONDS, " seconds"), "integer",
                  "How often the CAPF service runs due scheduled jobs and lapses operations whose deadline passed.",
                  bounds=v.SCHEDULER_INTERVAL_SECONDS),
        # Unattended lifecycle: the metrics endpoint and automatic renewal (docs/lifecycle.md).
        Parameter("metrics_address", "", v.check_host_port, "string",
                  "IP-ADDRESS:PORT of the Prometheus metrics endpoint (plain HTTP), empty for none; applies when the "
                  "service starts or restarts.", restart=True),
        Parameter("renew_before_days", 0, _range(v.RENEW_BEFORE_DAYS, " days"), "integer",
                  "Automatic renewal: schedule install_upgrade for phones whose installed LSC expires within this "
                  "many days (0: off), unless a new LSC would end no later (it ends with the CAPF certificate).",
                  bounds=v.RENEW_BEFORE_DAYS),
        Parameter("renew_max_per_day", 100, _range(v.RENEW_MAX_PER_DAY), "integer",
                  "Automatic renewal: phones scheduled in any 24 hours at most.", bounds=v.RENEW_MAX_PER_DAY),
        # Session records: every connection writes one (refused and failed ones too), kept this long.
        Parameter("session_retention_days", 400, _range(v.SESSION_RETENTION_DAYS, " days"), "integer",
                  "Days a session record (its sessions row and its session.* audit event) is kept; the service "
                  "removes older ones (0: kept for ever). Other audit events are always kept.",
                  bounds=v.SESSION_RETENTION_DAYS),
        # Revocation and the CRL (docs/lifecycle.md).
        Parameter("revoke_after_expiry", True, _bool, "boolean",
                  "Revoke an LSC once it has expired (reason cessation_of_operation), as Cisco's certificate monitor does."),
        Parameter("crl_validity_hours", 168, _range(v.CRL_VALIDITY_HOURS, " hours"), "integer",
                  "Hours from a CRL's thisUpdate to its nextUpdate; the service signs a new CRL when something is "
                  "revoked and once half of this has passed.", bounds=v.CRL_VALIDITY_HOURS),
        Parameter("crl_path", "", v.check_crl_path, "string",
                  "Absolute path of a file the service keeps the active CAPF certificate's current CRL in (DER, mode "
                  "0644), with each CAPF certificate's own beside it (capf-ID.crl); empty: no files."),
        Parameter("crl_url", "", v.check_crl_url, "string",
                  "http:// URL from which LSCs issued from now on name their CRL distribution point: the CRL of "
                  "their CAPF certificate, with -ID inserted before .crl; empty: none."),
        Parameter("crl_http_address", "0.0.0.0", v.check_address, "string",
                  "Address the service answers GET /capf.crl on (with crl_http_port); applies when the service "
                  "starts or restarts.", restart=True),
        Parameter("crl_http_port", 0, _range(v.LISTEN_PORT), "integer",
                  "TCP port of the plain HTTP CRL responder, 0 for none; applies when the service starts or restarts.",
                  bounds=v.LISTEN_PORT, restart=True),
        Parameter("legacy_tls", False, _bool, "boolean",
                  "Allow TLS 1.0 and legacy ciphers for old phone firmware."),
        Parameter("fips_mode", False, _bool, "boolean",
                  "FIPS mode: refuses the Microsoft online CA type."),
        # The certificate monitor (monitor.py) and its e-mail; the SMTP password is a sealed secret.
        Parameter("monitor_warn_days", [30, 7, 1], v.check_warn_days, "array",
                  "Days before expiry at which the certificate monitor warns (each threshold once per certificate).",
                  bounds=v.MONITOR_WARN_DAYS, items="integer"),
        Parameter("monitor_interval_hours", 24, _range(v.MONITOR_INTERVAL_HOURS, " hours"), "integer",
                  "How often the certificate monitor checks the certificates.", bounds=v.MONITOR_INTERVAL_HOURS),
        Parameter("monitor_recipients", [], v.check_recipients, "array",
                  "E-mail addresses the certificate monitor writes to (none: it only logs what it finds)."),
        Parameter("monitor_resend", "once_per_threshold", _choice(v.MONITOR_RESEND), "string",
                  "Warn once per certificate and threshold, or on every check that finds it.",
                  choices=v.MONITOR_RESEND),
        Parameter("monitor_smtp_host", "", v.check_mail_host, "string",
                  "Host name or address of the SMTP relay the monitor sends through."),
        Parameter("monitor_smtp_port", 587, v.check_port, "integer",
                  "TCP port of the SMTP relay (587 with starttls, 465 with tls, 25 with none).", bounds=v.PORT),
        Parameter("monitor_smtp_security", "starttls", _choice(v.SMTP_SECURITY), "string",
                  "How the connection to the SMTP relay is protected: STARTTLS, implicit TLS, or not at all.",
                  choices=v.SMTP_SECURITY),
        Parameter("monitor_smtp_ca_file", "", v.check_absolute_path_or_empty, "string",
                  "PEM file of the CA certificates that verify the SMTP relay (none: the system's trusted roots)."),
        Parameter("monitor_smtp_username", "", v.check_short_text, "string",
                  "User name of the SMTP login (none: no login); its password is monitor_smtp_password."),
        Parameter("monitor_sender", "", v.check_mail_address_or_empty, "string",
                  "The From address of the monitor's e-mail."),
    )
}


# Parameters read only when the service starts (listening sockets, worker processes): changing one
# needs a restart; every other parameter applies to the next connection, or at once after SIGHUP.
RESTART_PARAMETERS = tuple(name for name, p in PARAMETERS.items() if p.restart)


def defaults() -> dict[str, Any]:
    """Every parameter at its default value."""
    return {name: (list(p.default) if isinstance(p.default, list) else p.default)
            for name, p in PARAMETERS.items()}


def check(name: str, value: Any, field: str | None = None) -> Any:
    """Validate one parameter value and return its canonical form."""
    if name not in PARAMETERS:
        raise ValidationError(field or name, "is not a service parameter; known: %s" % ", ".join(PARAMETERS))
    return PARAMETERS[name].check(value, field or name)


def check_all(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Validate a mapping of parameters, returning canonical values."""
    return {name: check(name, value, prefix + name) for name, value in values.items()}


def default_text(name: str) -> str:
    """A parameter's default as documentation states it: ``15``, ``true``, ``rsa``, ``0.0.0.0`` (a
    list's items separated by commas), ``""`` for an empty string."""
    value = PARAMETERS[name].default
    if value == "":
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def rule_text(name: str) -> str:
    """A parameter's accepted values in words: its choices or its range (empty when neither)."""
    parameter = PARAMETERS[name]
    if parameter.choices is not None:
        return "one of " + ", ".join(map(str, parameter.choices))
    if parameter.bounds is not None:
        return "%s\u2013%s" % parameter.bounds
    return ""


def table(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every parameter with its value (from ``values``, else its default), default, accepted values,
    whether a change needs a restart, and its description: what ``service show`` prints."""
    return [{"name": name, "value": values.get(name, p.default), "default": p.default,
             "is_default": values.get(name, p.default) == p.default, "accepts": rule_text(name),
             "restart": p.restart, "description": p.description}
            for name, p in PARAMETERS.items()]
