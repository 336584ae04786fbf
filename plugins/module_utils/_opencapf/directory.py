# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""LDAP directory sync: the devices of a directory's entries, created with a device template.

A directory configuration names the servers (``ldaps://``, or ``ldap://`` with StartTLS; plain
LDAP only with ``allow_plain``), the CA that verifies them, the bind DN (its password is a sealed
secret, kept only when the service syncs on a schedule), the search (base, filter, scope, paged
results) and the mapping of entries to device names:

- ``users``: one Jabber softphone per entry, ``CSF`` + the entry's ``user_attribute`` (``uid``),
  upper-cased (Cisco's naming of Jabber for Windows/Mac devices);
- ``attribute``: every value of the multi-valued ``device_attribute``, each a device name;
- ``template``: ``name_template`` with ``{attribute}`` placeholders, e.g. ``BOT{uid}``.

Each name must be a device name of ``vocabulary.normalise_device_name``; entries that map to no
valid name (or to a name another entry already maps to, or to a device of another directory), and
entries whose device the template cannot take (its description too long, say) are listed in
``skipped`` with their DN, field and reason, never fatal: the other entries are applied. A device is
one directory's at a time.

A sync reads the whole directory before it touches the store: an unreachable server, a refused
certificate or a refused bind is one error naming the option, and nothing changes. The device
template applies to every device of the directory's first sync (created, or re-applied to a device
that already exists), then only to devices new to the store; ``reapply_template`` applies it to
every mapped device again. Devices the directory mapped before whose entry is gone are ``absent``:
reported (``report``), removed from the store (``remove``) or let go silently (``keep``); a device
whose entry is still there but gives no device name any more stays the directory's.

Syncs of one directory may run at once (the service's schedule and an operator, or two hosts of one
store): each takes the directory's next ticket in a write transaction before it reads, and applies
only when no sync of a later ticket has applied. A sync whose reading a later one overtook applies
nothing, records a ``directory.sync_superseded`` event and reports ``superseded``; it is no error.

