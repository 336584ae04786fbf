# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Presenting a result file: the one table on stdout, and the results part of docs/benchmarks.md."""

from __future__ import annotations

import os

from .machine import summary

DOCS_START = "<!-- bench:results:start (written by scripts/bench --write-docs; do not edit by hand) -->"
DOCS_END = "<!-- bench:results:end -->"


def number(value) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def _versus(entry: dict) -> str:
    baseline = entry.get("baseline")
    if not baseline:
        return ""
    return f"{baseline['ratio']:.3f} x {baseline['figure']}"


def spread(entry: dict) -> str:
    """The lowest and highest round, so a reader sees how steady the figure was."""
    details = entry.get("details", {})
    rounds = details.get("rounds_seconds")
    if rounds is None and "clock" in details:
        rounds = details["rounds_per_cpu_second" if details["clock"] == "cpu" else "rounds_per_wall_second"]
    if not rounds or len(rounds) < 2:
        return ""
    return f"{number(min(rounds))} to {number(max(rounds))}"


def _target_status(target: dict) -> str:
    status = target["status"].upper() if target["status"] != "not measured" else "not measured"
    text = f"{status} ({target['threshold']})"
    return f"{text}: {target['note']}" if target.get("note") else text


def table(results: dict) -> str:
    """Figures, then targets, as one aligned text table."""
    rows = [("figure", "value", "unit", "vs baseline / target")]
    for name, entry in results["figures"].items():
        rows.append((name, number(entry["value"]), entry["unit"], _versus(entry)))
    for name, failure in results.get("failures", {}).items():
        rows.append((name, "ERROR", "", failure["error"].splitlines()[-1][:80] if failure["error"] else ""))
    for target in results["targets"]:
        rows.append((f"target {target['id']}", number(target["measured"]), "", _target_status(target)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"opencapf benchmarks ({'smoke sizes' if results['smoke'] else 'full sizes'}) on "
             f"{summary(results['machine'])}"]
    for index, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip())
        if index == 0:
            lines.append("-" * (sum(widths) + 6 + max(len(r[3]) for r in rows)))
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown(results: dict, json_path: str) -> str:
    """The generated results section of docs/benchmarks.md."""
    machine = results["machine"]
    out = [DOCS_START, "", f"Run of {results['started_at']} to {results['finished_at']} "
           f"(`{results['command']}`), from `{json_path}`.", "", "| machine | |", "|---|---|"]
    for label, value in (
        ("CPU", machine["cpu"]["model"]), ("cores usable / online", f"{machine['cores_usable']} / "
                                                                    f"{machine['cores_online']}"),
        ("memory", f"{machine['memory_gib']} GiB"), ("OS", machine["os"]), ("Python", machine["python"]),
        ("OpenSSL (Python ssl)", machine["openssl"]),
        ("cryptography", f"{machine['cryptography']} ({machine['cryptography_openssl']})"),
        ("SQLite", machine["sqlite"]), ("scratch file system", machine["scratch_filesystem"]),
    ):
        out.append(f"| {label} | {_escape(value)} |")
    out += ["", "| figure | value | unit | rounds (low to high) | vs baseline | reproduce |",
            "|---|---:|---|---|---|---|"]
    for name, entry in results["figures"].items():
        out.append(f"| `{name}` | {number(entry['value'])} | {_escape(entry['unit'])} | {spread(entry)} "
                   f"| {_escape(_versus(entry))} | `{entry['command']}` |")
    for name, failure in results.get("failures", {}).items():
        out.append(f"| `{name}` | ERROR | | | {_escape(failure['error'].splitlines()[-1] if failure['error'] else '')} "
                   f"| `{failure['command']}` |")
    out += ["", "| target | threshold | measured | status |", "|---|---|---:|---|"]
    for target in results["targets"]:
        status = target["status"] + (f": {target['note']}" if target.get("note") else "")
        out.append(f"| {_escape(target['target'])} (`{target['figure']}`) | {_escape(target['threshold'])} "
                   f"| {number(target['measured'])} | {_escape(status)} |")
    out += _notes(results)
    out += ["", DOCS_END]
    return "\n".join(out) + "\n"


def _notes(results: dict) -> list[str]:
    """Where the time goes: the ceiling's parts, the load on the machine, a profile of each missed target."""
    notes = []
    load = results["machine"].get("load_average") or {}
    if load.get("start"):
        notes.append(f"- Load average (1, 5, 15 min) at the start {load['start']}, at the end {load['end']} on "
                     f"{results['machine']['cores_online']} cores; `busy_share` in the JSON is the share of its core "
                     "a benchmark really had. Wall-clock figures suffer when it is well below 1.")
    for key_type, label in (("rsa2048", "RSA-2048"), ("ec256", "EC P-256")):
        ceiling = results["figures"].get(f"limits.enrolment_ceiling_{key_type}")
        if not ceiling:
            continue
        parts = ceiling["details"]
        shares = parts["shares"]
        note = (f"- One {label} enrolment at the ceiling: handshake {parts['handshake_ms']:.3f} ms "
                f"({shares['handshake']:.0%}), LSC build-and-sign {parts['lsc_sign_ms']:.3f} ms "
                f"({shares['lsc_sign']:.0%}), store write {parts['store_write_ms']:.3f} ms ({shares['store_write']:.0%})")
        if parts.get("ceiling_if_fsync_waits_overlap"):
            note += (f"; the store write's CPU is {parts['store_write_cpu_ms']:.3f} ms, the rest is waiting for the "
                     f"fsync: with those waits overlapped the ceiling would be "
                     f"{number(parts['ceiling_if_fsync_waits_overlap'])} enrolments/s/core")
        notes.append(note + ".")
    for target in results["targets"]:
        if target["status"] != "fail":
            continue
        profile = _profile(results["figures"], results["figures"][target["figure"]]["details"])
        notes.append(f"- Missed: {target['target']} ({target['threshold']}, measured {number(target['measured'])}). "
                     "Profile: " + ", ".join(profile) + ".")
    return [""] + notes if notes else []


