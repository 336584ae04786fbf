# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bulk administration: query phones, apply CAPF settings to all of them, or insert from CSV.

A job is one transaction however many phones it touches: one query for the match, then the one
converge path of phone settings (``phone_config.converge_many``: the per-phone plan in Python, one
statement for all the updates, one for the inserts and one for the audit events). A job with
``run_at`` in the future is stored for the scheduler instead (see ``scheduler``).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import io
from typing import Any

from . import csv_import, phone_query, scheduler
from .errors import CapfError, ValidationError
from .phone_config import AuthRequest, PhoneRequest, check_settings, converge_many, settings_options
from .results import converged
from .store import Store, audit
from .store import phones as phone_records
from .vocabulary import (DIFF_FORMATS, DIFF_SUMMARY_PHONES, DIFF_SUMMARY_THRESHOLD, check_bool, check_choice, parse_utc,
                         parse_utc_exact, utc_now)

JOB_KIND = "bulk_update"


def build_spec(*, query=None, settings=None, generate_authentication_strings=False,
               regenerate_authentication_strings=False, authentication_string_length=8, reissue=False,
               apply_config=False, strings_file=None, has_shared_string=False) -> dict[str, Any]:
    """Validate a job's options and return its canonical, secret-free spec."""
    generate = check_bool("generate_authentication_strings", generate_authentication_strings)
    regenerate = check_bool("regenerate_authentication_strings", regenerate_authentication_strings)
    if has_shared_string and (generate or regenerate):
        raise ValidationError("authentication_string",
                              "cannot be combined with generate_authentication_strings", show_value=False)
    if regenerate and not generate:
        raise ValidationError("regenerate_authentication_strings", "needs generate_authentication_strings: true",
                              regenerate)
    columns = check_settings(settings, "set.")
    AuthRequest(length=authentication_string_length).validated()
    return {
        "query": None if query is None else phone_query.check_query(query),
        "set": settings_options(columns),
        "generate_authentication_strings": generate,
        "regenerate_authentication_strings": regenerate,
        "authentication_string_length": int(authentication_string_length),
        "reissue": check_bool("reissue", reissue),
        "apply_config": check_bool("apply_config", apply_config),
        "strings_file": strings_file or None,
    }


def write_strings_file(store: Store, path: str, generated: list[dict], field: str = "strings_file") -> None:
    """Hand generated authentication strings out once: a CSV of ``device_name`` and
    ``authentication_string`` at ``path``, mode 0600, written atomically (``Store.write_file``: in an
    atomic change of the store, put in place only once it commits). A file that cannot be written
    fails the job (its transaction is not committed) with the reason, named as ``field``."""
    try:
        store.write_file(path, _strings_csv(generated))
    except OSError as exc:
        raise CapfError(f"{field}: cannot write {path}: {exc.strerror or exc}") from None