A bind password given to a sync is the operator's word, and the sync's bind verified it: a superseded
sync still keeps it (``_superseded_password``) unless a sync of a later ticket was given one, or the
stored configuration keeps no password for the same bind DN on the same servers.
"""

from __future__ import annotations

import datetime as _dt
import re
import ssl
import string
from typing import Any

from . import bulk, phone_config, secretbox, templates
from . import vocabulary as v
from .dependencies import ldap3, ldap3_exceptions, require
from .errors import CapfError, FieldError, NotFoundError, ValidationError
from .results import converged, text_or_none
from .store import Store, audit
from .store import directories as directory_records
from .store import phones as phone_records

MAPPINGS = v.DIRECTORY_MAPPINGS
ABSENT_DEVICES = v.DIRECTORY_ABSENT_DEVICES
SEARCH_SCOPES = v.DIRECTORY_SEARCH_SCOPES
SOFTPHONE_PREFIX = "CSF"  # Cisco Jabber for Windows/Mac: CSF + the user id, upper case
DEFAULT_FILTER = "(objectClass=inetOrgPerson)"
PAGE_SIZE = v.DIRECTORY_PAGE_SIZE
TIMEOUT_SECONDS = v.DIRECTORY_TIMEOUT_SECONDS
SYNC_INTERVAL_MINUTES = v.DIRECTORY_SYNC_INTERVAL_MINUTES
MAX_URLS = v.DIRECTORY_MAX_URLS
NAME_MAX = 64
VIA = "ldap"
ACTOR = "directory"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_URL = re.compile(r"(ldaps?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?/?")
_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}")
_VARIABLE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SCOPES = {"subtree": "SUBTREE", "one_level": "LEVEL", "base": "BASE"}
LISTED = 20  # names in a warning line


class DirectoryError(FieldError):
    """The directory could not be reached, refused the certificate check, the bind or the search:
    ``field`` names the option to look at."""

    separator = ": "


def _secret_name(name: str) -> str:
    return f"directory:{name}:bind_password"


def _text(options: dict, field: str, required: bool = False, max_length: int = 1024) -> str | None:
    value = text_or_none(options.get(field), field, max_length)
    if required and not value:
        raise ValidationError(field, "is required")
    return value or None


def _attribute(options: dict, field: str, default: str | None = None) -> str | None:
    value = options.get(field) or default
    if value is not None and not (isinstance(value, str) and _ATTRIBUTE.fullmatch(value)):
        raise ValidationError(field, "must be an LDAP attribute name (a letter, then letters, digits or '-')", value)
    return value


def _template_attributes(template: str) -> list[str]:
    try:
        parsed = [(field, spec, conversion) for _text_part, field, spec, conversion in string.Formatter().parse(template)
                  if field is not None]
    except ValueError as exc:
        raise ValidationError("name_template", f"is not a valid pattern ({exc})", template) from None
    if not parsed:
        raise ValidationError("name_template", "must contain at least one {attribute} placeholder", template)
    fields = [field for field, _spec, _conversion in parsed]
    for field, spec, conversion in parsed:
        if not _ATTRIBUTE.fullmatch(field) or spec or conversion:
            raise ValidationError("name_template", "placeholders must be LDAP attribute names, e.g. CSF{uid}", template)
    return fields


def check_config(options: dict) -> dict[str, Any]:
    """Validate a directory configuration (module options, CLI file keys); return it canonical and secret-free."""
    options = {key: value for key, value in options.items() if value is not None}
    name = options.get("name")
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise ValidationError("name", f"must be 1-{NAME_MAX} letters, digits, '.', '_' or '-' (not first)", name)
    urls = options.get("urls")
    if isinstance(urls, str):
        urls = [urls]
    if not urls or not isinstance(urls, list) or len(urls) > MAX_URLS:
        raise ValidationError("urls", f"must list 1-{MAX_URLS} ldaps:// or ldap:// URLs", urls)
    for index, url in enumerate(urls):
        match = _URL.fullmatch(url) if isinstance(url, str) else None
        if match is None or (match.group(3) and not 1 <= int(match.group(3)) <= 65535):
            raise ValidationError(f"urls[{index}]", "must be ldaps://HOST[:PORT] or ldap://HOST[:PORT]", url)
    start_tls = v.check_bool("start_tls", options.get("start_tls", True))
    allow_plain = v.check_bool("allow_plain", options.get("allow_plain", False))
    if not start_tls and not allow_plain:
        plain = [url for url in urls if url.startswith("ldap://")]
        if plain:
            raise ValidationError("start_tls", "false sends the bind password in clear to %s; use ldaps://, "
                                  "start_tls: true, or allow_plain: true" % plain[0])
    mapping = v.check_choice("mapping", options.get("mapping", "users"), MAPPINGS)
    config = {
        "name": name,
        "urls": list(urls),
        "start_tls": start_tls,
        "allow_plain": allow_plain,
        "ca_file": _text(options, "ca_file"),
        "bind_dn": _text(options, "bind_dn"),
        "search_base": _text(options, "search_base", required=True),
        "search_filter": _text(options, "search_filter") or DEFAULT_FILTER,
        "search_scope": v.check_choice("search_scope", options.get("search_scope", "subtree"), SEARCH_SCOPES),
        "page_size": v.check_int_range("page_size", options.get("page_size", 500), PAGE_SIZE),
        "timeout_seconds": v.check_int_range("timeout_seconds", options.get("timeout_seconds", 10), TIMEOUT_SECONDS,
                                             " seconds"),
        "mapping": mapping,
        "user_attribute": _attribute(options, "user_attribute", "uid") if mapping == "users" else None,
        "device_attribute": _attribute(options, "device_attribute") if mapping == "attribute" else None,
        "name_template": _text(options, "name_template", max_length=200) if mapping == "template" else None,
        "device_template": v.check_template_name(options.get("device_template"), "device_template"),
        "absent_devices": v.check_choice("absent_devices", options.get("absent_devices", "report"), ABSENT_DEVICES),
        "reapply_template": v.check_bool("reapply_template", options.get("reapply_template", False)),
        "strings_file": _text(options, "strings_file"),
        "sync_interval_minutes": (None if options.get("sync_interval_minutes") is None else v.check_int_range(
            "sync_interval_minutes", options["sync_interval_minutes"], SYNC_INTERVAL_MINUTES, " minutes")),
    }
    if not (config["search_filter"].startswith("(") and config["search_filter"].endswith(")")):
        raise ValidationError("search_filter", "must be an LDAP filter in parentheses, e.g. (objectClass=person)",
                              config["search_filter"])
    if mapping == "attribute" and not config["device_attribute"]:
        raise ValidationError("device_attribute", "is required with mapping: attribute")
    if mapping == "template":
        if not config["name_template"]:
            raise ValidationError("name_template", "is required with mapping: template")
        _template_attributes(config["name_template"])
    for field, given in (("device_attribute", mapping != "attribute"), ("name_template", mapping != "template"),
                         ("user_attribute", mapping != "users")):
        if given and options.get(field) is not None:
            raise ValidationError(field, f"does not apply to mapping: {mapping}")
    return config


def fetched_attributes(config: dict) -> list[str]:
    """The attributes a sync asks the directory for."""
    if config["mapping"] == "users":
        wanted = [config["user_attribute"]]
    elif config["mapping"] == "attribute":
        wanted = [config["device_attribute"]]
    else:
        wanted = _template_attributes(config["name_template"])
    return sorted(set(wanted + ["cn", "uid"]), key=str.lower)


# --- reading the directory ---------------------------------------------------------------------

def _cause(exc: Exception) -> str:
    text = str(exc.args[0] if exc.args and isinstance(exc.args[0], str) else exc)
    text = re.sub(r"\s+", " ", text).strip().strip("()'\",")
    return text[:300] or type(exc).__name__


def _is_certificate_problem(text: str) -> bool:
    return any(word in text for word in ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed",
                                         "doesn't match any name", "Missing Authority Key Identifier"))


def _connection_error(config: dict, url: str, exc: Exception) -> DirectoryError:
    cause = _cause(exc)
    if _is_certificate_problem(cause):
        if "doesn't match any name" in cause:
            return DirectoryError("urls", f"the certificate of {url} does not name its host", show_value=False)
        what = config["ca_file"] or "the system's CA certificates"
        return DirectoryError("ca_file", f"{what} does not verify the certificate of {url} ({cause})",
                              show_value=False)
    if isinstance(exc, ldap3_exceptions.LDAPStartTLSError):
        return DirectoryError("start_tls", f"{url} refused StartTLS ({cause})", show_value=False)
    if isinstance(exc, ldap3_exceptions.LDAPSocketReceiveError):
        return DirectoryError("timeout_seconds", f"{url} did not answer within {config['timeout_seconds']} s "
                              f"({cause})", show_value=False)
    return DirectoryError("urls", f"cannot reach {url} ({cause})", show_value=False)


def _close(connection) -> None:
    """Unbind and close; a connection a failure already broke has nothing more to say."""
    try:
        connection.unbind()
    except (ldap3_exceptions.LDAPException, OSError):
        pass


def _tls(config: dict):
    try:
        return ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config["ca_file"])
    except ldap3_exceptions.LDAPSSLConfigurationError as exc:
        raise DirectoryError("ca_file", f"cannot read {config['ca_file']} ({_cause(exc)})", show_value=False) from None


def check_ca_file(config: dict) -> None:
    """The CA file is readable and holds CA certificates (checked before the store or the network)."""
    if config["ca_file"] is not None:
        try:
            ssl.create_default_context(cafile=config["ca_file"])
        except OSError as exc:  # ssl.SSLError is an OSError too: a file without a PEM certificate
            cause = exc.strerror if not isinstance(exc, ssl.SSLError) else f"no CA certificate in it: {exc.reason}"
            raise DirectoryError("ca_file", f"cannot read {config['ca_file']} ({cause})", show_value=False) from None


def _connect(config: dict, password: str | None):
    """A bound connection to the first server that answers; errors name the option to look at."""
    check_ca_file(config)
    tls = _tls(config)
    failures = []
    for url in config["urls"]:
        match = _URL.fullmatch(url)
        secure = match.group(1) == "ldaps"
        host = match.group(2).strip("[]")
        port = int(match.group(3) or (636 if secure else 389))
        server = ldap3.Server(host, port=port, use_ssl=secure, tls=tls, get_info=ldap3.NONE,
                              connect_timeout=config["timeout_seconds"])
        connection = ldap3.Connection(server, user=config["bind_dn"], password=password,
                                      authentication=ldap3.SIMPLE if config["bind_dn"] else ldap3.ANONYMOUS,
                                      receive_timeout=config["timeout_seconds"], raise_exceptions=True,
                                      read_only=True, auto_referrals=False)
        try:
            connection.open(read_server_info=False)
            if not secure and config["start_tls"]:
                connection.start_tls(read_server_info=False)
        except ldap3_exceptions.LDAPException as exc:
            failures.append(_connection_error(config, url, exc))
            _close(connection)
            continue
        try:
            connection.bind(read_server_info=False)
        except ldap3_exceptions.LDAPInvalidCredentialsResult:
            _close(connection)
            raise DirectoryError("bind_password", f"{url} refused the bind of {config['bind_dn'] or 'anonymous'}: "
                                 "invalid credentials (wrong bind_dn or bind_password)", show_value=False) from None
        except ldap3_exceptions.LDAPException as exc:
            _close(connection)
            raise DirectoryError("bind_dn", f"{url} refused the bind of {config['bind_dn'] or 'anonymous'} "
                                 f"({_cause(exc)})", show_value=False) from None
        return connection
    # Every server failed: a certificate failure is the more useful message than a later timeout.
    failures.sort(key=lambda error: error.field != "ca_file")
    if len(failures) == 1:
        raise failures[0]
    first = failures[0]
    raise DirectoryError(first.field, "; ".join(error.rule for error in failures), show_value=False)


def _decoded(values) -> list[str]:
    result = []
    for value in values or ():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        result.append(str(value))
    return result


def read_entries(config: dict, password: str | None) -> list[tuple[str, dict[str, list[str]]]]:
    """Every entry of the search (paged), as (DN, {lower-case attribute: [values]}), sorted by DN."""
    require("ldap3")
    if config["bind_dn"] and not password:
        raise ValidationError("bind_password", "is required with bind_dn (none given and none stored)")
    connection = _connect(config, password)
    entries = []
    try:
        pages = connection.extend.standard.paged_search(
            config["search_base"], config["search_filter"], search_scope=getattr(ldap3, _SCOPES[config["search_scope"]]),
            attributes=fetched_attributes(config), paged_size=config["page_size"], generator=True)
        for item in pages:
            if item.get("type") != "searchResEntry":
                continue
            attributes = {key.lower(): _decoded(values) for key, values in (item.get("raw_attributes") or {}).items()}
            entries.append((item["dn"], attributes))
    except ldap3_exceptions.LDAPNoSuchObjectResult:
        raise DirectoryError("search_base", f"{config['search_base']} does not exist in the directory",
                             show_value=False) from None
    except ldap3_exceptions.LDAPInvalidFilterError as exc:
        raise DirectoryError("search_filter", f"is not a valid LDAP filter ({_cause(exc)})", show_value=False) from None
    except ldap3_exceptions.LDAPSizeLimitExceededResult:
        raise DirectoryError("page_size", "the directory's size limit is smaller than page_size; lower page_size",
                             show_value=False) from None
    except ldap3_exceptions.LDAPOperationResult as exc:
        raise DirectoryError("search_base", f"the search failed ({_cause(exc)})", show_value=False) from None
    except ldap3_exceptions.LDAPException as exc:
        raise DirectoryError("urls", f"the connection failed during the search ({_cause(exc)})",
                             show_value=False) from None
    finally:
        _close(connection)
    entries.sort(key=lambda entry: entry[0].lower())
    return entries


# --- mapping entries to devices ------------------------------------------------------------------

def _first(attributes: dict, name: str) -> str | None:
    values = attributes.get(name.lower())
    return values[0] if values else None


def _name_field(config: dict) -> str:
    """The option whose attribute gives an entry's device names (how a skipped entry names its field)."""
    fields = {"users": config["user_attribute"], "attribute": config["device_attribute"]}
    return fields.get(config["mapping"], "name_template")


