# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Option vocabularies, limits and their validation: the one source of truth.

Ansible modules, the CLI and the JSON Schema of the declarative file all take their choices,
ranges and rules from here, so an error reads the same wherever it is raised.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import math
import re
import time
from dataclasses import dataclass

from .errors import ValidationError

ISSUERS = ("capf", "online_ca", "offline_ca")
ONLINE_CA_TYPES = ("microsoft", "est")
OPERATIONS = ("none", "install_upgrade", "delete", "troubleshoot")
AUTH_MODES = ("auth_string", "null_string", "existing_cert_lsc", "existing_cert_mic")
KEY_ORDERS = ("rsa", "ec", "ec_preferred")
# The key types a phone's session asks for, by key order, first choice first.
KEY_ORDER_KINDS = {"rsa": ("rsa",), "ec": ("ec",), "ec_preferred": ("ec", "rsa")}
SECURITY_MODES = ("non_secure", "authenticated", "encrypted")
TRUST_STORES = ("capf-trust", "callmanager-trust")
RSA_KEY_SIZES = (1024, 2048, 3072, 4096)
EC_KEY_SIZES = (256, 384, 521)
CAPF_KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "ec256", "ec384")

# Lifecycle vocabularies kept by the store.
OPERATION_STATUSES = ("none", "pending", "in_progress", "succeeded", "failed", "lapsed")
CERTIFICATE_STATUSES = ("issued", "installed", "stale", "revoked", "expired")
CERTIFICATE_KINDS = ("lsc", "mic")
# A certificate read back from a phone (troubleshoot) is kept as a copy of its own kind and status:
# never the phone's current LSC (every LSC query names kind "lsc"), never installed, revoked or stale.
RETRIEVED_KINDS = {"lsc": "retrieved_lsc", "mic": "retrieved_mic"}
RETRIEVED_STATUS = "retrieved"
# The diff of a bulk job: every phone (full), or counts per changed setting and the first phones
# (summary); auto is the summary when more than DIFF_SUMMARY_THRESHOLD phones change.
DIFF_FORMATS = ("auto", "summary", "full")
DIFF_SUMMARY_THRESHOLD = 100
DIFF_SUMMARY_PHONES = 20
REPORT_FORMATS = ("csv", "html")  # the CAPF report: one CSV line per phone, or a self-contained HTML page
JOB_STATUSES = ("scheduled", "running", "succeeded", "failed", "cancelled")

# Why an LSC was revoked: the RFC 5280 CRLReason codes (section 5.3.1) an LSC can have, spelled as
# the member names of cryptography's ``x509.ReasonFlags`` (keyCompromise is ``key_compromise``). CA and
# attribute-authority compromise do not apply to an end-entity certificate, certificateHold is not
# supported (a revocation is final) and removeFromCRL belongs to delta CRLs.
REVOCATION_REASONS = ("unspecified", "key_compromise", "affiliation_changed", "superseded",
                      "cessation_of_operation", "privilege_withdrawn")
REVOKED_SUPERSEDED = "superseded"  # a newer LSC of the same phone was installed over it
REVOKED_DELETED = "cessation_of_operation"  # a delete operation removed it from the phone
# Past its notAfter, with revoke_after_expiry on: the certificate is no longer needed for the purpose
# it was issued for (RFC 5280 cessationOfOperation); nothing superseded it, and its key is not known
# to be compromised.
REVOKED_EXPIRED = "cessation_of_operation"
CRL_VALIDITY_HOURS = (1, 8760)  # thisUpdate to nextUpdate of the CAPF CRL

# Why a certificate that a third-party CA returned is refused before it is recorded or delivered
# (the rules: issuers/acceptance.py and docs/third-party-ca.md), and the further reason an offline
# import reports for a file.
CERTIFICATE_REFUSALS = ("wrong_key", "wrong_subject", "wrong_subject_alt_name", "is_ca", "missing_key_usage",
                        "not_yet_valid", "expired", "untrusted_chain", "unreadable")
