# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Device templates: named sets of CAPF settings that devices get when they are created, the
universal device template of the CAPF configuration guide.

A template holds, by option name:

- the per-phone settings of ``capf_phone`` (``phone_config.OPTION_COLUMNS``): ``description``,
  ``model``, ``device_pool``, ``security_mode``, ``certificate_operation``,
  ``authentication_mode``, ``key_order``, ``rsa_key_size``, ``ec_key_size``,
  ``operation_completes_by`` (an absolute deadline), validated by the same rules, but for ``none``
  (which clears a phone's deadline): a template without a deadline gives none, so it is refused;
- ``operation_completes_in_days``: a relative deadline, days from the application that creates the
  device (or re-arms its operation), 1\u20133650; excludes ``operation_completes_by``;
- ``authentication_string``: one 4\u201310 digit string shared by every device (sealed in the store
  with ``secretbox``, never shown, never in a result or the audit log), or
  ``generate_authentication_string: true`` with ``authentication_string_length`` (4\u201310, default
  8): a string per device, generated when the device gets the template and handed out once.

``description`` is a pattern. Its placeholders are ``{device_name}`` (the canonical device name),
``{template}`` (the template's name) and every variable the caller gives for the device
(``variables``, e.g. ``{user}`` given by a directory sync). ``{{`` and
``}}`` stand for literal braces. A placeholder without a value is an error naming the device.

A template is applied, not linked: changing or removing it later changes no device.

The API the directory sync and every other caller build on:

- ``define(store, name, settings, check_mode=False)``: create or replace a template (the whole
  set: what is not given is unset); returns ``changed``/``before``/``after`` and ``template``.
- ``remove(store, name, check_mode=False)``: remove a template; devices keep their settings.
- ``get(store, name)`` -> the template's view (a dict by option name, the shared string only as
  ``(set)``), or None; ``list_all(store)`` -> every view, by name.
- ``load(store, name)`` / ``load_in(tx, secret, name)`` -> a ``Template`` (with its shared string).
- ``desired_for(template, device_name, variables, now=None)`` -> one device's desired settings:
  ``{"name", "settings", "auth", "prefix"}``, exactly the fields of ``phone_config.PhoneRequest``,
  so ``(current_row, PhoneRequest(**desired))`` is one item of ``phone_config.converge_many``.
- ``apply(store, template_name, devices, *, via, existing="keep", check_mode=False,
  strings_file=None, now=None)``: the given devices get the template through the one converge path
  (``phone_config.converge_many(..., via=via)``), in one transaction; ``apply_in(tx, actor, secret,
  template, devices, ..., refused=None)`` does the same inside the caller's transaction (with a
  ``refused`` list, a device the template cannot take is left as it is and reported there). ``via`` is one of
  ``phone_config.VIA`` (``"ldap"`` for the directory sync).
- ``check_template(settings, prefix)`` validates settings without a store; ``device_list(devices)``
  checks a device list (names canonical, no repeats) as ``apply`` does.