def _candidate_names(config: dict, attributes: dict) -> tuple[list[str], str | None]:
    """The device names an entry maps to (not yet validated), or the reason it maps to none."""
    if config["mapping"] == "users":
        user = _first(attributes, config["user_attribute"])
        return ([SOFTPHONE_PREFIX + user], None) if user else ([], f"has no {config['user_attribute']}")
    if config["mapping"] == "attribute":
        return attributes.get(config["device_attribute"].lower(), []), None
    values = {}
    for field in _template_attributes(config["name_template"]):
        value = _first(attributes, field)
        if value is None:
            return [], f"has no {field}"
        values[field] = value
    return [config["name_template"].format(**values)], None


def map_entries(config: dict, entries) -> tuple[dict[str, dict], list[dict]]:
    """{device name: {"dn": ..., "variables": {...}}} and the skipped entries ({dn, value, field, reason}:
    ``field`` the attribute, or ``name_template``, that gave no valid name)."""
    devices: dict[str, dict] = {}
    skipped = []
    field = _name_field(config)
    for dn, attributes in entries:
        names, reason = _candidate_names(config, attributes)
        if reason is not None:
            skipped.append({"dn": dn, "value": None, "field": field, "reason": reason})
        for candidate in names:
            try:
                name = v.normalise_device_name(candidate, "device name")
            except ValidationError as exc:
                skipped.append({"dn": dn, "value": candidate, "field": field, "reason": exc.rule})
                continue
            if name in devices:
                skipped.append({"dn": dn, "value": candidate, "field": field, "reason": f"{name} is already mapped "
                                f"from {devices[name]['dn']}"})
                continue
            variables = {key.replace("-", "_"): values[0] for key, values in attributes.items()
                         if values and _VARIABLE.fullmatch(key.replace("-", "_"))}
            user = _first(attributes, config["user_attribute"] or "uid")
            if user is not None:
                variables["user"] = user
            variables["dn"] = dn
            devices[name] = {"dn": dn, "variables": variables}
    return devices, skipped