IMPORT_DUPLICATE = "duplicate"
IMPORT_PROBLEMS = CERTIFICATE_REFUSALS + (IMPORT_DUPLICATE,)

# The four manufacturing roots that older phone series should no longer trust.
LEGACY_MIC_ROOTS = ("CAP-RTP-001", "CAP-RTP-002", "Cisco_Manufacturing_CA", "Cisco_Root_CA_2048")

VALIDITY_DAYS = (1, 1825)
KEEPALIVE_MINUTES = (5, 60)
AUTH_STRING_DIGITS = (4, 10)
PORT = (1, 65535)
KEYGEN_TIMEOUT_MINUTES = (1, 60)
KEYGEN_ATTEMPTS = (1, 10)
LOCKOUT_FAILURES = (1, 100)
MAX_SESSIONS = (1, 100000)
MAX_SESSIONS_PER_ADDRESS = (1, 100000)
SERVICE_PROCESSES = (0, 64)  # worker processes of the CAPF service (0: one per usable core, up to the cap below)
# ``processes`` 0 (its default) starts one worker per usable core but no more than this: each worker holds its
# own memory and store connection, and the store's writes, taken one at a time, bound what more workers add.
# An explicit value may go higher (up to four per core, see ``cli.serve``).
AUTOMATIC_PROCESSES_CAP = 8
EVENT_LOOPS = ("auto", "asyncio", "uvloop")  # the CAPF service's event loop (auto: uvloop when installed)
SCHEDULER_INTERVAL_SECONDS = (1, 3600)  # how often the CAPF service runs due jobs and lapses deadlines
RENEW_BEFORE_DAYS = (0, 365)  # automatic renewal: days before an LSC expires (0: off)
RENEW_MAX_PER_DAY = (1, 100000)  # automatic renewal: phones scheduled in any 24 hours at most
SESSION_RETENTION_DAYS = (0, 3650)  # session records kept this many days (0: kept for ever)
DEVICE_NAME_MAX = 64
# Device templates (``templates``): their names, the relative deadline they give the operation of each
# device they are applied to, and how an application treats devices that exist already.
TEMPLATE_NAME_MAX = 64
TEMPLATE_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,%d}" % (TEMPLATE_NAME_MAX - 1)
TEMPLATE_NAME_RULE = ("must be 1\u2013%d letters, digits, spaces, '.', '_' or '-', starting with a letter or digit"
                      % TEMPLATE_NAME_MAX)
# A placeholder of a template's description pattern, and the name of a variable that fills one.
PLACEHOLDER_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
DEADLINE_DAYS = (1, 3650)
TEMPLATE_EXISTING = ("keep", "reapply")

# The certificate monitor: warn thresholds in days before expiry, how often it checks, and its e-mail.
MONITOR_WARN_DAYS = (1, 3650)
MONITOR_WARN_THRESHOLDS = 10  # thresholds at most
MONITOR_INTERVAL_HOURS = (1, 720)
MONITOR_RECIPIENTS = 50  # recipients at most
MONITOR_RESEND = ("once_per_threshold", "every_check")
SMTP_SECURITY = ("starttls", "tls", "none")
SMTP_TEXT_MAX = 254  # host names, user names and addresses

# The longest a writer of an SQLite store waits for the store's write lock while another writer holds it
# (a long ``opencapf apply``) before it fails with ``StoreBusy``, nothing written (``SqliteBackend.writer_lock_wait``):
# the CLI, the modules, the scheduler, and the CAPF service's store threads when no sooner bound was given them
# (the enrolment service's pass). On PostgreSQL these wait until the lock is free. Sooner bounds, on either
# backend: a write of the service's event loop waits ``store.backend.LOOP_WRITER_LOCK_WAIT_SECONDS`` at most; a
# phone session's step waits for the lock its step timeout (``serve --step-timeout``) at most, on the event loop
# before it runs, in a store thread (an online CA's step) as the bound its writes were given there
# (``store.backend.writer_lock_wait_until``, read by ``writer_lock_wait_left``); then the session ends failed,
# with nothing of the step written.
WRITER_LOCK_WAIT_SECONDS = 600

