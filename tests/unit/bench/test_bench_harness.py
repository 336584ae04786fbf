"""The benchmark harness's own logic: selection, target judgement, docs rendering, the fleet generator."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import cli, fleet, report, targets  # noqa: E402
from _opencapf import reports as capf_reports  # noqa: E402  (bench puts the engine on sys.path)
from _opencapf.store import certificates as capf_certificates, csrs as capf_csrs  # noqa: E402


def _figure(value, **details):
    return {"value": value, "unit": "s", "description": "d", "command": "c", "baseline": None, "details": details}


def test_a_derived_figure_selects_the_benchmarks_it_needs():
    benches, derived = cli.select(["limits.enrolment_ceiling_rsa2048"])
    assert benches == ["limits.lsc_build_rsa2048", "limits.tls_handshake_rsa2048", "limits.store_write"]
    assert derived == ["limits.enrolment_ceiling_rsa2048"]
    assert cli.select(["store.stale_lscs"]) == (["store.reports"], [])
    assert cli.select(["limits.rsa2048_sign,limits.ec256_sign"])[0] == ["limits.rsa2048_sign", "limits.ec256_sign"]
    everything = cli.select([])
    assert "store.reports" in everything[0] and "limits.enrolment_ceiling_ec256" in everything[1]
    with pytest.raises(SystemExit, match="limits.nope"):
        cli.select(["limits.nope"])


@pytest.mark.parametrize("value, phones, status", [
    (0.4, 100_000, "pass"), (1.2, 100_000, "fail"), (0.001, 300, "not measured"),
])
def test_report_targets_hold_only_at_full_size(value, phones, status):
    judged = {t["id"]: t for t in targets.judge_all({"store.stale_lscs": _figure(value, phones=phones)})}
    assert judged["reports.stale_lscs"]["status"] == status
    assert judged["reports.stale_lscs"]["measured"] == value
    assert judged["reports.pending_csrs"]["status"] == "not measured"
    assert judged["reports.pending_csrs"]["note"] == "its benchmark was not part of this run"


def test_targets_without_a_benchmark_are_never_passed():
    judged = targets.judge_all({"fleet.bulk_update_first_run": _figure(3.0, phones=40_000),
                                "fleet.bulk_update_noop_run": _figure(1.0, phones=40)})
    by_id = {t["id"]: t for t in judged}
    assert by_id["bulk.first_run"]["status"] == "pass"  # a figure under that name is judged
    assert by_id["bulk.noop_run"]["status"] == "not measured"  # at smoke size
    assert by_id["bulk.vs_loop"]["note"] == "its benchmark was not part of this run"
    for name in ("enrolment.concurrency50", "enrolment.concurrency500", "workers.speedup"):
        assert by_id[name]["status"] == "not measured"
        assert by_id[name]["note"] == "its benchmark was not part of this run"


def test_smoke_figures_never_pass_a_target():
    figures = {"workers.speedup_1_to_2": _figure(1.9), "enrol.c500_failures": _figure(0, phones=10_000)}
    full = {t["id"]: t for t in targets.judge_all(figures)}
    smoke = {t["id"]: t for t in targets.judge_all(figures, smoke=True)}
    assert full["workers.speedup"]["status"] == "pass" and full["enrolment.concurrency500"]["status"] == "pass"
    assert smoke["workers.speedup"]["status"] == "not measured" and "smoke" in smoke["workers.speedup"]["note"]
    assert smoke["enrolment.concurrency500"]["status"] == "not measured"


def _results(value):
    return {
        "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z", "command": "scripts/bench",
        "smoke": False,
        "machine": {"cpu": {"model": "CPU X"}, "cores_usable": 2, "cores_online": 2, "memory_gib": 4.0, "os": "Linux",
                    "python": "CPython 3.13", "openssl": "OpenSSL 3", "cryptography": "50", "sqlite": "3.40",
                    "cryptography_openssl": "OpenSSL 4", "scratch_filesystem": "ext4", "load_average": None},
        "figures": {"limits.rsa2048_sign": dict(_figure(value, clock="cpu", rounds_per_cpu_second=[5000.0, 6000.0]),
                                                unit="signatures/s", command="scripts/bench --only limits.rsa2048_sign")},
        "failures": {}, "targets": targets.judge_all({}),
    }


def test_docs_keep_the_written_text_and_replace_only_the_results(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nHow to run.\n")
    report.write_docs(str(path), _results(1234.0), "bench-results/latest.json")
    report.write_docs(str(path), _results(5678.0), "bench-results/latest.json")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nHow to run.\n")
    assert text.count(report.DOCS_START) == 1 and text.count(report.DOCS_END) == 1
    assert "| `limits.rsa2048_sign` | 5,678 | signatures/s | 5,000 to 6,000 |" in text and "1,234" not in text
    assert "| CPU | CPU X |" in text
    assert "not measured: its benchmark was not part of this run" in text
    assert "1,234" not in report.table(_results(5678.0)) and "5,678" in report.table(_results(5678.0))


def test_the_fleet_generator_writes_what_it_reports(ca_store):
    generated = fleet.generate(ca_store, 2000, seed=3)
    second = fleet.generate(ca_store, 10, seed=4, first_mac=0x00C0D0000000)
    with ca_store.read() as tx:
        assert tx.scalar("SELECT count(*) FROM phones") == 2010
        assert tx.scalar("SELECT count(DISTINCT name) FROM phones") == 2010
        counts = {f"{r['kind']}:{r['status']}": r["n"] for r in tx.query(
            "SELECT kind, status, count(*) AS n FROM certificates WHERE phone_id <= 2000 GROUP BY kind, status")}
        csrs = {r["status"]: r["n"] for r in tx.query(
            "SELECT status, count(*) AS n FROM csrs WHERE phone_id <= 2000 GROUP BY status")}
        pending = capf_csrs.awaiting_signature(tx)
        stale = capf_certificates.stale_lscs(tx)
        by_expiry = capf_reports.phone_rows(tx, None, order="lsc_expiry")
        orphans = tx.scalar("SELECT count(*) FROM csrs r LEFT JOIN certificates c ON c.id = r.certificate_id "
                            "WHERE r.status = 'issued' AND c.id IS NULL")
    assert counts == generated.certificates and csrs == generated.csrs
    assert {"lsc:installed", "lsc:stale", "lsc:expired", "lsc:revoked", "mic:installed"} <= set(counts)
    assert {"pending", "submitted", "issued"} <= set(csrs)
    assert orphans == 0
    assert generated.first_name == "SEP00A0B0000000" and second.last_name == "SEP00C0D0000009"
    expiries = [row["lsc"]["not_after"] for row in by_expiry if row["lsc"]]
    assert len(by_expiry) == 2010 and expiries == sorted(expiries)
    assert len(pending) == csrs["pending"] + csrs["submitted"] + second.csrs.get("pending", 0) + second.csrs.get(
        "submitted", 0)
    assert len(stale) == counts["lsc:stale"] + second.certificates.get("lsc:stale", 0)


def test_batches_give_every_call_a_fresh_input_and_count_them():
    from bench.harness import batches, inputs_needed, rate

    seen = []
    value, details = batches(seen.append, count=5, rounds=2, warmup=1)
    assert seen == list(range(inputs_needed(5, 2, warmup=1))) == list(range(11))
    assert value > 0 and details["operations"] == 10 and details["clock"] == "wall"
    assert len(details["rounds_per_wall_second"]) == len(details["rounds_per_cpu_second"]) == 2
    calls = []
    value, details = rate(lambda: calls.append(sum(range(2000))), seconds=0.01, rounds=2, warmup=2, clock="cpu")
    per_cpu_second = details["rounds_per_cpu_second"]
    assert details["clock"] == "cpu" and min(per_cpu_second) <= value <= max(per_cpu_second)
    assert len(calls) == details["operations"] + 2
    with pytest.raises(ValueError, match="clock"):
        rate(lambda: None, seconds=0.001, rounds=1, clock="sundial")


def test_timed_frees_a_rounds_result_before_timing_the_next():
    import weakref

    from bench.harness import timed

    class Listing(list):
        pass

    results, alive_at_start = [], []

    def listing():
        alive_at_start.append(any(result() is not None for result in results))
        result = Listing(range(3))
        results.append(weakref.ref(result))
        return result

    seconds, details = timed(listing, rounds=3)
    assert alive_at_start == [False, False, False]
    assert details["result"] == [0, 1, 2] and len(details["cpu_seconds"]) == 3 and seconds >= 0


def _footprint(store):
    with store.read() as tx:
        return {
            "phones": tx.scalar("SELECT count(*) FROM phones"),
            "lscs": tx.query("SELECT kind, status, issuer, length(pem) > 500 AS has_pem, installed_at FROM certificates"),
            "actions": [row["action"] for row in tx.query("SELECT action FROM audit_events WHERE action != "
                                                          "'capf_certificate.generated' ORDER BY id")],
        }


def test_the_store_write_benchmark_writes_what_an_issuance_writes(tmp_path):
    """limits.store_write times ca.lsc.issue's transaction without the signature; it must not drift from it."""
    from _opencapf.ca import authority, keys, lsc
    from _opencapf.store import open_store

    from bench.limits import _record_issuance

    public_key = keys.generate("ec256").public_key()
    footprints = []
    for name, write in (("issue", None), ("bench", _record_issuance)):
        store = open_store(str(tmp_path / name / "capf.db"), actor="test")
        authority.ensure(store, key_type="ec256")
        signer = authority.signer(store)
        if write is None:
            lsc.issue(store, "SEP00000000AAAA", public_key)
        else:
            write(store, "SEP00000000AAAA", lsc.build_lsc(signer, "SEP00000000AAAA", public_key, 365, 77), public_key,
                  signer)
        footprints.append(_footprint(store))
        store.close()
    assert footprints[0] == footprints[1]
    assert footprints[0]["phones"] == 1 and footprints[0]["actions"] == ["phone.create", "certificate.issued"]