# --- the sync ------------------------------------------------------------------------------------

def _next_sync(config: dict, moment: _dt.datetime) -> str | None:
    minutes = config["sync_interval_minutes"]
    return None if minutes is None else v.format_utc(moment + _dt.timedelta(minutes=minutes))


def _password(tx, store: Store, config: dict, password: str | None) -> str | None:
    if password is not None or not config["bind_dn"]:
        return password
    return secretbox.get(tx, store.secret(), _secret_name(config["name"]))


def sync(store: Store, options: dict, *, bind_password: str | None = None, check_mode: bool = False,
         now=None, stored: dict | None = None) -> dict[str, Any]:
    """Sync one directory configuration now: read the directory, then create (or update) the devices its
    entries map to with the device template, and report or remove the absent ones. Nothing in the store
    changes unless the whole directory was read. ``stored``: the configuration as the store kept it when
    this sync took it up (``sync_stored``, the schedule): such a sync applies only while the store still
    keeps that configuration, so it never puts back one an operator replaced meanwhile."""
    config = check_config(options)
    if bind_password is not None and not isinstance(bind_password, str):
        raise ValidationError("bind_password", "must be a string", show_value=False)
    bind_password = bind_password or None
    if bind_password is not None and not config["bind_dn"]:
        raise ValidationError("bind_password", "needs bind_dn", show_value=False)
    moment = v.parse_utc(now, "now") if now is not None else v.utc_now()
    check_ca_file(config)
    _template(store, config)
    ticket = None
    with store.transaction(write=not check_mode) as tx:
        password = _password(tx, store, config, bind_password)
        if not check_mode:  # before the read: a later ticket is a later reading of the directory
            ticket = directory_records.take_ticket(tx, config["name"])
    entries = read_entries(config, password)
    return _apply(store, config, entries, ticket=ticket, bind_password=bind_password, check_mode=check_mode,
                  moment=moment, stored=stored)


