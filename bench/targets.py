# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The targets of the benchmark issue, each judged from a figure of the same run.

A target whose figure was not produced is ``not measured`` (never passed): either its benchmark
does not exist yet, or it was not selected, or the run used smoke sizes the target is not about.
"""

from __future__ import annotations

import dataclasses
import operator

from .harness import producer

PASS, FAIL, NOT_MEASURED = "pass", "fail", "not measured"
_COMPARE = {"<": operator.lt, "<=": operator.le, ">=": operator.ge, ">": operator.gt}


@dataclasses.dataclass(frozen=True)
class Target:
    id: str
    text: str
    figure: str
    comparison: str
    threshold: float
    unit: str
    phones: int | None = None  # the store size the target is stated for

    def judge(self, figures: dict, smoke: bool = False) -> dict:
        result = {"id": self.id, "target": self.text, "figure": self.figure,
                  "threshold": f"{self.comparison} {self.threshold:g} {self.unit}".strip(), "measured": None}
        found = figures.get(self.figure)
        if found is None:
            why = ("its benchmark is not built yet" if producer(self.figure) is None
                   else "its benchmark was not part of this run")
            return dict(result, status=NOT_MEASURED, note=why)
        result["measured"] = found["value"]
        if self.phones is not None and found.get("details", {}).get("phones") != self.phones:
            size = found.get("details", {}).get("phones")
            return dict(result, status=NOT_MEASURED, note=f"measured over {size} phones, not {self.phones:,}")
        if smoke:
            return dict(result, status=NOT_MEASURED, note="smoke sizes: the run only proves the benchmark works")
        passed = _COMPARE[self.comparison](found["value"], self.threshold)
        return dict(result, status=PASS if passed else FAIL, note="")


TARGETS = (
    Target("enrolment.concurrency50", "enrolment at concurrency 50 reaches 70 % of the per-core ceiling per core used",
           "enrol.c50_ceiling_ratio", ">=", 0.70, "", phones=10_000),
    Target("enrolment.concurrency500", "no failed enrolment at concurrency 500", "enrol.c500_failures", "<=", 0,
           "failures", phones=10_000),
    # 1.9 ms of server CPU where a handshake and an LSC signature cost 1.32 ms: the same ratio on any machine.
    Target("enrolment.cpu_per_enrolment", "server CPU per RSA-2048 enrolment at concurrency 50 at most 1.9 ms where a "
           "TLS handshake and an LSC build-and-sign cost 1.32 ms (1.9/1.32 times their cost in this run)",
           "enrol.c50_cpu_over_unavoidable_rsa2048", "<=", 1.9 / 1.32, "x", phones=10_000),
    Target("enrolment.latency500", "p99 latency under 2 s at concurrency 500, one server process",
           "enrol.c500_p99_seconds", "<", 2, "s", phones=10_000),
    Target("workers.speedup", "two workers give at least 1.8x one worker (--cpu-affinity, one simulator process on "
           "each worker's core)", "workers.speedup_1_to_2", ">=", 1.8, "x"),
    Target("workers.cpu_efficiency", "with default settings and the simulator sharing the cores, enrolments per "
           "server CPU-second with two workers at least 0.9 of one worker", "workers.cpu_efficiency_2_over_1", ">=",
           0.9, ""),
    Target("bulk.first_run", "capf_bulk_update over 40,000 phones, first run (changes all), including Ansible start-up",
           "fleet.bulk_update_first_run", "<", 15, "s", phones=40_000),
    Target("bulk.noop_run", "capf_bulk_update over 40,000 phones, no-op re-run, including Ansible start-up",
           "fleet.bulk_update_noop_run", "<", 5, "s", phones=40_000),
    Target("bulk.vs_loop", "capf_bulk_update at least 100x faster per phone than capf_phone in a loop",
           "fleet.bulk_vs_loop_per_phone", ">=", 100, "x", phones=40_000),
    Target("reports.pending_csrs", "list pending CSRs over 100,000 phones", "store.pending_csrs", "<", 1, "s",
           phones=100_000),
    Target("reports.stale_lscs", "list stale LSCs over 100,000 phones", "store.stale_lscs", "<", 1, "s",
           phones=100_000),
    Target("reports.phones_by_lsc_expiry", "list phones by LSC expiry over 100,000 phones",
           "store.phones_by_lsc_expiry", "<", 1, "s", phones=100_000),
    Target("reports.html_report", "write the HTML CAPF report of 100,000 phones", "reports.html_report", "<", 5, "s",
           phones=100_000),
    Target("memory.idle_connection", "an idle unauthenticated connection costs the server at most 128 KiB, wherever "
           "the client stops before its first CAPF message", "hostile.idle_connection_bytes", "<=", 128 * 1024, "bytes"),
    Target("directory.sync", "an LDAP directory of 20,000 entries syncs in well under a minute (first sync)",
           "directory.first_sync", "<", 30, "s", phones=20_000),
)


def judge_all(figures: dict, smoke: bool = False) -> list[dict]:
    return [target.judge(figures, smoke) for target in TARGETS]