def test_a_figure_derived_from_a_derived_figure_pulls_in_everything(monkeypatch):
    from bench import harness

    monkeypatch.setitem(harness.DERIVED, "limits.test_ratio", harness.Derived(
        "limits.test_ratio", "limits", ("limits.enrolment_ceiling_ec256", "limits.ec256_sign"),
        lambda figures: harness.Figure(figures["limits.enrolment_ceiling_ec256"].value
                                       / figures["limits.ec256_sign"].value, "", "ratio")))
    benches, derived = cli.select(["limits.test_ratio"])
    assert benches == ["limits.ec256_sign", "limits.lsc_build_ec256", "limits.tls_handshake_ec256",
                       "limits.store_write"]
    assert sorted(derived) == ["limits.enrolment_ceiling_ec256", "limits.test_ratio"]
    figures = {name: _figure(value) for name, value in (
        ("limits.ec256_sign", 1000.0), ("limits.lsc_build_ec256", 500.0), ("limits.tls_handshake_ec256", 250.0),
        ("limits.store_write", 1000.0))}
    failures = {}
    cli._derive(["limits.test_ratio", "limits.enrolment_ceiling_ec256"], figures, failures, smoke=False)
    assert failures == {}
    assert abs(figures["limits.enrolment_ceiling_ec256"]["value"] - 1 / (0.004 + 0.002 + 0.001)) < 1e-6
    assert abs(figures["limits.test_ratio"]["value"] - figures["limits.enrolment_ceiling_ec256"]["value"] / 1000) < 1e-9
    del figures["limits.store_write"], figures["limits.enrolment_ceiling_ec256"], figures["limits.test_ratio"]
    cli._derive(["limits.test_ratio", "limits.enrolment_ceiling_ec256"], figures, failures, smoke=False)
    assert sorted(failures) == ["limits.enrolment_ceiling_ec256", "limits.test_ratio"]