def sync_stored(store: Store, name: str, *, bind_password: str | None = None, check_mode: bool = False,
                now=None) -> dict[str, Any]:
    """Sync a directory whose configuration the store keeps (from an earlier sync), e.g. on schedule."""
    with store.read() as tx:
        row = directory_records.get(tx, name)
    if row is None:
        raise NotFoundError(f"name: no directory {name!r} in the store (sync it once with its configuration)")
    return sync(store, row["config"], bind_password=bind_password, check_mode=check_mode, now=now,
                stored=row["config"])


def _template(store: Store, config: dict) -> None:
    if templates.get(store, config["device_template"]) is None:
        raise ValidationError("device_template", "names no device template (define it with capf_device_template "
                              "or the templates: section first)", config["device_template"])


def _listed(names) -> str:
    names = sorted(names)
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more


def _stored_password_change(tx, secret: bytes, config: dict, bind_password: str | None) -> str | None:
    """What happens to the sealed bind password: "put", "delete" or None. The store keeps it only for
    a scheduled sync."""
    secret_name = _secret_name(config["name"])
    if config["sync_interval_minutes"] is None or not config["bind_dn"]:
        return "delete" if secretbox.exists(tx, secret_name) else None
    if bind_password is None:
        return None
    return None if secretbox.equals(tx, secret, secret_name, bind_password) else "put"


