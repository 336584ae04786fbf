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
    out += ["", "| figure | value | unit | vs baseline | reproduce |", "|---|---:|---|---|---|"]
    for name, entry in results["figures"].items():
        out.append(f"| `{name}` | {number(entry['value'])} | {_escape(entry['unit'])} | {_escape(_versus(entry))} "
                   f"| `{entry['command']}` |")
    for name, failure in results.get("failures", {}).items():
        out.append(f"| `{name}` | ERROR | | {_escape(failure['error'].splitlines()[-1] if failure['error'] else '')} "
                   f"| `{failure['command']}` |")
    out += ["", "| target | threshold | measured | status |", "|---|---|---:|---|"]
    for target in results["targets"]:
        status = target["status"] + (f": {target['note']}" if target.get("note") else "")
        out.append(f"| {_escape(target['target'])} (`{target['figure']}`) | {_escape(target['threshold'])} "
                   f"| {number(target['measured'])} | {_escape(status)} |")
    ceiling = results["figures"].get("limits.enrolment_ceiling_rsa2048")
    if ceiling:
        shares = ceiling["details"]["shares"]
        out += ["", "Where one RSA-2048 enrolment's time goes at the ceiling: "
                f"handshake {shares['handshake']:.0%}, LSC signature {shares['lsc_sign']:.0%}, "
                f"store write {shares['store_write']:.0%} "
                f"({ceiling['details']['handshake_ms']:.3f} + {ceiling['details']['lsc_sign_ms']:.3f} + "
                f"{ceiling['details']['store_write_ms']:.3f} ms)."]
    out += ["", DOCS_END]
    return "\n".join(out) + "\n"


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