def _strings_csv(generated: list[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["device_name", "authentication_string"])
    for item in generated:
        writer.writerow([item["device_name"], item["authentication_string"]])
    return buffer.getvalue().encode("ascii")


def _changed_fields(plan) -> tuple[dict, dict]:
    before, after = plan.before, plan.after
    if before is None:
        return None, after
    keys = [k for k in after if after[k] != before.get(k)]
    return {k: before[k] for k in keys}, {k: after[k] for k in keys}


def diff_view(before: dict, after: dict, diff_format: str = "full") -> tuple[dict, dict]:
    """The diff of a job's phones (``{"phones": {name: changed fields}}`` before and after) as
    ``diff_format`` asks: ``full`` keeps every phone; ``summary`` keeps the first
    ``DIFF_SUMMARY_PHONES`` phones (by name) and adds, after, how many phones changed or were
    inserted and how many phones each setting changed on; ``auto`` is ``full`` up to
    ``DIFF_SUMMARY_THRESHOLD`` changed phones and ``summary`` above."""
    diff_format = check_choice("diff_format", diff_format, DIFF_FORMATS)
    phones_before, phones_after = before["phones"], after["phones"]
    if diff_format == "full" or diff_format == "auto" and len(phones_after) <= DIFF_SUMMARY_THRESHOLD:
        return before, after
    settings: collections.Counter = collections.Counter()
    for name, fields in phones_after.items():
        if phones_before.get(name) is not None:
            settings.update(fields.keys())
    shown = sorted(phones_after)[:DIFF_SUMMARY_PHONES]
    inserted = sum(1 for name in phones_after if phones_before.get(name) is None)
    summary = {"phones_changed": len(phones_after) - inserted, "phones_inserted": inserted, "phones_shown": len(shown),
               "changed_settings": dict(sorted(settings.items())),
               "full_diff": "set diff_format: full to see every phone"}
    return ({"phones": {name: phones_before[name] for name in shown}},
            {"phones": {name: phones_after[name] for name in shown}, "summary": summary})


def run(store: Store, spec: dict, *, shared_string: str | None = None, csv_rows=None,
        fail_on_unmatched: bool = False, check_mode: bool = False, diff_format: str = "full",
        tx=None, now=None) -> dict[str, Any]:
    """Run a job now, in one transaction: its own, or ``tx`` (a write transaction of the caller's: the
    scheduler claims, runs and records a job in one). ``csv_rows`` come from ``csv_import.parse``.
    The query matches the phones' LSC and operation statuses as they are at ``now`` (default: the current
    time), and each phone's change is planned at that moment too.
    Names in ``query.names`` that are not in the store are returned (``unmatched``) with a warning,
    or with ``fail_on_unmatched`` fail the job before anything is written."""
    if spec["query"] is None and csv_rows is None:
        raise ValidationError("query", "is required (or csv_file to insert phones)")
    diff_format = check_choice("diff_format", diff_format, DIFF_FORMATS)
    wanted = check_settings(spec["set"], "set.")
    if shared_string is not None:
        base_auth = AuthRequest(literal=shared_string, length=spec["authentication_string_length"])
    else:
        base_auth = AuthRequest(generate=spec["generate_authentication_strings"],
                                regenerate=spec["regenerate_authentication_strings"],
                                length=spec["authentication_string_length"])
    base_auth.validated()
    secret = store.secret()
    with contextlib.nullcontext(tx) if tx is not None else store.transaction(write=not check_mode) as tx:
        work: list[tuple[dict | None, PhoneRequest]] = []
        unmatched, warnings = [], []
        if spec["query"] is not None:
            for row in phone_query.select(tx, spec["query"], with_lsc=False, now=now, clock_skew=store.clock_skew):
                work.append((row, PhoneRequest(row["name"], wanted, base_auth, f"phone {row['name']}: ")))
            found = {request.name for _row, request in work}
            unmatched, warnings = phone_query.check_unmatched(
                tx, [name for name in spec["query"].get("names") or () if name not in found], "query.names",
                fail=fail_on_unmatched)
        if csv_rows is not None:
            existing = phone_records.by_name(tx, [item.name for item in csv_rows])
            for item in csv_rows:
                work.append((existing.get(item.name), PhoneRequest(item.name, item.settings, item.auth,
                                                                   f"phone {item.name}: ")))
        # Planned at the moment the query matched at: each phone's operation as the query saw it.
        plans = converge_many(tx, store.actor, secret, work, via="bulk" if csv_rows is None else "csv",
                              reissue=spec["reissue"], check_mode=check_mode, clock_skew=store.clock_skew, now=now)
        generated = [{"device_name": plan.name, "authentication_string": plan.generated}
                     for plan in plans if plan.generated is not None]
        updates = [plan for plan in plans if plan.exists and plan.changes]
        inserts = [plan for plan in plans if not plan.exists]
        counts = {
            "matched": sum(1 for plan in plans if plan.exists),
            "changed": len(updates),
            "unchanged": sum(1 for plan in plans if plan.exists and not plan.changes),
            "inserted": len(inserts),
        }
        if not check_mode and (updates or inserts):
            if generated and spec["strings_file"] and not store.rehearsing:
                write_strings_file(store, spec["strings_file"], generated)
            # The job's counts, as it returns them (a phone a CSV inserts is not one the job matched).
            audit.record(tx, store.actor, "bulk.apply", JOB_KIND, **counts, apply_config=spec["apply_config"],
                         generated=len(generated), query=spec["query"])
    before, after = {}, {}
    for plan in plans:
        if plan.changed:
            before[plan.name], after[plan.name] = _changed_fields(plan)
    before, after = diff_view({"phones": before}, {"phones": after}, diff_format)
    return converged(bool(updates or inserts), before, after, counts=counts,
                     authentication_strings=generated, strings_file=spec["strings_file"] if generated else None,
                     apply_config=spec["apply_config"], job=None, unmatched=unmatched, warnings=warnings)


def converge(store: Store, *, query=None, settings=None, authentication_string: str | None = None,
             generate_authentication_strings=False, regenerate_authentication_strings=False,
             authentication_string_length=8, reissue=False, apply_config=False, csv_file: str | None = None,
             csv_content: str | None = None, strings_file: str | None = None, run_at=None, now=None,
             fail_on_unmatched=False, check_mode: bool = False, diff_format: str = "full") -> dict[str, Any]:
    """Run a bulk job now, or store it for the scheduler when ``run_at`` is in the future (after ``now``,
    default: the current time, which is also the moment whose LSC statuses a job run now matches).
    ``diff_format`` shapes the returned before/after (see ``diff_view``).
    ``query.names`` not in the store are returned as ``unmatched`` with a warning (for a scheduled
    job: not in the store when it is submitted); ``fail_on_unmatched`` fails instead."""
    fail_on_unmatched = check_bool("fail_on_unmatched", fail_on_unmatched)
    diff_format = check_choice("diff_format", diff_format, DIFF_FORMATS)
    csv_given = csv_file is not None or csv_content is not None
    if csv_given and (query is not None or settings):
        raise ValidationError("csv_file", "cannot be combined with query or set (the CSV carries the settings)")
    if csv_file is not None and csv_content is not None:
        raise ValidationError("csv_file", "cannot be combined with csv_content")
    spec = build_spec(query=query, settings=settings, generate_authentication_strings=generate_authentication_strings,
                      regenerate_authentication_strings=regenerate_authentication_strings,
                      authentication_string_length=authentication_string_length, reissue=reissue,
                      apply_config=apply_config, strings_file=strings_file,
                      has_shared_string=authentication_string is not None)
    if csv_given:
        # The CSV carries each phone's string (digits, or generate); a job-wide one would go unused.
        unused = [option for option, given in (("authentication_string", authentication_string is not None),
                                               ("generate_authentication_strings",
                                                spec["generate_authentication_strings"])) if given]
        if unused:
            raise ValidationError("csv_file", "cannot be combined with %s (the CSV's authentication_string column "
                                  "carries each phone's string: digits, or generate)" % unused[0])
    if authentication_string is not None:
        AuthRequest(literal=authentication_string).validated()
    moment = parse_utc_exact(run_at, "run_at")
    if moment is not None and moment > (parse_utc(now, "now") if now is not None else utc_now()):
        if csv_given:
            raise ValidationError("run_at", "cannot be used with csv_file; CSV imports run now")
        if spec["query"] is None:
            raise ValidationError("query", "is required")
        if spec["generate_authentication_strings"] and not spec["strings_file"]:
            raise ValidationError("strings_file", "is required when a scheduled job generates authentication "
                                                  "strings (nobody would see them otherwise)")
        with store.read() as tx:
            unmatched, warnings = phone_query.check_unmatched(tx, spec["query"].get("names"), "query.names",
                                                              fail=fail_on_unmatched)
        result = scheduler.schedule(store, JOB_KIND, spec, moment, secret_value=authentication_string,
                                    check_mode=check_mode)
        return dict(result, unmatched=unmatched, warnings=warnings)
    csv_rows = None
    if csv_given:
        csv_rows = (csv_import.read(csv_file, spec["authentication_string_length"]) if csv_file is not None
                    else csv_import.parse(csv_content, "csv_content", spec["authentication_string_length"]))
    return run(store, spec, shared_string=authentication_string, csv_rows=csv_rows,
               fail_on_unmatched=fail_on_unmatched, check_mode=check_mode, diff_format=diff_format, now=now)