def _leave_to_others(tx, directory_id: int | None, devices: dict, previous: dict, skipped: list, config: dict) -> None:
    """A device another directory already has stays that directory's: this one skips the entry that maps
    to it (as a name two entries give), so no directory changes or removes another's device."""
    others = directory_records.owners(tx, [device for device in devices if device not in previous],
                                      exclude=directory_id)
    for device in sorted(others):
        item = devices.pop(device)
        skipped.append({"dn": item["dn"], "value": device, "field": _name_field(config),
                        "reason": f"{device} is already a device of directory {others[device]}"})


def _held(previous: dict, devices: dict, skipped: list) -> set:
    """Devices of the directory whose entry is still there but now gives no device name (an invalid or
    missing value): the entry is reported as skipped, and its device stays the directory's, neither
    absent nor removed, until the entry is fixed or leaves."""
    mapped_dns = {item["dn"].lower() for item in devices.values()}
    bad_dns = {item["dn"].lower() for item in skipped} - mapped_dns
    return {device for device, dn in previous.items() if device not in devices and dn.lower() in bad_dns}


def _keeps_password(config: dict) -> bool:
    return config["sync_interval_minutes"] is not None and bool(config["bind_dn"])


def _superseded_password(tx, secret: bytes, config: dict, row: dict | None, ticket: int,
                         bind_password: str | None) -> str | None:
    """What a superseded sync does with the bind password it was given (its bind with it succeeded): it
    keeps it unless a sync of a later ticket was given one, or its configuration or the stored one keeps
    no password, or the stored one binds as another DN or to other servers. Returns what happened, for
    the audit and the warning (never the password): "stored", "unchanged", "not stored: why"; None when
    no password was given."""
    if bind_password is None:
        return None
    later = directory_records.password_ticket(tx, config["name"])
    if later > ticket:
        return f"not stored: the sync of ticket {later} was given one"
    kept = row["config"] if row is not None else None
    if not _keeps_password(config):
        return "not stored: this sync's configuration keeps no bind password (no sync_interval_minutes)"
    if kept is None or not _keeps_password(kept):
        return "not stored: the stored configuration keeps no bind password (no sync_interval_minutes)"
    if (kept["bind_dn"], kept["urls"]) != (config["bind_dn"], config["urls"]):
        return "not stored: the stored configuration binds as another bind_dn or to other urls"
    directory_records.mark_password_given(tx, config["name"], ticket)
    if secretbox.equals(tx, secret, _secret_name(config["name"]), bind_password):
        return "unchanged"
    secretbox.put(tx, secret, _secret_name(config["name"]), bind_password)
    return "stored"


