"""The HTML CAPF report: what it counts equals the store, its charts' geometry stays inside the chart,
every stored text reaches the page escaped, and nothing is written when the report cannot be made."""

from __future__ import annotations

import collections
import html.parser
import json
import os
import stat

import pytest

from _opencapf import dependencies, report_html, reports
from _opencapf.errors import DependencyError, ValidationError
from _opencapf.store import open_store
from support import report_fleet


@pytest.fixture(scope="module")
def fleet_store(tmp_path_factory):
    """The 200-phone demo-like store, made once for this module (the tests only read it)."""
    path = str(tmp_path_factory.mktemp("report") / "capf.db")
    with open_store(path, actor="test") as store:
        made = report_fleet.make(store)
    return path, made


class _Page(html.parser.HTMLParser):
    """The page's elements (tag and attributes), its text and the JSON island of the device table."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._in_island = False
        self.island = ""

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_island = tag == "script" and dict(attrs).get("id") == "device-rows"

    def handle_endtag(self, tag):
        self._in_island = False

    def handle_data(self, data):
        if self._in_island:
            self.island += data
        else:
            self.text.append(data)


def _parse(data: bytes) -> _Page:
    page = _Page()
    page.feed(data.decode("utf-8"))
    page.close()
    return page


def test_counts_and_rows_equal_the_store(fleet_store, tmp_path):
    path, made = fleet_store
    target = tmp_path / "out" / "report.html"
    with open_store(path, actor="test") as store:
        result = reports.gather(store, ["phones", "stale_lscs", "pending_csrs"], report_path=str(target),
                                report_format="html")
    phones = result["phones"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    page = _parse(target.read_bytes())
    rows = json.loads(page.island)
    # The table: one row per phone, in the listing's order, cells equal to the stored values.
    assert [row[0] for row in rows] == [phone["device_name"] for phone in phones]
    assert {row[0]: row[1] for row in rows}[made["names"][0]] == report_fleet.HOSTILE_DESCRIPTION
    assert {row[0]: row[3] for row in rows}[made["names"][0]] == report_fleet.HOSTILE_POOL
    context = report_html.context(phones, stale_lscs=result["stale_lscs"], pending_csrs=result["pending_csrs"],
                                  generated_at="2026-12-01T00:00:00Z")
    summary = context["summary"]
    assert summary["phones"] == len(phones) == 200
    assert summary["locked"] == len(made["locked"]) == sum(phone["locked"] for phone in phones)
    assert summary["failed"] == sum(phone["operation_status"] == "failed" for phone in phones)
    assert summary["stale_lscs"] == len(result["stale_lscs"]) and summary["pending_csrs"] == len(result["pending_csrs"])
    # Every chart sums to what it counts.
    statuses = collections.Counter(phone["operation_status"] for phone in phones)
    assert {mark["label"]: mark["value"] for mark in context["statuses"]["bars"]} == dict(statuses)
    modes = collections.Counter(phone["authentication_mode"] for phone in phones)
    assert {mark["label"]: mark["value"] for mark in context["modes"]["bars"]} == dict(modes)
    assert context["pools"]["bars"] and sum(mark["value"] for mark in context["pools"]["bars"]) == len(phones)
    with_expiry = sum(1 for phone in phones if phone["lsc"] and phone["lsc"]["not_after"])
    assert context["expiries"]["total"] == with_expiry > 0
    failures = {mark["label"]: mark["value"] for mark in context["failures"]["bars"]}
    for reason in set(made["failed"].values()):
        assert failures[reason] >= list(made["failed"].values()).count(reason)
    assert failures["authentication string mismatch"] >= len(made["locked"])
    # The page says the same numbers.
    text = " ".join(page.text)
    assert f"Lock-outs: {len(made['locked'])}" in text and f"Devices: {len(phones)}" in text
    for name in made["locked"]:
        assert name in text


def test_untrusted_text_is_escaped_everywhere(fleet_store, tmp_path):
    """Descriptions and pools reach the page as text only: no element, attribute or script of theirs."""
    path, _made = fleet_store
    target = tmp_path / "report.html"
    with open_store(path, actor="test") as store:
        reports.gather(store, ["phones"], report_path=str(target), report_format="html")
    data = target.read_bytes().decode("utf-8")
    page = _parse(target.read_bytes())
    scripts = [attrs for tag, attrs in page.elements if tag == "script"]
    assert len(scripts) == 2 and scripts[0] == {"type": "application/json", "id": "device-rows"}
    assert not [tag for tag, _attrs in page.elements if tag in ("img", "iframe", "object", "embed", "link")]
    assert not [attrs for _tag, attrs in page.elements if any(name.startswith("on") for name in attrs)]
    assert "<script>window" not in data and "<img" not in data and "<svg onload" not in data
    # The pool's name and the failure reason are chart labels too: text there as well.
    assert any(report_fleet.HOSTILE_POOL in chunk for chunk in page.text)
    assert any(report_fleet.HOSTILE_REASON in chunk for chunk in page.text)


def test_chart_geometry_stays_inside_the_chart():
    """For any counts: bars are proportional, the largest spans the plot, all stay within the chart."""
    cases = [[("a", 1)], [("a", 5), ("b", 0), ("c", 2)], [(f"p{i}", i * 7 % 13 + 1) for i in range(45)], []]
    for counts in cases:
        chart = report_html.bar_chart(report_html._cut(counts))  # pylint: disable=protected-access
        span = report_html.CHART_WIDTH - report_html.LABEL_WIDTH - report_html.VALUE_WIDTH
        assert len(chart["bars"]) <= report_html.MAX_BARS
        assert chart["total"] == sum(count for _label, count in counts)
        for mark in chart["bars"]:
            assert 0 <= mark["width"] <= span and mark["x"] + mark["width"] <= chart["width"]
            assert 0 <= mark["y"] and mark["y"] + mark["height"] <= chart["height"]
        if any(count for _label, count in counts):
            assert max(mark["width"] for mark in chart["bars"]) == span
    months = {f"{2026 + index // 12}-{index % 12 + 1:02d}": index + 1 for index in range(75)}
    chart = report_html.month_chart(months)
    assert len(chart["bars"]) == report_html.MAX_MONTHS and chart["total"] == sum(months.values())
    assert chart["bars"][-1]["label"].endswith("+")
    for mark in chart["bars"]:
        assert mark["height"] >= 0 and abs(mark["y"] + mark["height"] - chart["baseline"]) < 0.01
        assert 0 <= mark["x"] and mark["x"] + mark["width"] <= chart["width"]


def test_report_format_is_checked_and_nothing_is_written_without_jinja2(fleet_store, tmp_path, monkeypatch):
    path, _made = fleet_store
    target = tmp_path / "report.html"
    with open_store(path, actor="test") as store:
        with pytest.raises(ValidationError, match="report_format"):
            reports.gather(store, ["phones"], report_path=str(target), report_format="pdf")
        monkeypatch.setattr(dependencies, "JINJA2_IMPORT_ERROR", ImportError("No module named 'jinja2'"))
        with pytest.raises(DependencyError, match="Jinja2"):
            reports.gather(store, ["phones"], report_path=str(target), report_format="html")
    assert not target.exists()
