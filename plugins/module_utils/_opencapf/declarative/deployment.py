# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan and apply a declarative file through the engine functions that the modules call.

Sections are converged in dependency order: trust (the CA's HTTPS certificate must be trusted
before an online CA names it), service, device templates (defined, then applied to the devices they
list), phones, bulk jobs; the phones section in one transaction through the one converge path of
phone settings (``phone_config.converge_many``), as ``capf_phone``, bulk jobs and template
applications do. ``apply`` runs every section in one atomic change of the store (``Store.atomic``):
all of the file or none of it. ``plan`` is ``apply`` rehearsed (``Store.rehearsal``) and rolled
back, never a check-mode path of its own: a later section depends on what the earlier ones do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field as _field
from typing import Any, Callable

from .. import bulk, phone_config, service_config, templates, trust
from ..errors import CapfError, FieldError, InputFileError, ValidationError
from ..files import read_option_file
from ..store import Store
from ..store import phones as phone_records
from ..vocabulary import check_bool, check_template_name, normalise_device_name
from .document import Document, load as load_document

PHONE_SETTINGS = tuple(phone_config.OPTION_COLUMNS)


@dataclass
class Change:
    section: str
    item: str
    action: str  # "create", "update", "delete", "run"
    details: list = _field(default_factory=list)


@dataclass(frozen=True)
class Options:
    """Switches for a whole file (the CLI's flags); a file item's own field can only tighten them."""

    strict_ca_rules: bool = False
    fail_on_unmatched: bool = False
    # ``progress(stage, done, total)``: told how far each section is (the CLI draws it on a terminal).
    progress: Callable[[str, int, int], None] | None = _field(default=None, compare=False)


@dataclass
class Report:
    changes: list = _field(default_factory=list)
    generated_strings: dict = _field(default_factory=dict)
    counts: dict = _field(default_factory=dict)
    warnings: list = _field(default_factory=list)  # each starts with its path in the file

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _prefixed(prefix: str, call: Callable[[], Any]) -> Any:
    """Run ``call`` and report an error about a field (a rule broken, a file unreadable, a
    certificate refused) at its path in the file."""
    try:
        return call()
    except FieldError as exc:
        if exc.field.startswith(prefix):
            raise
        raise exc.prefixed(prefix) from None


def _differences(before, after, secrets=("authentication_string",)) -> list[str]:
    before, after = before or {}, after or {}
    lines = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new:
            if key in secrets:
                lines.append(f"{key}: {old} -> {new}")
            else:
                lines.append(f"{key}: {old!r} -> {new!r}")
    return lines


def _service(store: Store, document: Document, check_mode: bool, report: Report, _options: Options) -> None:
    section = document.data.get("service")
    if not section:
        return
    online_ca = section.get("online_ca")
    if online_ca is not None:
        online_ca = dict(online_ca)
        variable = online_ca.pop("password_env", None)
        if variable is not None:
            if variable not in os.environ:
                raise ValidationError("service.online_ca.password_env", "names an unset environment variable",
                                      variable)
            online_ca["password"] = os.environ[variable]
    smtp_password = section.get("monitor_smtp_password")
    variable = section.get("monitor_smtp_password_env")
    if variable is not None:
        if smtp_password is not None:
            raise ValidationError("service.monitor_smtp_password_env", "cannot be combined with monitor_smtp_password")
        if variable not in os.environ:
            raise ValidationError("service.monitor_smtp_password_env", "names an unset environment variable", variable)
        smtp_password = os.environ[variable]
    certificate = section.get("capf_certificate")
    if certificate is not None:
        certificate = dict(certificate)
        key_file = certificate.pop("private_key_file", None)
        if key_file is not None:
            certificate["private_key"] = read_option_file(_path(document, key_file),
                                                          "service.capf_certificate.private_key_file", "key file",
                                                          private=True)
    result = _prefixed("service.", lambda: service_config.converge(
        store, parameters_wanted=section.get("parameters"), online_ca=online_ca, capf_certificate=certificate,
        monitor_smtp_password=smtp_password, check_mode=check_mode))
    if result["changed"]:
        details = []
        before, after = result["before"], result["after"]
        details += [f"parameters.{line}" for line in _differences(before.get("parameters"), after.get("parameters"))]
        details += [f"online_ca.{line}" for line in _differences(before.get("online_ca"), after.get("online_ca"),
                                                                 secrets=("password",))]
        if result["monitor_smtp_password_changed"]:
            details.append(f"monitor_smtp_password: {before['monitor_smtp_password']} -> {after['monitor_smtp_password']}")
        if result.get("capf_certificate_action", "none") != "none":
            details.append(f"capf_certificate: {result['capf_certificate_action']}")
        report.changes.append(Change("service", "service", "update", details))