"""

from __future__ import annotations

import datetime as _dt
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field as _field
from typing import Any, Iterable

from . import authstrings, bulk, parameters, phone_config, secretbox
from .errors import NotFoundError, ValidationError
from .phone_config import COLUMN_OPTIONS, OPTION_COLUMNS, VIA, AuthRequest, PhoneRequest, check_settings
from .results import converged
from .store import Store, audit
from .store import phones as phone_records
from .store import templates as template_records
from .store.backend import Transaction
from .vocabulary import (DEADLINE_DAYS, PLACEHOLDER_PATTERN, TEMPLATE_EXISTING, check_bool, check_choice,
                         check_int_range, check_template_name, format_utc, normalise_device_name, parse_utc, utc_now)

PHONE_OPTIONS = tuple(OPTION_COLUMNS)
RELATIVE_DEADLINE = "operation_completes_in_days"
SHARED_STRING = "authentication_string"
GENERATE = "generate_authentication_string"
LENGTH = "authentication_string_length"
OPTIONS = PHONE_OPTIONS + (RELATIVE_DEADLINE, SHARED_STRING, GENERATE, LENGTH)
# Placeholders every device has; the caller's variables add the others.
BUILT_IN_PLACEHOLDERS = ("device_name", "template")
_PLACEHOLDER = re.compile(PLACEHOLDER_PATTERN)
# Any valid device name: the one rule of a template's settings is checked on a new device of that name.
_SAMPLE_DEVICE = "SEP000000000000"


@dataclass(frozen=True)
class Template:
    """A stored template: its name, its settings by option name (canonical, secret-free, as
    ``get`` shows them), and its shared authentication string (never in a repr)."""

    name: str
    settings: dict
    authentication_string: str | None = _field(default=None, repr=False)


def _secret_name(name: str) -> str:
    return f"template:{name}:authentication_string"


def placeholders(pattern: str, field: str = "description") -> tuple[str, ...]:
    """The placeholder names of a description pattern, in order; only plain ``{name}`` fields."""
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ValidationError(field, f"is not a valid pattern ({exc}; write {{{{ and }}}} for literal braces)",
                              pattern) from None
    names = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not _PLACEHOLDER.fullmatch(name) or spec or conversion:
            raise ValidationError(field, "may hold only plain placeholders such as {device_name}, {template} or "
                                         "{user} (letters, digits and '_'; {{ and }} for literal braces)", pattern)
        names.append(name)
    return tuple(names)


def _render(pattern: str, values: Mapping[str, str], field: str) -> str:
    parts = []
    for literal, name, _spec, _conversion in string.Formatter().parse(pattern):
        parts.append(literal)
        if name is not None:
            if name not in values:
                raise ValidationError(field, "uses the placeholder {%s}, which has no value for this device "
                                             "(known: %s)" % (name, ", ".join(sorted(values))), pattern)
            parts.append(values[name])
    return "".join(parts)


def check_template(settings: Mapping | None, prefix: str = "") -> tuple[dict[str, Any], str | None]:
    """Validate a template's settings by option name (``OPTIONS``); return the canonical settings
    (secret-free, unset options left out) and the shared authentication string (or None). Errors
    name the option path, ``prefix`` + option. The rules of a device's settings hold as for a new
    device (``phone_config.plan_phone``), so a template that no device could take is refused."""
    if settings is not None and not isinstance(settings, Mapping):
        raise ValidationError(prefix.rstrip(".") or "settings", "must be a mapping of template options", settings)
    given = {key: value for key, value in (settings or {}).items() if value is not None}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ValidationError(prefix + str(unknown[0]), "is not a template option; known: %s" % ", ".join(OPTIONS))
    shared = given.pop(SHARED_STRING, None)
    generate = check_bool(prefix + GENERATE, given.pop(GENERATE, False))
    length = given.pop(LENGTH, None)
    days = given.pop(RELATIVE_DEADLINE, None)
    if length is not None and not generate:
        raise ValidationError(prefix + LENGTH, f"is only used with {GENERATE}: true", length)
    if days is not None:
        if "operation_completes_by" in given:
            raise ValidationError(prefix + RELATIVE_DEADLINE, "cannot be combined with operation_completes_by")
        days = check_int_range(prefix + RELATIVE_DEADLINE, days, DEADLINE_DAYS, " days")
    # ``operation_completes_by: none`` clears a phone's deadline; a template holds what devices get, so
    # it is refused there (a device gets no deadline from a template that leaves the option out).
    columns = check_settings(given, prefix, deadline_clears=False)
    if "description" in columns:
        placeholders(columns["description"], prefix + "description")
    auth = AuthRequest(literal=shared, generate=generate,
                       length=authstrings.DEFAULT_LENGTH if length is None else length).validated(prefix)
    canonical = {COLUMN_OPTIONS[column]: value for column, value in sorted(columns.items())}
    if days is not None:
        canonical[RELATIVE_DEADLINE] = days
    if generate:
        canonical[GENERATE] = True
        canonical[LENGTH] = auth.length
    _check_on_a_new_device(Template("(checked)", canonical, shared), prefix)
    return canonical, shared


def _check_on_a_new_device(template: Template, prefix: str) -> None:
    """Plan the template on a device that does not exist yet (check mode, no store): the phone rules
    (an authentication string where one is needed, no string mode for a secure phone) hold once."""
    values = {name: name for name in placeholders(template.settings.get("description", ""))}
    desired = desired_for(template, _SAMPLE_DEVICE, values, now=_dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc))
    phone_config.plan_phone(None, _SAMPLE_DEVICE, desired["settings"], parameters.defaults(), desired["auth"],
                            bytes(32), check_mode=True, prefix=prefix)


def _view(name: str, settings: dict, string_view: str | None) -> dict[str, Any]:
    result = {"name": name}
    result.update(settings)
    if string_view is not None:
        result[SHARED_STRING] = string_view
    return result


def view(template: Template) -> dict[str, Any]:
    """What a reviewer sees of a template: its name and settings by option name; a shared
    authentication string only as ``(set)``."""
    return _view(template.name, template.settings, None if template.authentication_string is None else "(set)")


def _row_view(tx: Transaction, row: dict) -> dict[str, Any]:
    """The view of a stored template, without opening its shared string."""
    return _view(row["name"], row["settings"], "(set)" if secretbox.exists(tx, _secret_name(row["name"])) else None)


def load_in(tx: Transaction, secret: bytes, name: str) -> Template:
    """Template ``name`` with its shared authentication string, read in the caller's transaction;
    NotFoundError when there is none."""
    name = check_template_name(name, "template")
    row = template_records.get(tx, name)
    if row is None:
        raise NotFoundError(f"template: there is no device template named {name!r}; define it first")
    return Template(row["name"], row["settings"], secretbox.get(tx, secret, _secret_name(name)))


def load(store: Store, name: str) -> Template:
    """Template ``name`` with its shared authentication string; NotFoundError when there is none."""
    secret = store.secret()
    with store.read() as tx:
        return load_in(tx, secret, name)


def get(store: Store, name: str) -> dict[str, Any] | None:
    """The view (``view``) of template ``name``, or None when there is none."""
    name = check_template_name(name, "name")
    with store.read() as tx:
        row = template_records.get(tx, name)
        return None if row is None else _row_view(tx, row)


def list_all(store: Store) -> list[dict[str, Any]]:
    """The views of every template, by name."""
    with store.read() as tx:
        return [_row_view(tx, row) for row in template_records.every(tx)]


def define(store: Store, name: str, settings: Mapping | None, *, check_mode: bool = False,
           prefix: str = "") -> dict[str, Any]:
    """Create template ``name`` or replace its settings with ``settings`` (by option name, see
    ``OPTIONS``; an option not given is unset). Validated first (errors name ``prefix`` + the option);
    nothing is written when a rule is broken, or in check mode. Returns ``changed``, ``before`` and
    ``after`` views (the shared string as ``(set)``, ``(new)`` or ``(changed)``), ``name`` and
    ``template`` (the view after)."""
    name = check_template_name(name, prefix + "name")
    canonical, shared = check_template(settings, prefix)
    secret = store.secret()
    with store.transaction(write=not check_mode) as tx:
        row = template_records.get(tx, name)
        had_string = secretbox.exists(tx, _secret_name(name))
        same_string = (secretbox.equals(tx, secret, _secret_name(name), shared) if shared is not None
                       else not had_string)
        before = None if row is None else _row_view(tx, row)
        string_view = None
        if shared is not None:
            string_view = "(set)" if same_string else "(changed)" if had_string else "(new)"
        after = _view(name, canonical, string_view)
        changed = row is None or row["settings"] != canonical or not same_string
        if changed and not check_mode:
            details: dict[str, Any] = {}
            if not same_string:
                details["auth_change"] = after.get(SHARED_STRING, "(unset)")
            template_records.put(tx, store.actor, name, canonical, **details)
            if shared is None:
                secretbox.delete(tx, _secret_name(name))
            elif not same_string:
                secretbox.put(tx, secret, _secret_name(name), shared)
    result = converged(changed, before, after, name=name)
    result["template"] = after
    return result


def remove(store: Store, name: str, *, check_mode: bool = False, prefix: str = "") -> dict[str, Any]:
    """Remove template ``name`` (and its shared string). Devices that got it keep their settings."""
    name = check_template_name(name, prefix + "name")
    with store.transaction(write=not check_mode) as tx:
        row = template_records.get(tx, name)
        before = None if row is None else _row_view(tx, row)
        if row is not None and not check_mode:
            template_records.delete(tx, store.actor, name)
            secretbox.delete(tx, _secret_name(name))
    return converged(row is not None, before, None, name=name, template=None)


def desired_for(template: Template, device_name: str, variables: Mapping[str, Any] | None = None, *,
                now=None) -> dict[str, Any]:
    """One device's desired settings from ``template``: ``{"name", "settings", "auth", "prefix"}``,
    the fields of ``phone_config.PhoneRequest`` (``settings`` validated store columns as
    ``phone_config.check_settings`` returns them, ``auth`` an ``AuthRequest``, ``prefix`` how errors
    name the device). ``variables`` fill the description pattern's placeholders beside
    ``{device_name}`` and ``{template}``; a relative deadline counts from ``now`` (default: now)."""
    name = normalise_device_name(device_name, "device_name")
    prefix = f"phone {name}: "
    options = {option: template.settings[option] for option in PHONE_OPTIONS if option in template.settings}
    if "description" in options:
        values = _variables(variables, prefix + "variables")
        values.update(device_name=name, template=template.name)
        options["description"] = _render(options["description"], values, prefix + "description")
    days = template.settings.get(RELATIVE_DEADLINE)
    if days is not None:
        moment = parse_utc(now, "now") if now is not None else utc_now()
        options["operation_completes_by"] = format_utc(moment + _dt.timedelta(days=days))
    auth = AuthRequest(literal=template.authentication_string, generate=bool(template.settings.get(GENERATE)),
                       length=template.settings.get(LENGTH, authstrings.DEFAULT_LENGTH))
    return {"name": name, "settings": check_settings(options, prefix, deadline_clears=False), "auth": auth,
            "prefix": prefix}


def _variables(variables: Mapping[str, Any] | None, field: str) -> dict[str, str]:
    if variables is None:
        return {}
    if not isinstance(variables, Mapping):
        raise ValidationError(field, "must be a mapping of placeholder names to values", variables)
    result = {}
    for key, value in variables.items():
        if not isinstance(key, str) or not _PLACEHOLDER.fullmatch(key):
            raise ValidationError(field, "names must be letters, digits and '_', not starting with a digit", key)
        if isinstance(value, (list, tuple, dict)) or value is None:
            raise ValidationError(f"{field}.{key}", "must be one text value", value)
        result[key] = str(value)
    return result


def device_list(devices) -> list[tuple[str, Mapping | None]]:
    """``devices`` as (canonical name, variables) pairs: a mapping of names to variables, or a list
    of names or of (name, variables) pairs. A name given twice is an error."""
    if isinstance(devices, str):
        raise ValidationError("devices", "must be a list of device names, not one string", devices)
    items: Iterable = devices.items() if isinstance(devices, Mapping) else devices
    result, seen = [], {}
    for index, item in enumerate(items):
        name, variables = (item, None) if isinstance(item, str) else tuple(item)
        canonical = normalise_device_name(name, f"devices[{index}]")
        if canonical in seen:
            raise ValidationError(f"devices[{index}]", f"repeats devices[{seen[canonical]}]", canonical)
        seen[canonical] = index
        result.append((canonical, variables))
    return result


def _keeps_deadline(template: Template, row: dict, settings: dict) -> bool:
    """A relative deadline counts from the application that creates a device or changes its
    operation: re-applying a template leaves a device's deadline as it is while its operation stays."""
    return (RELATIVE_DEADLINE in template.settings and row["operation_deadline"] is not None
            and settings.get("operation", row["operation"]) == row["operation"])