# Run-time settings of the CAPF service (``serve`` options) and of the phone simulator.
LISTEN_PORT = (0, PORT[1])  # serve --port: 0 picks a free port
STORE_THREADS = (1, 64)
MAX_HANDSHAKES = (1, 100000)  # TLS handshakes in progress at once
MAX_CONNECTIONS = (1, 100000)  # connections not yet in a session, at once
STEP_TIMEOUT_SECONDS = (0.5, 3600)
HANDSHAKE_TIMEOUT_SECONDS = (0.5, 300)
# The longest a phone session may last, from its first message to its end, however the phone paces
# its keep-alives: an operation left in progress longer than that has no live session (its service
# died) and the scheduler settles it. The default covers the default key generation time (30 min)
# and keep-alive (15 min) with room to spare.
MAX_SESSION_SECONDS = (1, 86400)
DEFAULT_MAX_SESSION_SECONDS = 3600
# How long after a session's time bound its operation may still be written: a step under way when the
# bound passes finishes first (an online CA call: a few seconds). A session records its bound plus this
# margin as its phone's ``operation_live_until``.
LIVENESS_MARGIN_SECONDS = 15
QUEUE_TIMEOUT_SECONDS = (0, 3600)  # 0: a connection that finds no free slot is closed at once
ENROLMENT_INTERVAL_SECONDS = (0, 86400)  # 0 turns the enrolment service off
READ_TIMEOUT_SECONDS = (0.5, 3600)  # a phone's wait for each answer
RETRIES = (0, 100)
RETRY_INTERVAL_SECONDS = (0, 86400)
PHONES = (1, 100000)  # phones in one simulated fleet, or at once
JOB_LIST_LIMIT = (1, 100000)
SESSIONS_SHOWN = (1, 1000)  # a phone's newest sessions shown by ``phones show``
ROW_ID = (1, 2 ** 63 - 1)  # an id the store assigned (SQLite rowid)
# LDAP directory sync (``directory``): how entries map to device names, what happens to devices whose
# entry left the directory, the search scopes, and the bounds of a directory configuration.
DIRECTORY_MAPPINGS = ("users", "attribute", "template")
DIRECTORY_ABSENT_DEVICES = ("keep", "report", "remove")
DIRECTORY_SEARCH_SCOPES = ("subtree", "one_level", "base")
DIRECTORY_PAGE_SIZE = (1, 10000)
DIRECTORY_TIMEOUT_SECONDS = (1, 300)
DIRECTORY_SYNC_INTERVAL_MINUTES = (1, 10080)  # at most a week between scheduled syncs
DIRECTORY_MAX_URLS = 10


@dataclass(frozen=True)
class Limit:
    """An inclusive range; ``whole``: integers only, else any finite decimal number."""

    bounds: tuple
    unit: str = ""
    whole: bool = True


# Every numeric option of the command line, by name: the CLI derives its checks from this table
# (``cli.options``), and an option that overrides a service parameter uses that parameter's bounds.
LIMITS = {
    "port": Limit(PORT),
    "listen_port": Limit(LISTEN_PORT),
    "processes": Limit(SERVICE_PROCESSES),
    "validity_days": Limit(VALIDITY_DAYS, " days"),
    "store_threads": Limit(STORE_THREADS),
    "max_handshakes": Limit(MAX_HANDSHAKES),
    "max_connections": Limit(MAX_CONNECTIONS),
    "step_timeout": Limit(STEP_TIMEOUT_SECONDS, " seconds", whole=False),
    "handshake_timeout": Limit(HANDSHAKE_TIMEOUT_SECONDS, " seconds", whole=False),
    "max_session_seconds": Limit(MAX_SESSION_SECONDS, " seconds"),
    "queue_timeout": Limit(QUEUE_TIMEOUT_SECONDS, " seconds", whole=False),
    "enrolment_interval": Limit(ENROLMENT_INTERVAL_SECONDS, " seconds", whole=False),
    "read_timeout": Limit(READ_TIMEOUT_SECONDS, " seconds", whole=False),
    "retries": Limit(RETRIES),
    "retry_interval": Limit(RETRY_INTERVAL_SECONDS, " seconds", whole=False),
    "phones": Limit(PHONES),
    "job_list_limit": Limit(JOB_LIST_LIMIT),
    "sessions_shown": Limit(SESSIONS_SHOWN),
    "row_id": Limit(ROW_ID),
}