def _superseded(config: dict, entries, devices: dict, why: str, password: str | None) -> dict:
    """The result of a sync that applied nothing of its reading, ``why``: a sync that read the directory
    later applied first, or the stored configuration it took up was replaced. ``password``: what became
    of the bind password it was given (``_superseded_password``)."""
    name = config["name"]
    counts = {"entries": len(entries), "mapped": len(devices), "created": 0, "changed": 0, "absent": 0, "removed": 0,
              "skipped": 0}
    kept = {None: "", "stored": " but the bind password given, which it bound with (stored)",
            "unchanged": " (the bind password given, which it bound with, is the stored one)"}
    note = kept.get(password, f" (the bind password given, which it bound with, is {password})")
    return converged(password == "stored", {"phones": {}}, {"phones": {}},
                     directory={"name": name, "first_sync": False, "entries": len(entries), "mapped": len(devices)},
                     devices={"created": [], "changed": [], "absent": [], "removed": []},
                     counts=counts, skipped=[], authentication_strings=[], strings_file=None, superseded=True,
                     warnings=[f"directory {name}: superseded: {why}; this sync applied nothing{note}"])


def _apply(store: Store, config: dict, entries, *, ticket, bind_password, check_mode, moment, stored) -> dict:
    """The devices of the entries get the template, absent ones are reported or removed, and the
    directory's configuration and devices are recorded: one transaction (none in check mode). Unless a
    sync of a later ticket (a later reading of the directory) has applied, or the store no longer keeps
    the configuration ``stored`` this sync took up: then nothing is."""
    name = config["name"]
    devices, skipped = map_entries(config, entries)
    secret = store.secret()
    with store.transaction(write=not check_mode) as tx:
        applied_ticket = directory_records.applied_ticket(tx, name) if ticket is not None else 0
        row = directory_records.get(tx, name)
        why = None
        if ticket is not None and applied_ticket > ticket:
            why = (f"a sync that read the directory later has applied already (ticket {applied_ticket}, this "
                   f"sync's {ticket})")
        elif ticket is not None and stored is not None and (row is None or row["config"] != stored):
            why = "the directory's stored configuration was replaced or removed after this sync took it up"
        if why is not None:
            password = _superseded_password(tx, secret, config, row, ticket, bind_password)
            details = {} if password is None else {"bind_given": password}  # what became of it, never it
            audit.record(tx, store.actor, "directory.sync_superseded", name, ticket=ticket,
                         applied_ticket=applied_ticket, entries=len(entries), reason=why, **details)
            return _superseded(config, entries, devices, why, password)
        template = templates.load_in(tx, secret, config["device_template"])
        first = row is None or row["first_synced_at"] is None
        previous = directory_records.devices(tx, row["id"]) if row is not None else {}
        _leave_to_others(tx, None if row is None else row["id"], devices, previous, skipped, config)
        gone = sorted(device for device in previous if device not in devices)
        held = _held(previous, devices, skipped)
        gone = [device for device in gone if device not in held]
        gone_in_store = sorted(phone_records.by_name(tx, gone)) if gone else []
        password_change = _stored_password_change(tx, secret, config, bind_password)
        refused: list[dict] = []
        applied = templates.apply_in(tx, store.actor, secret, template,
                                     {device: item["variables"] for device, item in devices.items()}, via=VIA,
                                     existing="reapply" if first or config["reapply_template"] else "keep",
                                     check_mode=check_mode, now=moment, refused=refused, clock_skew=store.clock_skew)
        skipped.extend({"dn": devices[item["device_name"]]["dn"], "value": item["device_name"],
                        "field": item["field"], "reason": item["rule"]} for item in refused)
        absent = gone_in_store if config["absent_devices"] != "keep" else []
        removed = absent if config["absent_devices"] == "remove" else []
        generated = applied["authentication_strings"]
        counts = {"entries": len(entries), "mapped": len(devices), "created": len(applied["created"]),
                  "changed": len(applied["updated"]), "absent": len(absent), "removed": len(removed),
                  "skipped": len(skipped)}
        if not check_mode:
            if generated and config["strings_file"]:
                bulk.write_strings_file(store, config["strings_file"], generated)
            directory_id = directory_records.save(tx, name, config, _next_sync(config, moment))
            if password_change == "put":
                secretbox.put(tx, secret, _secret_name(name), bind_password)
            elif password_change == "delete":
                secretbox.delete(tx, _secret_name(name))
            for device in removed:
                phone_config.remove(tx, store.actor, device, via="ldap")
            tracked = set(absent) - set(removed)  # reported: still the directory's until removed or back
            directory_records.forget_devices(tx, directory_id, [device for device in gone if device not in tracked])
            directory_records.add_devices(tx, directory_id, {device: item["dn"] for device, item in devices.items()
                                                             if device not in previous})
            directory_records.update_devices(tx, directory_id, {
                device: item["dn"] for device, item in devices.items()
                if device in previous and previous[device] != item["dn"]})
            directory_records.record_sync(tx, directory_id, v.format_utc(moment), _next_sync(config, moment), counts)
            directory_records.mark_applied(tx, name, ticket)
            if bind_password is not None:
                directory_records.mark_password_given(tx, name, ticket)
            audit.record(tx, store.actor, "directory.sync", name, first_sync=first, **counts)
    config_changed = row is None or row["config"] != config or password_change is not None
    warnings = []
    if absent and not removed:
        warnings.append(f"directory {name}: {len(absent)} device(s) whose entry left the directory are kept "
                        f"(absent_devices: report): {_listed(absent)}")
    if skipped:
        warnings.append(f"directory {name}: {len(skipped)} entries map to no device name or are skipped: "
                        + "; ".join(f"{item['dn']}: {item['field']} {item['reason']}" for item in skipped[:5])
                        + (" ..." if len(skipped) > 5 else ""))
    before_phones, after_phones = applied["before"]["phones"], applied["after"]["phones"]
    for device in removed:
        before_phones[device], after_phones[device] = {"state": "present"}, {"state": "absent"}
    return converged(bool(applied["changed"] or removed or config_changed), {"phones": before_phones},
                     {"phones": after_phones},
                     directory={"name": name, "first_sync": first, "entries": len(entries), "mapped": len(devices)},
                     devices={"created": sorted(applied["created"]), "changed": sorted(applied["updated"]),
                              "absent": absent,
                              "removed": removed},
                     counts=counts, skipped=skipped, authentication_strings=generated,
                     strings_file=config["strings_file"] if generated and not check_mode else None,
                     superseded=False, warnings=warnings)