def _refusal(name: str, prefix: str, exc: ValidationError) -> dict[str, str]:
    field = exc.field[len(prefix):] if exc.field.startswith(prefix) else exc.field
    return {"device_name": name, "field": field, "rule": exc.rule}


def _changed_fields(plan) -> tuple[dict | None, dict]:
    before, after = plan.before, plan.after
    if before is None:
        return None, after
    keys = [key for key in after if after[key] != before.get(key)]
    return {key: before[key] for key in keys}, {key: after[key] for key in keys}


def apply_in(tx: Transaction, actor: str, secret: bytes, template: Template, devices, *, via: str,
             existing: str = "keep", check_mode: bool = False, now=None, refused: list | None = None,
             clock_skew=phone_records.NO_CLOCK_SKEW) -> dict[str, Any]:
    """Apply ``template`` to ``devices`` in the caller's transaction (see ``apply``); nothing is
    written in check mode. Returns ``apply``'s result without ``strings_file``. A device the template
    cannot be applied to (its variables break a setting's rule, or the template's settings contradict
    the device's own) raises; with a ``refused`` list it is left as it is and appended there as
    ``{"device_name", "field", "rule"}`` (the field without the device's prefix), and the others are
    applied. The diffs report operation statuses as views do on a store whose clock skew is
    ``clock_skew`` (``Store.clock_skew``)."""
    via = check_choice("via", via, VIA)
    existing = check_choice("existing", existing, TEMPLATE_EXISTING)
    moment = parse_utc(now, "now") if now is not None else utc_now()
    wanted = device_list(devices)
    current = phone_records.by_name(tx, [name for name, _variables in wanted])
    work, kept = [], []
    for name, variables in wanted:
        row = current.get(name)
        if row is not None and existing == "keep":
            kept.append(name)
            continue
        try:
            desired = desired_for(template, name, variables, now=moment)
        except ValidationError as exc:
            if refused is None:
                raise
            refused.append(_refusal(name, f"phone {name}: ", exc))
            continue
        if row is not None and _keeps_deadline(template, row, desired["settings"]):
            desired["settings"].pop("operation_deadline", None)
        work.append((row, PhoneRequest(**desired)))
    rules_broken: list | None = None if refused is None else []
    plans = phone_config.converge_many(tx, actor, secret, work, via=via, check_mode=check_mode, refused=rules_broken,
                                       clock_skew=clock_skew, now=moment)
    for request, exc in rules_broken or ():
        refused.append(_refusal(request.name, request.prefix, exc))
    created = [plan.name for plan in plans if not plan.exists]
    updated = [plan.name for plan in plans if plan.exists and plan.changes]
    generated = [{"device_name": plan.name, "authentication_string": plan.generated}
                 for plan in plans if plan.generated is not None]
    counts = {"created": len(created), "updated": len(updated), "unchanged": len(plans) - len(created) - len(updated),
              "kept": len(kept)}
    if not check_mode and (created or updated):
        audit.record(tx, actor, "template.apply", template.name, via=via, existing=existing,
                     generated=len(generated), **counts)
    before, after = {}, {}
    for plan in plans:
        if plan.changed:
            before[plan.name], after[plan.name] = _changed_fields(plan)
    return converged(bool(created or updated), {"phones": before}, {"phones": after}, template=template.name,
                     counts=counts, created=created, updated=updated, kept=kept, authentication_strings=generated)