RESERVED_CN_PREFIX = "CAPF-"

# Input limits (docs/reliability.md, "Authentication, inputs and secrets"). Anything larger is
# refused with an error naming the field or file and the limit, before the store is touched.
MAX_INPUT_BYTES = 1024 * 1024  # a certificate, key or public key file (or content option)
MAX_CERTIFICATES = 50  # certificates in one PEM text (a chain or bundle)
MAX_CSV_BYTES = 32 * 1024 * 1024  # a CSV of phones: 100,000 phones fit
MAX_CSV_ROWS = 100000
MAX_CSV_CELL = 1024  # characters in one CSV cell
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024  # a declarative file: 100,000 phones fit, as in a CSV
MAX_DOCUMENT_NODES = 5000000  # YAML nodes of a declarative file, every alias expanded (100,000 phones fit)
MAX_DOCUMENT_DEPTH = 64  # nesting of mappings and lists in a declarative file

_AUTH_STRING = re.compile(r"[0-9]{%d,%d}" % AUTH_STRING_DIGITS)
_HARDWARE_NAME = re.compile(r"(SEP|ATA|AN|BAT)[0-9A-F]{12}")
_SOFTPHONE_NAME = re.compile(r"(CSF|BOT|TCT|TAB|CTI|UPC|EC)[A-Z0-9_.-]{1,46}")
_TEMPLATE_NAME = re.compile(TEMPLATE_NAME_PATTERN)
_WIRE_NAME = re.compile(r"[\x21-\x7e]{1,%d}" % DEVICE_NAME_MAX)


def check_choice(field: str, value, choices) -> str:
    """Return ``value`` when it is one of ``choices``."""
    if value not in choices:
        raise ValidationError(field, "must be one of %s" % ", ".join(str(c) for c in choices), value)
    return value


def check_int_range(field: str, value, bounds: tuple[int, int], unit: str = "") -> int:
    """Return ``value`` as an int inside the inclusive ``bounds``."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError(field, f"must be a whole number from {low} to {high}{unit}", value)
    try:
        number = int(value)
    except ValueError:
        raise ValidationError(field, f"must be a whole number from {low} to {high}{unit}", value) from None
    if not low <= number <= high:
        raise ValidationError(field, f"must be {low}\u2013{high}{unit}", number)
    return number


def check_number_range(field: str, value, bounds: tuple, unit: str = "") -> float:
    """Return ``value`` as a finite float inside the inclusive ``bounds``."""
    low, high = bounds
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number):
        raise ValidationError(field, f"must be a number from {low} to {high}{unit}", value)
    if not low <= number <= high:
        raise ValidationError(field, f"must be {low}\u2013{high}{unit}", value)
    return number


def check_limit(name: str, value, field: str | None = None):
    """Validate ``value`` against the range ``LIMITS[name]``; return it as an int or a float."""
    limit = LIMITS[name]
    if limit.whole:
        return check_int_range(field or name, value, limit.bounds, limit.unit)
    return check_number_range(field or name, value, limit.bounds, limit.unit)


def check_address(value, field: str = "address") -> str:
    """An IPv4 or IPv6 address (an IPv6 one may carry a %zone), in its canonical form."""
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ValidationError(field, "must be an IPv4 or IPv6 address", value) from None


def check_host_port(value, field: str = "address") -> str:
    """``HOST:PORT`` with an IP address (IPv6 in brackets) and a port 1-65535, canonical; "" (off) stays ""."""
    if value in (None, ""):
        return ""
    text = str(value).strip()
    host, _colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address without brackets: its port cannot be told apart
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = 0
        address = None
    if address is None or not PORT[0] <= number <= PORT[1]:
        raise ValidationError(field, "must be IP-ADDRESS:PORT (an IPv6 address in brackets, e.g. [::1]:9810; "
                              "port 1-65535), or empty for none", value)
    return f"[{address}]:{number}" if address.version == 6 else f"{address}:{number}"


def split_host_port(value: str) -> tuple[str, int]:
    """The address and port of a canonical ``HOST:PORT`` (see ``check_host_port``)."""
    host, _colon, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def check_bool(field: str, value) -> bool:
    """Accept a real boolean or the usual yes/no spellings."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValidationError(field, "must be a boolean (true or false)", value)