def run_due(store: Store, now=None) -> list[dict]:
    """Sync every directory whose scheduled sync is due (the service's scheduler calls it). A failed sync
    is retried after its interval; its error is the directory's last result."""
    moment = v.parse_utc(now, "now") if now is not None else v.utc_now()
    with store.read() as tx:
        due = directory_records.due(tx, v.format_utc(moment))
    outcomes = []
    for row in due:
        try:
            result = sync(store, row["config"], now=moment, stored=row["config"])
        except CapfError as exc:
            with store.transaction() as tx:
                directory_records.set_next_sync(tx, row["id"], _next_sync(row["config"], moment), {"error": str(exc)})
            outcomes.append({"name": row["name"], "error": str(exc)})
            continue
        if result["superseded"]:  # a later sync (an operator's, another host's) applied first: no failure
            outcomes.append({"name": row["name"], "superseded": True})
            continue
        outcomes.append({"name": row["name"], "devices": {key: len(value) for key, value in result["devices"].items()},
                         "warnings": result["warnings"]})
    return outcomes


def listing(store: Store) -> list[dict]:
    """Every directory the store keeps: configuration, sync times, last result, whether a password is kept."""
    with store.read() as tx:
        rows = directory_records.listed(tx)
        for row in rows:
            row["bind_password_stored"] = secretbox.exists(tx, _secret_name(row["name"]))
    keys = ("name", "config", "first_synced_at", "last_synced_at", "next_sync_at", "last_result", "bind_password_stored")
    return [{key: row[key] for key in keys} for row in rows]