def test_the_judged_runs_are_the_median_of_their_sittings(monkeypatch, tmp_path):
    """Each sitting of a judged run has the ceiling measured before and after it (shared with its
    neighbours); the run reported is the sitting of median ratio to its ceiling, and both judged
    figures are medians over the sittings, whatever order the sittings came in."""
    from bench import enrolment, limits
    from bench.harness import Context, Figure

    ceilings = iter([(0.6, 0.1, 0.3), (0.8, 0.1, 0.3), (0.6, 0.2, 0.2), (0.5, 0.1, 0.2)])

    def ceiling_now(_ctx, _key_type):
        handshake, sign, write = next(ceilings)
        parts = {"handshake_ms": handshake, "lsc_sign_ms": sign, "store_write_ms": write}
        return Figure(1.0, "/s", "ceiling", None, parts)

    monkeypatch.setattr(limits, "ceiling_now", ceiling_now)
    cpu_ms = iter([1.2, 2.0, 1.0])

    def run():
        cpu = next(cpu_ms)
        return {"enrolments": 100, "rate": 500.0, "server_busy_cores": round(500.0 * cpu / 1000, 4),
                "server_cpu_ms_per_enrolment": cpu, "failures": 0, "p99_ms": 50.0}

    ctx = Context(smoke=False, work_dir=str(tmp_path), cores=(0, 1))
    result = enrolment._judged_sittings(ctx, "rsa2048", run)
    sittings = result["sittings"]
    assert [s["ceiling_beside"]["handshake_ms"] for s in sittings] == [0.7, 0.7, 0.55]  # adjacent ceilings' mean
    ratios = [s["ratio_to_ceiling"] for s in sittings]
    # ceiling CPU per enrolment over the server's: (0.7+0.1+0.3)/1.2, (0.7+0.15+0.25)/2.0, (0.55+0.15+0.2)/1.0
    assert ratios == [round(1.1 / 1.2, 4), round(1.1 / 2.0, 4), round(0.9 / 1.0, 4)]
    assert result["sitting_chosen"] == 2 and result["server_cpu_ms_per_enrolment"] == 1.0  # the median ratio, 0.9
    assert result["ceiling_beside"] == sittings[2]["ceiling_beside"]

    figure = Figure(result["rate"], "enrolments/s", "run", None, {**result, "cores_given": 1})
    section_1 = Figure(1000 / 1.1, "/s", "ceiling", None, {"handshake_ms": 0.7, "lsc_sign_ms": 0.1, "store_write_ms": 0.3})
    figures = {"enrol.rsa2048_c50_n10000": figure, "enrol.ec256_c50_n10000": figure,
               "limits.enrolment_ceiling_rsa2048": section_1, "limits.enrolment_ceiling_ec256": section_1}
    assert enrolment.c50_ceiling_ratio(figures).value == 0.9
    assert enrolment.c50_ceiling_ratio(figures).details["by_key_type"]["rsa2048"]["sittings_ratios"] == ratios
    cpu = enrolment.c50_cpu_over_unavoidable(figures)
    # 1.2/0.8 = 1.5, 2.0/0.85 = 2.35, 1.0/0.7 = 1.43: the median is the first sitting's
    assert cpu.details["sitting"] == 0 and cpu.value == pytest.approx(1.2 / 0.8)
    assert cpu.details["sittings"] == [round(1.2 / 0.8, 4), round(2.0 / 0.85, 4), round(1.0 / 0.7, 4)]
    assert enrolment._median_index([3.0, 1.0, 2.0, 4.0]) == 2  # the lower middle of an even number


def test_a_missed_cpu_target_is_profiled_by_its_parts():
    """The profile of a missed `enrol.c50_cpu_over_unavoidable_rsa2048` names the server's CPU, the
    handshake and signature in it and what is left, and the sittings (not wall or CPU rounds it has not)."""
    details = {"server_cpu_ms_per_enrolment": 2.33, "handshake_ms": 0.83, "lsc_sign_ms": 0.43, "unavoidable_ms": 1.26,
               "unavoidable_share": 0.5408, "avoidable_ms": 1.07, "reference_equivalent_ms": 2.43,
               "sittings": [1.85, 1.84, 1.78], "sitting": 1}
    text = "; ".join(report._profile({}, details))
    assert "2.33 ms of server CPU per RSA-2048 enrolment" in text and "(0.83 ms)" in text and "(0.43 ms)" in text
    assert "54%" in text and "leaves 1.07 ms" in text and "[1.85, 1.84, 1.78]" in text
    assert "None" not in text