def check_validity_days(value, field: str = "validity_days") -> int:
    return check_int_range(field, value, VALIDITY_DAYS, " days")


def check_keepalive_minutes(value, field: str = "keepalive_minutes") -> int:
    return check_int_range(field, value, KEEPALIVE_MINUTES, " minutes")


def check_port(value, field: str = "port") -> int:
    return check_int_range(field, value, PORT)


def check_auth_string(value, field: str = "authentication_string") -> str:
    """An authentication string is 4\u201310 digits. The value itself is never echoed."""
    if not isinstance(value, str) or not _AUTH_STRING.fullmatch(value):
        raise ValidationError(field, "must be %d\u2013%d digits" % AUTH_STRING_DIGITS, show_value=False)
    return value


def key_allowed(settings: dict, kind: str, size: int) -> bool:
    """Whether a phone with ``settings`` (its ``key_order``, ``rsa_key_size`` and ``ec_key_size``)
    asks for a ``kind`` key (``rsa`` or ``ec``) of ``size`` bits."""
    return kind in KEY_ORDER_KINDS[settings["key_order"]] and int(settings[f"{kind}_key_size"]) == size


def check_rsa_key_size(value, field: str = "rsa_key_size") -> int:
    number = check_int_range(field, value, (min(RSA_KEY_SIZES), max(RSA_KEY_SIZES)), " bits")
    return check_choice(field, number, RSA_KEY_SIZES)


def check_ec_key_size(value, field: str = "ec_key_size") -> int:
    number = check_int_range(field, value, (min(EC_KEY_SIZES), max(EC_KEY_SIZES)), " bits")
    return check_choice(field, number, EC_KEY_SIZES)


def normalise_device_name(value, field: str = "name") -> str:
    """Validate an administrator-entered device name and return its canonical (upper-case) form.

    Hardware phones are ``SEP`` (or ATA/AN/BAT) plus 12 hex digits; softphones and other
    clients use the CSF/BOT/TCT/TAB/CTI/UPC/EC prefixes followed by 1\u201346 characters.
    """
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string", value)
    upper = value.strip().upper()
    if _HARDWARE_NAME.fullmatch(upper) or _SOFTPHONE_NAME.fullmatch(upper):
        return upper
    raise ValidationError(
        field,
        "must be SEP (or ATA/AN/BAT) followed by 12 hex digits, or a CSF/BOT/TCT/TAB/CTI/UPC/EC "
        "prefix followed by 1\u201346 letters, digits, '.', '_' or '-'",
        value,
    )


def check_template_name(value, field: str = "name") -> str:
    """A device template's name: 1\u201364 letters, digits, spaces, '.', '_' or '-', starting with a letter or
    digit (surrounding spaces are dropped). Names are case-sensitive."""
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not _TEMPLATE_NAME.fullmatch(text):
        raise ValidationError(field, TEMPLATE_NAME_RULE, value)
    return text


def check_wire_device_name(raw: bytes) -> str:
    """Validate a device name as received from a phone: printable ASCII, bounded length."""
    if raw.endswith(b"\x00"):
        raw = raw[:-1]
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValidationError("DEVICE_NAME", "must be printable ASCII", show_value=False) from None
    if not _WIRE_NAME.fullmatch(text):
        raise ValidationError("DEVICE_NAME", "must be 1\u2013%d printable characters" % DEVICE_NAME_MAX,
                              show_value=False)
    return text