def apply(store: Store, template_name: str, devices, *, via: str, existing: str = "keep", check_mode: bool = False,
          strings_file: str | None = None, now=None) -> dict[str, Any]:
    """Give ``devices`` the settings of template ``template_name``, in one transaction, through the
    one converge path of phone settings (``phone_config.converge_many(..., via=via)``): the same rules,
    the same per-phone audit events (``phone.create``/``phone.update`` tagged ``via``) as every other
    path, and one ``template.apply`` event.

    ``devices``: a mapping of device names to their placeholder variables, or a list of names (or of
    ``(name, variables)`` pairs). ``via``: the path that asks, one of ``phone_config.VIA`` (e.g.
    ``"template"``, ``"ldap"``, ``"apply"``). ``existing``: ``"keep"`` (default) leaves the CAPF settings of
    devices that exist already untouched (they are listed in ``kept``); ``"reapply"`` converges them to
    the template too (a relative deadline is then kept while a device's operation stays the same).
    Generated authentication strings are returned once in ``authentication_strings`` and, with
    ``strings_file``, written there as a 0600 CSV (``device_name,authentication_string``), as bulk jobs do.

    Returns ``changed``, ``before``/``after`` (``{"phones": {name: fields}}``, changed fields only),
    ``template``, ``counts`` (``created``, ``updated``, ``unchanged``, ``kept``), the names ``created``,
    ``updated`` and ``kept``, ``authentication_strings`` and ``strings_file`` (None unless written)."""
    check_choice("via", via, VIA)
    check_choice("existing", existing, TEMPLATE_EXISTING)
    secret = store.secret()
    with store.transaction(write=not check_mode) as tx:
        template = load_in(tx, secret, template_name)
        result = apply_in(tx, store.actor, secret, template, devices, via=via, existing=existing,
                          check_mode=check_mode, now=now, clock_skew=store.clock_skew)
        written = bool(result["authentication_strings"] and strings_file and not check_mode and not store.rehearsing)
        if written:
            bulk.write_strings_file(store, strings_file, result["authentication_strings"])
    result["strings_file"] = strings_file if written else None
    return result