def _profile(figures: dict, found: dict) -> list[str]:
    """Where a missed figure's time went, from the details its benchmark recorded."""
    if "by_key_type" in found:  # the enrolment ratio: server CPU per enrolment against the ceiling's parts
        profile = []
        for key_type, run in found["by_key_type"].items():
            line = (f"{key_type}: {number(run['rate'])} enrolments/s on {run['cores_used']} cores used, "
                    f"{run['server_cpu_ms_per_enrolment']} ms of server CPU per enrolment against "
                    f"{1000 / run['ceiling_per_core']:.2f} ms in the ceiling")
            session = figures.get(f"enrol.session_{key_type}", {}).get("details", {})
            handshake = run["ceiling_beside"]["handshake_ms"]
            if session:
                rest = run["server_cpu_ms_per_enrolment"] - session["cpu_ms_per_enrolment"] - handshake
                line += (f"; of it the session without TLS or sockets (enrol.session_{key_type}: decider, store, "
                         f"session record) takes {session['cpu_ms_per_enrolment']} ms and a handshake "
                         f"{handshake:.2f} ms, " + (
                             f"which leaves {rest:.2f} ms for the TLS driver and its event loop" if rest >= 0 else
                             "together more than the enrolment over TLS: the session alone ran minutes apart, and "
                             "the machine's speed drifts by more than the driver costs, so no split is given"))
            if len(run.get("sittings_ratios", ())) > 1:
                line += f"; its sittings gave {run['sittings_ratios']} (the median is judged)"
            profile.append(line)
        return profile
    if "one_process" in found:  # the speed-up: both runs' rates and CPU per enrolment
        profile = [f"{number(found['one_process'])} enrolments/s with one process and "
                   f"{number(found['two_processes'])} with two, server CPU per enrolment "
                   f"{found['server_cpu_ms_per_enrolment']} ms"]
        if "client_cpu_ms_per_enrolment" in found:
            profile.append(f"simulator CPU per enrolment {found['client_cpu_ms_per_enrolment']} ms (one simulator "
                           "process per core given, on the same cores)")
        two = figures.get(found.get("two_processes_figure", "workers.two_processes"), {}).get("details", {})
        if two:
            profile.append(f"with two processes the server used {two['server_busy_cores']} cores and its threads "
                           f"waited {two['server_runnable_waiting_seconds']} s for a CPU other work held")
        if "simulator_cpu_efficiency_2_over_1" in found:
            profile.append(f"the simulator's CPU per enrolment, two processes over one: "
                           f"{found['simulator_cpu_efficiency_2_over_1']} (its code is the same in both runs: what the "
                           "machine alone makes dearer when both cores run)")
        if len(found.get("sittings", ())) > 1:
            profile.append(f"the sittings gave {[sitting['speedup'] for sitting in found['sittings']]} x and server "
                           f"CPU efficiency {[sitting['cpu_efficiency_2_over_1'] for sitting in found['sittings']]}, "
                           f"the simulator's {[sitting['simulator_cpu_efficiency_2_over_1'] for sitting in found['sittings']]}"
                           f" (the median of {found['judged_by']} is judged)")
        contention = found.get("core_contention")
        if contention:
            efficiency = contention["per_core_efficiency_all_busy"]
            profile.append(f"the same fixed CPU work took {contention['cpu_seconds_alone']} s on one core alone and "
                           f"{contention['cpu_seconds_all_cores_busy']} s per core with both busy: a core did "
                           f"{efficiency} of its lone work, so no program gains more than {2 * efficiency:.2f}x here")
        return profile
    if "unavoidable_ms" in found:  # the CPU target: the server's CPU per enrolment against the ceiling's parts
        profile = [f"{found['server_cpu_ms_per_enrolment']} ms of server CPU per RSA-2048 enrolment, of which a "
                   f"handshake ({found['handshake_ms']} ms) and an LSC build-and-sign ({found['lsc_sign_ms']} ms) are "
                   f"{found['unavoidable_share']:.0%}, which leaves {found['avoidable_ms']} ms; "
                   f"{found['reference_equivalent_ms']} ms on the machine of the target (1.9 ms)"]
        if len(found.get("sittings", ())) > 1:
            profile.append(f"the sittings gave {found['sittings']} (the median is judged)")
        return profile
    profile = [f"wall seconds per round {found.get('rounds_seconds')}", f"CPU seconds {found.get('cpu_seconds')}"]
    if "sqlite_only_seconds" in found:
        profile.append(f"inside SQLite without fetching rows {found['sqlite_only_seconds']} s")
    if "query_plan" in found:
        profile.append("plan: " + "; ".join(found["query_plan"]))
    return profile


def write_docs(path: str, results: dict, json_path: str) -> None:
    """Replace the generated section of ``path`` (appending one when the file has none)."""
    section = markdown(results, json_path)
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    if DOCS_START in text and DOCS_END in text:
        head, rest = text.split(DOCS_START, 1)
        tail = rest.split(DOCS_END, 1)[1]
        text = head + section.rstrip("\n") + tail
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