def check_crl_path(value, field: str = "crl_path") -> str:
    """An absolute file path for the published CRL, or empty (no file)."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be an absolute file path or empty", value)
    if value and (not value.startswith("/") or value.endswith("/") or "\0" in value):
        raise ValidationError(field, "must be an absolute file path (or empty: no CRL file)", value)
    return value


_CRL_URL = re.compile(r"^http://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~!$&'()*+,;=:@%/\-]*)?$")


def check_crl_url(value, field: str = "crl_url") -> str:
    """The URL LSCs name as their CRL distribution point, or empty (none). Plain ``http://``, as RFC
    5280 section 4.2.1.13 expects of a CRL (it is signed; fetching it over TLS would need the very
    revocation check it serves)."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be an http:// URL or empty", value)
    if value and (len(value) > 2000 or not _CRL_URL.match(value)):
        raise ValidationError(field, "must be an http:// URL of ASCII characters, such as "
                              "http://capf.example.com:8080/capf.crl (or empty: no distribution point)", value)
    return value


def check_listen_addresses(value, field: str = "listen_addresses") -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValidationError(field, "must be a non-empty list of IP addresses", value)
    return [check_address(item, f"{field}[{index}]") for index, item in enumerate(value)]


TIME_RULE = "must be an ISO 8601 date or time such as 2026-12-31T23:00:00Z"
# The value of ``operation_completes_by`` that clears a phone's deadline: the word that says "no
# operation" (``certificate_operation: none``) says "no deadline", so the phone's settings have one such word.
NO_DEADLINE = OPERATIONS[0]
DEADLINE_RULE = f"{TIME_RULE}, or {NO_DEADLINE} to clear the deadline"
# A template holds what devices get; a device gets no deadline from a template that leaves it out.
TEMPLATE_DEADLINE_RULE = (f"{TIME_RULE}; a template cannot say {NO_DEADLINE} (it gives devices settings: leave the "
                          "option out for no deadline, and clear a phone's deadline with capf_phone or capf_bulk_update)")


def parse_utc(value, field: str) -> _dt.datetime | None:
    """Parse an ISO 8601 date or timestamp to an aware UTC datetime (``None`` stays ``None``)."""
    moment = _parse_aware(value, field)
    return None if moment is None else moment.replace(microsecond=0)


def parse_utc_exact(value, field: str) -> _dt.datetime | None:
    """Parse like ``parse_utc`` a time that is kept as declared (a job's ``run_at``, an operation's
    ``operation_completes_by``): the store keeps whole seconds, so a fraction of a second is refused,
    never dropped (a deadline cut to the second would end the operation up to a second early)."""
    moment = _parse_aware(value, field)
    if moment is not None and moment.microsecond:
        raise ValidationError(field, "must be a whole second (times are kept to the second), such as "
                              "2026-12-31T23:00:00Z", value if isinstance(value, str) else str(value))
    return moment


def parse_utc_before(value, field: str) -> _dt.datetime | None:
    """Parse like ``parse_utc`` the bound of "before ``value``" over times kept to the second (an LSC's
    notAfter): a fraction of a second rounds up, not down, since a whole second is before 12:00:00.5
    exactly when it is before 12:00:01."""
    moment = _parse_aware(value, field)
    if moment is None or not moment.microsecond:
        return moment
    return moment.replace(microsecond=0) + _dt.timedelta(seconds=1)


def _parse_aware(value, field: str) -> _dt.datetime | None:
    """``value`` as an aware UTC datetime, to the microsecond it gives."""
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        moment = value
    elif isinstance(value, _dt.date):
        moment = _dt.datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:
            moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(field, TIME_RULE, value) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc)


# The text of each moment formatted lately: a session formats a few moments (this second, the end of
# an LSC's validity, of the session's liveness, ...) in turn, and every session of the same second the same ones.
_formatted: dict = {}
_FORMATTED_KEPT = 256  # moments at most before the memory of them starts again


