# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CAPF report as one self-contained HTML page: counts and chart geometry computed here, the
page rendered by a Jinja2 template (``pages.capf_report``) with autoescaping.

The page loads nothing: no network, no fonts, no scripts from elsewhere (its Content-Security-Policy
says ``default-src 'none'``). Charts are inline SVG drawn from the geometry computed below; the
device table sorts with a few lines of inline JavaScript. Every value from the store (device
names, descriptions, pools, reasons) reaches the page only through the template's escaping.
"""

from __future__ import annotations

import collections
from typing import Any, Iterable

from . import __version__
from .dependencies import jinja2, require
from .pages import capf_report
from .vocabulary import AUTH_MODES, OPERATION_STATUSES

# Chart sizes in SVG user units; the page scales them to its width.
CHART_WIDTH = 640
BAR_HEIGHT = 18
BAR_GAP = 6
LABEL_WIDTH = 190
VALUE_WIDTH = 70
MONTH_CHART_WIDTH = 1100
MONTH_CHART_HEIGHT = 240
MONTH_LABEL_HEIGHT = 50
# Longer lists are cut to their largest entries, the rest summed as one "other" bar.
MAX_BARS = 20
# Months of LSC expiries shown one by one (five years: the longest LSC validity); expiries later
# than that are summed in one last bar.
MAX_MONTHS = 60
# Locked phones, stale LSCs and pending CSRs listed by name (all are counted).
MAX_LISTED = 50
OTHER = "other"

_ENVIRONMENT = None


def _environment():
    global _ENVIRONMENT  # pylint: disable=global-statement
    if _ENVIRONMENT is None:
        require("Jinja2")
        _ENVIRONMENT = jinja2.Environment(
            loader=jinja2.DictLoader({capf_report.NAME: capf_report.SOURCE}),
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return _ENVIRONMENT


def _cut(counts: Iterable[tuple[str, int]], limit: int = MAX_BARS) -> list[tuple[str, int]]:
    """The ``limit`` largest (label, count) pairs, largest first, the rest summed as ``other``."""
    ordered = sorted(counts, key=lambda item: (-item[1], item[0]))
    if len(ordered) <= limit:
        return ordered
    kept = ordered[:limit - 1]
    return kept + [(f"{len(ordered) - limit + 1} {OTHER}", sum(count for _label, count in ordered[limit - 1:]))]


def _cut_pools(pools: dict[str, collections.Counter]) -> list[tuple[str, collections.Counter]]:
    """Device pools with the most phones first; past ``MAX_BARS``, the rest summed in one bar."""
    ordered = sorted(pools.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    if len(ordered) <= MAX_BARS:
        return ordered
    rest: collections.Counter = collections.Counter()
    for _pool, counts in ordered[MAX_BARS - 1:]:
        rest.update(counts)
    return ordered[:MAX_BARS - 1] + [(f"{len(ordered) - MAX_BARS + 1} {OTHER} pools", rest)]


def bar_chart(counts: Iterable[tuple[str, int]], *, css: dict[str, str] | None = None) -> dict[str, Any]:
    """Horizontal bars, one per (label, count): their rectangles and label positions."""
    items = list(counts)
    largest = max((count for _label, count in items), default=0)
    span = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    bars = []
    for index, (label, count) in enumerate(items):
        y = BAR_GAP + index * (BAR_HEIGHT + BAR_GAP)
        width = round(span * count / largest, 2) if largest else 0
        bars.append({"label": label, "value": count, "x": LABEL_WIDTH, "y": y, "width": width,
                     "height": BAR_HEIGHT, "text_y": y + BAR_HEIGHT - 5, "value_x": LABEL_WIDTH + width + 6,
                     "css": (css or {}).get(label, "bar")})
    return {"width": CHART_WIDTH, "height": BAR_GAP + len(items) * (BAR_HEIGHT + BAR_GAP), "bars": bars,
            "total": sum(count for _label, count in items)}


def stacked_chart(rows: list[tuple[str, dict[str, int]]], keys: tuple[str, ...]) -> dict[str, Any]:
    """Horizontal stacked bars: one per (label, counts by key), its segments in ``keys`` order."""
    largest = max((sum(counts.values()) for _label, counts in rows), default=0)
    span = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    bars = []
    for index, (label, counts) in enumerate(rows):
        y = BAR_GAP + index * (BAR_HEIGHT + BAR_GAP)
        x, segments = float(LABEL_WIDTH), []
        for key in keys:
            count = counts.get(key, 0)
            if not count:
                continue
            width = round(span * count / largest, 2)
            segments.append({"key": key, "value": count, "x": round(x, 2), "width": width, "css": f"s-{key}"})
            x += width
        total = sum(counts.values())
        bars.append({"label": label, "value": total, "y": y, "height": BAR_HEIGHT, "text_y": y + BAR_HEIGHT - 5,
                     "value_x": round(x + 6, 2), "segments": segments})
    return {"width": CHART_WIDTH, "height": BAR_GAP + len(rows) * (BAR_HEIGHT + BAR_GAP), "bars": bars,
            "keys": keys}


def month_chart(months: dict[str, int]) -> dict[str, Any]:
    """Vertical bars, one per month (YYYY-MM) in order; months after the first ``MAX_MONTHS`` summed."""
    ordered = sorted(months.items())
    if len(ordered) > MAX_MONTHS:
        later = ordered[MAX_MONTHS - 1:]
        ordered = ordered[:MAX_MONTHS - 1] + [(f"{later[0][0]}+", sum(count for _month, count in later))]
    largest = max((count for _month, count in ordered), default=0)
    plot = MONTH_CHART_HEIGHT - MONTH_LABEL_HEIGHT - 14
    slot = (MONTH_CHART_WIDTH - 50) / max(len(ordered), 1)
    bars = []
    for index, (month, count) in enumerate(ordered):
        height = round(plot * count / largest, 2) if largest else 0
        x = round(40 + index * slot + slot * 0.1, 2)
        bottom = 14 + plot
        bars.append({"label": month, "value": count, "x": x, "y": round(bottom - height, 2), "width": round(slot * 0.8, 2),
                     "height": height, "label_x": round(x + slot * 0.4, 2), "label_y": bottom + 8})
    return {"width": MONTH_CHART_WIDTH, "height": MONTH_CHART_HEIGHT, "bars": bars, "baseline": 14 + plot,
            "total": sum(count for _month, count in ordered)}


def _cell(value) -> str:
    return "" if value is None else str(value)


def context(phones: list[dict], *, stale_lscs: list[dict], pending_csrs: list[dict], generated_at: str,
            query: dict | None = None) -> dict[str, Any]:
    """What the template needs: the summary counts, each chart's geometry and the table's rows."""
    statuses: collections.Counter = collections.Counter()
    modes: collections.Counter = collections.Counter()
    failures: collections.Counter = collections.Counter()
    months: collections.Counter = collections.Counter()
    lsc_statuses: collections.Counter = collections.Counter()
    pools: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    locked, rows = [], []
    for phone in phones:
        status = phone["operation_status"]
        statuses[status] += 1
        modes[phone["authentication_mode"]] += 1
        pools[phone["device_pool"] or "(none)"][status] += 1
        if status == "failed":
            failures[phone["operation_reason"] or "(no reason recorded)"] += 1
        if phone["locked"]:
            locked.append(phone["device_name"])
        lsc = phone["lsc"]
        if lsc is None:
            lsc_statuses["none"] += 1
            lsc_cells = ("none", "", "", "")
        else:
            lsc_statuses[lsc["status"]] += 1
            if lsc["not_after"]:
                months[lsc["not_after"][:7]] += 1
            lsc_cells = (lsc["status"], lsc["serial"], _cell(lsc["not_after"]), _cell(lsc["installed_at"]))
        rows.append((phone["device_name"], _cell(phone["description"]), _cell(phone["model"]),
                     _cell(phone["device_pool"]), phone["certificate_operation"], status,
                     _cell(phone["operation_reason"]), phone["authentication_mode"]) + lsc_cells)
    stacked = _cut_pools(pools)
    status_css = {status: f"s-{status}" for status in OPERATION_STATUSES}
    return {
        "version": __version__,
        "generated_at": generated_at,
        "query": sorted((query or {}).items()),
        "summary": {
            "phones": len(phones),
            "lsc_installed": lsc_statuses.get("installed", 0),
            "failed": statuses.get("failed", 0),
            "locked": len(locked),
            "stale_lscs": len(stale_lscs),
            "pending_csrs": len(pending_csrs),
        },
        "expiries": month_chart(months),
        "statuses": bar_chart(((status, statuses[status]) for status in OPERATION_STATUSES if statuses[status]),
                              css=status_css),
        "pools": stacked_chart(stacked, OPERATION_STATUSES),
        "modes": bar_chart((mode, modes[mode]) for mode in AUTH_MODES if modes[mode]),
        "lsc_statuses": bar_chart(_cut(lsc_statuses.items())),
        "failures": bar_chart(_cut(failures.items())),
        "locked": {"count": len(locked), "names": locked[:MAX_LISTED]},
        "stale_lscs": {"count": len(stale_lscs), "rows": [
            (row["device_name"], row["serial"], _cell(row["not_after"]), _cell(row["issued_at"]))
            for row in stale_lscs[:MAX_LISTED]]},
        "pending_csrs": {"count": len(pending_csrs), "rows": [
            (row["device_name"], row["status"], _cell(row["created_at"]), _cell(row.get("external_ref")))
            for row in pending_csrs[:MAX_LISTED]]},
        "max_listed": MAX_LISTED,
        "columns": ("Device", "Description", "Model", "Device pool", "Operation", "Status", "Reason",
                    "Authentication", "LSC", "LSC serial", "LSC not after", "LSC installed"),
        "rows": rows,
    }


def render(page: dict[str, Any]) -> bytes:
    """The report page for a ``context()``, UTF-8."""
    return _environment().get_template(capf_report.NAME).render(page).encode("utf-8")