def _path(document: Document, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(document.base_dir, path)


def _trust(store: Store, document: Document, check_mode: bool, report: Report, options: Options) -> None:
    for index, item in enumerate(document.data.get("trust") or ()):
        arguments = dict(item)
        if "path" in arguments:
            arguments["path"] = _path(document, arguments["path"])
        arguments["strict_ca_rules"] = bool(arguments.get("strict_ca_rules")) or options.strict_ca_rules
        result = _prefixed(f"trust[{index}].", lambda arguments=arguments: trust.converge(
            store, check_mode=check_mode, **arguments))
        report.warnings += [f"trust[{index}].{text}" for text in result["warnings"]]
        if result["changed"]:
            details = [f"+ {a['trust_store']}: {a['common_name']} ({a['fingerprint'][:16]})" for a in result["added"]]
            details += [f"- {r['trust_store']}: {r['common_name']} ({r['fingerprint'][:16]})"
                        for r in result["removed"]]
            report.changes.append(Change("trust", f"trust[{index}]", "update", details))


def _phones(store: Store, document: Document, check_mode: bool, report: Report, _options: Options) -> None:
    items = document.data.get("phones") or []
    if not items:
        return
    wanted = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        prefix = f"phones[{index}]."
        name = _prefixed(prefix, lambda item=item: normalise_device_name(item["name"], "name"))
        if name in seen:
            raise ValidationError(prefix + "name", f"repeats phones[{seen[name]}]", name)
        seen[name] = index
        settings = {key: item[key] for key in PHONE_SETTINGS if key in item}
        columns = _prefixed(prefix, lambda settings=settings: phone_config.check_settings(settings))
        auth = _prefixed(prefix, lambda item=item: phone_config.AuthRequest(
            literal=item.get("authentication_string"),
            generate=bool(item.get("generate_authentication_string")),
            length=item.get("authentication_string_length", 8)).validated())
        reissue = _prefixed(prefix, lambda item=item: check_bool("reissue", item.get("reissue", False)))
        wanted.append((index, name, item.get("state", "present"), columns, auth, reissue))
    secret = store.secret()
    created = updated = deleted = 0
    with store.transaction(write=not check_mode) as tx:
        current = phone_records.by_name(tx, [name for _i, name, _s, _c, _a, _r in wanted])
        work = []
        for index, name, state, columns, auth, reissue in wanted:
            row = current.get(name)
            if state == "present":
                work.append((row, phone_config.PhoneRequest(name, columns, auth, f"phones[{index}].", reissue)))
            elif row is not None:
                deleted += 1
                if not check_mode:
                    phone_config.remove(tx, store.actor, name, via="apply")
        plans = {plan.name: plan for plan in phone_config.converge_many(tx, store.actor, secret, work, via="apply",
                                                                        check_mode=check_mode,
                                                                        progress=_options.progress,
                                                                        clock_skew=store.clock_skew)}
    for _index, name, state, _columns, _auth, _reissue in wanted:
        if state == "absent":
            if name in current:
                report.changes.append(Change("phones", name, "delete"))
            continue
        plan = plans[name]
        if not plan.changed:
            continue
        if not plan.exists:
            created += 1
            report.changes.append(Change("phones", name, "create", [
                f"{key}: {value!r}" if key != "authentication_string" else f"{key}: {value}"
                for key, value in sorted(plan.after.items()) if key != "name" and value not in ("", None)]))
        else:
            updated += 1
            report.changes.append(Change("phones", name, "update", _differences(plan.before, plan.after)))
        if plan.generated is not None:
            report.generated_strings[name] = plan.generated
    report.counts["phones"] = {"declared": len(wanted), "created": created, "updated": updated, "deleted": deleted}


def _templates(store: Store, document: Document, check_mode: bool, report: Report, _options: Options) -> None:
    items = document.data.get("templates") or ()
    counts = {"declared": len(items), "created": 0, "updated": 0, "deleted": 0, "devices_created": 0,
              "devices_updated": 0}
    for index, item in enumerate(items):  # every item is checked before any is written
        if item.get("state", "present") == "present":
            _prefixed(f"templates[{index}].", lambda item=item: _check_template_item(item))
    for index, item in enumerate(items):
        prefix = f"templates[{index}]."
        name = item["name"]
        if item.get("state", "present") == "absent":
            if _prefixed(prefix, lambda name=name, prefix=prefix: templates.remove(
                    store, name, check_mode=check_mode, prefix=prefix))["changed"]:
                counts["deleted"] += 1
                report.changes.append(Change("templates", name, "delete"))
            continue
        settings = {key: item[key] for key in templates.OPTIONS if key in item}
        result = _prefixed(prefix, lambda name=name, settings=settings, prefix=prefix: templates.define(
            store, name, settings, check_mode=check_mode, prefix=prefix))
        if result["changed"]:
            action = "create" if result["before"] is None else "update"
            counts["created" if action == "create" else "updated"] += 1
            details = ([f"{key}: {value!r}" if key != "authentication_string" else f"{key}: {value}"
                        for key, value in sorted(result["after"].items()) if key != "name"]
                       if action == "create" else _differences(result["before"], result["after"]))
            report.changes.append(Change("templates", result["name"], action, details))
        if item.get("devices"):
            applied = _prefixed(prefix, lambda item=item, settings=settings, prefix=prefix: _apply_template(
                store, item, settings, prefix, check_mode))
            counts["devices_created"] += applied["counts"]["created"]
            counts["devices_updated"] += applied["counts"]["updated"]
            if applied["changed"]:
                report.changes.append(Change("templates", f"{result['name']} applied", "run", [
                    f"{key}: {value}" for key, value in sorted(applied["counts"].items())]))
            for entry in applied["authentication_strings"]:
                report.generated_strings[entry["device_name"]] = entry["authentication_string"]
    if items:
        report.counts["templates"] = counts


def _check_template_item(item: dict) -> None:
    """The rules of a declared template, and of each device it lists as the template makes it."""
    settings = {key: item[key] for key in templates.OPTIONS if key in item}
    canonical, shared = templates.check_template(settings)
    template = templates.Template(check_template_name(item["name"]), canonical, shared)
    devices = templates.device_list([(name, item.get("variables") or {}) for name in item.get("devices") or ()])
    for name, variables in devices:
        templates.desired_for(template, name, variables)


def _apply_template(store: Store, item: dict, settings: dict, prefix: str, check_mode: bool) -> dict:
    """Apply a declared template to the devices it lists, as declared (in check mode it is not stored)."""
    canonical, shared = templates.check_template(settings, prefix)
    template = templates.Template(check_template_name(item["name"]), canonical, shared)
    variables = item.get("variables") or {}
    secret = store.secret()
    with store.transaction(write=not check_mode) as tx:
        return templates.apply_in(tx, store.actor, secret, template, [(name, variables) for name in item["devices"]],
                                  via="apply", existing=item.get("existing", "keep"), check_mode=check_mode,
                                  clock_skew=store.clock_skew)


def _bulk(store: Store, document: Document, check_mode: bool, report: Report, options: Options) -> None:
    for index, item in enumerate(document.data.get("bulk") or ()):
        arguments = {key: value for key, value in item.items() if key not in ("name", "set")}
        if "strings_file" in arguments:
            arguments["strings_file"] = _path(document, arguments["strings_file"])
        arguments["fail_on_unmatched"] = bool(arguments.get("fail_on_unmatched")) or options.fail_on_unmatched
        result = _prefixed(f"bulk[{index}].", lambda arguments=arguments, item=item: bulk.converge(
            store, settings=item.get("set"), check_mode=check_mode, **arguments))
        report.warnings += [f"bulk[{index}].{text}" for text in result.get("warnings") or ()]
        label = item.get("name") or f"bulk[{index}]"
        if result["changed"]:
            counts = result.get("counts") or {}
            report.changes.append(Change("bulk", label, "run", [f"{k}: {v}" for k, v in sorted(counts.items())]))
        for entry in result.get("authentication_strings") or ():
            report.generated_strings[entry["device_name"]] = entry["authentication_string"]


SECTIONS = (_trust, _service, _templates, _phones, _bulk)


def plan(store: Store, document: Document, options: Options = Options()) -> Report:
    """What ``apply`` would change, computed without writing anything: ``apply`` itself, rehearsed
    (``Store.rehearsal``) and rolled back, so each section sees what the sections before it do (the
    phones a template creates, the phones a bulk query then matches, the trust an online CA needs)."""
    report = Report()
    with store.rehearsal():
        for section in SECTIONS:
            section(store, document, False, report, options)
    # A rehearsal's own strings are never used: the plan shows which phones get one.
    report.generated_strings = {name: phone_config.TO_BE_GENERATED for name in report.generated_strings}
    return report


def apply(store: Store, document: Document, options: Options = Options(), *, strings_file: str | None = None,
          strings_field: str = "strings_file") -> Report:
    """Converge the store to the document, all or nothing: every section runs in one atomic change
    (``Store.atomic``), so an error in a later section (a bulk query naming a phone the store does not
    have, a setting a phone's own contradicts) leaves the store exactly as it was, sections before it
    included, and no strings file of a bulk item is written.

    ``strings_file``: every authentication string the file generates (its phones, templates and bulk
    items) is written there, a 0600 CSV, inside the same change: put in place once it commits, and a
    file that cannot be written fails the whole apply (``strings_field`` names it in the error). The
    store keeps only a keyed hash of a string, so a string written nowhere would be lost for good."""
    report = Report()
    with store.atomic():
        for section in SECTIONS:
            section(store, document, False, report, options)
        if strings_file and report.generated_strings:
            bulk.write_strings_file(store, strings_file, generated_list(report), field=strings_field)
    return report


def generated_list(report: Report) -> list[dict[str, str]]:
    """The generated authentication strings of a report, by device name."""
    return [{"device_name": name, "authentication_string": value}
            for name, value in sorted(report.generated_strings.items())]


def summary(report: Report) -> dict[str, Any]:
    """What ``plan`` and ``apply`` report, in the shape the CLI's ``--json`` and ``capf_deployment`` return."""
    return {
        "changed": report.changed,
        "warnings": list(report.warnings),
        "changes": [{"section": c.section, "item": c.item, "action": c.action, "details": list(c.details)}
                    for c in report.changes],
        "counts": report.counts,
    }


def converge(store: Store, path: str, options: Options = Options(), *, check_mode: bool = False,
             strings_file: str | None = None, field: str = "src") -> dict[str, Any]:
    """The declarative file at ``path`` applied (or, in check mode, planned: nothing written, the
    strings file neither): ``summary`` plus ``diff_text`` (``render``'s text, empty when nothing changes),
    the generated ``authentication_strings`` when no ``strings_file`` took them (in check mode none:
    a plan generates no string), and ``strings_file`` when one was written. A file that cannot be read
    or is not a valid declarative file fails naming ``field``, the option that gave ``path``."""
    try:
        loaded = load_document(path)
    except CapfError as exc:
        raise InputFileError(field, str(exc)) from None
    report = plan(store, loaded, options) if check_mode else apply(store, loaded, options, strings_file=strings_file)
    result = summary(report)
    result["diff_text"] = render(report) if report.changed else ""
    written = bool(strings_file and report.generated_strings and not check_mode)
    result["strings_file"] = strings_file if written else None
    result["authentication_strings"] = [] if check_mode or written else generated_list(report)
    return result


def render(report: Report) -> str:
    """A readable diff; exactly ``no changes`` when there is nothing to do."""
    if not report.changed:
        return "no changes"
    symbols = {"create": "+", "update": "~", "delete": "-", "run": "*"}
    lines = []
    for change in report.changes:
        lines.append(f"{symbols[change.action]} {change.section} {change.item}")
        lines += [f"    {detail}" for detail in change.details]
    summary: dict[str, int] = {}
    for change in report.changes:
        summary[change.action] = summary.get(change.action, 0) + 1
    lines.append("")
    lines.append("changes: " + ", ".join(f"{count} to {action}" for action, count in sorted(summary.items())))
    return "\n".join(lines)