def format_utc(moment: _dt.datetime | None) -> str | None:
    """The canonical text form of a UTC time in the store and in results."""
    if moment is None:
        return None
    if moment.tzinfo is not _dt.timezone.utc:
        moment = moment.astimezone(_dt.timezone.utc)
    text = _formatted.get(moment)
    if text is None:
        if len(_formatted) >= _FORMATTED_KEPT:
            _formatted.clear()
        text = _formatted[moment] = "%04d-%02d-%02dT%02d:%02d:%02dZ" % (
            moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    return text


# How far another clock may run ahead of ours: a certificate valid from a few minutes from now is
# accepted (a third-party CA's answer, an uploaded CAPF certificate).
CLOCK_SKEW = _dt.timedelta(minutes=5)


_last_now: tuple = (None, None)  # (whole seconds since the epoch, that second as a datetime)


def utc_now() -> _dt.datetime:
    """This second, UTC (a datetime is immutable: the same second gives the same object)."""
    global _last_now  # pylint: disable=global-statement
    seconds = int(time.time())
    last = _last_now
    if last[0] == seconds:
        return last[1]
    moment = _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc)
    _last_now = (seconds, moment)
    return moment


_MAIL_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                           r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_MAIL_HOST = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def check_warn_days(value, field: str = "monitor_warn_days") -> list[int]:
    """Warn thresholds: distinct whole numbers of days, largest first."""
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MONITOR_WARN_THRESHOLDS:
        raise ValidationError(field, f"must be a list of 1\u2013{MONITOR_WARN_THRESHOLDS} numbers of days", value)
    days = [check_int_range(f"{field}[{index}]", item, MONITOR_WARN_DAYS, " days") for index, item in enumerate(value)]
    if len(set(days)) != len(days):
        raise ValidationError(field, "must not name a number of days twice", value)
    return sorted(days, reverse=True)


def check_mail_address(value, field: str) -> str:
    """One e-mail address (local@domain), without a display name."""
    if not isinstance(value, str) or len(value.strip()) > SMTP_TEXT_MAX or not _MAIL_ADDRESS.fullmatch(value.strip()):
        raise ValidationError(field, "must be an e-mail address such as capf@example.com", value)
    return value.strip()


def check_mail_address_or_empty(value, field: str) -> str:
    """An e-mail address, or '' for none."""
    return "" if value in (None, "") else check_mail_address(value, field)


def check_recipients(value, field: str = "monitor_recipients") -> list[str]:
    """E-mail recipients, each once, in the order given (an empty list sends no mail)."""
    if isinstance(value, str):
        value = [value] if value else []
    if not isinstance(value, (list, tuple)) or len(value) > MONITOR_RECIPIENTS:
        raise ValidationError(field, f"must be a list of at most {MONITOR_RECIPIENTS} e-mail addresses", value)
    addresses = [check_mail_address(item, f"{field}[{index}]") for index, item in enumerate(value)]
    if len({address.lower() for address in addresses}) != len(addresses):
        raise ValidationError(field, "must not name an address twice", value)
    return addresses


def check_mail_host(value, field: str) -> str:
    """The SMTP relay: a host name or an IP address, or '' for none."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        text = value.strip()
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            if _MAIL_HOST.fullmatch(text):
                return text.lower().rstrip(".")
    raise ValidationError(field, "must be a host name or an IP address of the SMTP relay", value)


def check_short_text(value, field: str) -> str:
    """A short single-line text such as a user name, or '' for none."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > SMTP_TEXT_MAX or any(ord(c) < 32 for c in value):
        raise ValidationError(field, f"must be a single line of at most {SMTP_TEXT_MAX} characters", value)
    return value.strip()


def check_absolute_path_or_empty(value, field: str) -> str:
    """An absolute file path, or '' for none."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 4096 or "\x00" in value:
        raise ValidationError(field, "must be an absolute file path", value)
    return value
