"""The HTML CAPF report in a real headless Chromium: written by ``opencapf report --html`` for a
200-phone demo-like store, it loads with no console error, no exception and no network request,
its charts have marks, its table sorts on a real click, and hostile stored text runs nothing.

The screenshot is kept as a test artifact in ``tests/output/artifacts/``.
"""

from __future__ import annotations

import json
import os

from _opencapf.store import open_store
from support import report_fleet
from support.chromium import Browser
from support.tools import ROOT, run_cli

ARTIFACTS = os.path.join(ROOT, "tests", "output", "artifacts")
SCREENSHOT = os.path.join(ARTIFACTS, "capf-report.png")
CHARTS = ("chart-expiries", "chart-statuses", "chart-modes", "chart-pools", "chart-lsc-statuses", "chart-failures")


def _complaints(page) -> list[dict]:
    """What means the page complained: uncaught exceptions, console errors and warnings, and browser
    log entries at error or warning level (a Content-Security-Policy violation is one)."""
    return (page.named("Runtime.exceptionThrown")
            + [event for event in page.named("Runtime.consoleAPICalled")
               if event["params"]["type"] in ("error", "warning", "assert")]
            + [event for event in page.named("Log.entryAdded")
               if event["params"]["entry"]["level"] in ("error", "warning")])


def _column(page, index: int) -> list[str]:
    return page.evaluate(f"Array.prototype.map.call(document.querySelectorAll('#devices tbody tr'), "
                         f"function (row) {{ return row.cells[{index}].textContent; }})")


def test_report_page_in_headless_chromium(tmp_path):
    store_path = str(tmp_path / "state" / "capf.db")
    with open_store(store_path, actor="test") as store:
        made = report_fleet.make(store)
    report = tmp_path / "capf-report.html"
    written = run_cli("--store", store_path, "report", "--html", str(report), check=True)
    assert written.stdout.strip() == f"HTML report: {report}"
    url = report.as_uri()
    with Browser() as browser:
        page = browser.page()
        for domain in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            page.call(domain)
        page.call("Page.navigate", url=url)
        page.wait_for("Page.loadEventFired")
        assert page.evaluate("document.readyState") == "complete"

        # Nothing loaded but the page itself, and nothing complained.
        requests = [event["params"]["request"]["url"] for event in page.named("Network.requestWillBeSent")]
        assert requests == [url]
        assert not _complaints(page), _complaints(page)
        assert page.evaluate("typeof window.__pwned") == "undefined"

        # Every chart is there and has marks with a size.
        marks = page.evaluate("(function () { var found = {}; document.querySelectorAll('svg.chart').forEach("
                              "function (svg) { found[svg.id] = Array.prototype.filter.call("
                              "svg.querySelectorAll('.mark rect'), function (rect) {"
                              " var box = rect.getBoundingClientRect(); return box.width > 0 && box.height > 0; "
                              "}).length; }); return found; }())")
        assert set(marks) == set(CHARTS) and all(marks[chart] > 0 for chart in CHARTS), marks
        assert marks["chart-failures"] >= len(set(made["failed"].values()))

        # The table holds every phone; a click on a header sorts by that column, a second click reverses.
        names = _column(page, 0)
        assert len(names) == 200 and names == sorted(names)
        assert page.evaluate("document.querySelector('#devices tbody tr td:nth-child(2)').textContent") == \
            report_fleet.HOSTILE_DESCRIPTION
        page.click("#devices thead th:nth-child(6) button")
        statuses = _column(page, 5)
        assert statuses == sorted(statuses) and statuses[0] != statuses[-1]
        assert page.evaluate("document.querySelector('#devices thead th:nth-child(6)').getAttribute('aria-sort')") \
            == "ascending"
        page.click("#devices thead th:nth-child(6) button")
        assert _column(page, 5) == sorted(statuses, reverse=True)
        page.click("#devices thead th:nth-child(1) button")
        assert _column(page, 0) == names

        page.screenshot(SCREENSHOT)
        assert not _complaints(page), json.dumps(_complaints(page))[:2000]
        page.close()
    with open(SCREENSHOT, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_report_cli_writes_each_format_asked_for(tmp_path):
    store_path = str(tmp_path / "state" / "capf.db")
    with open_store(store_path, actor="test") as store:
        report_fleet.make(store, phones=20)
    missing = run_cli("--store", store_path, "report")
    assert missing.returncode == 2 and "one of --html FILE or --csv FILE is required" in missing.stderr
    page, table = tmp_path / "r.html", tmp_path / "r.csv"
    both = run_cli("--store", store_path, "--json", "report", "--html", str(page), "--csv", str(table),
                   "--order-by", "lsc_expiry", check=True)
    assert json.loads(both.stdout) == {"reports": [{"format": "html", "path": str(page)},
                                                   {"format": "csv", "path": str(table)}]}
    assert len(table.read_text().splitlines()) == 21 and "Devices: 20" in page.read_text()
    absent = run_cli("--store", str(tmp_path / "none" / "capf.db"), "report", "--html", str(tmp_path / "x.html"))
    assert absent.returncode == 1 and absent.stderr.count("\n") == 1 and not (tmp_path / "x.html").exists()
