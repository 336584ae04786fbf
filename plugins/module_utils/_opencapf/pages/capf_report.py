# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTML CAPF report (rendered by ``report_html``, autoescaped): a self-contained page whose
charts are inline SVG drawn from geometry computed in Python and whose device table sorts with
inline JavaScript. Its Content-Security-Policy forbids every load from anywhere."""

NAME = "capf_report.html"

SOURCE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="opencapf {{ version }}">
<title>CAPF report, {{ generated_at }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin: 0 0 .2em; }
h2 { font-size: 1.15em; margin: 0 0 .5em; }
.meta { color: #666; margin: 0 0 1em; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; margin: 0 0 1.2em; padding: 0; list-style: none; }
.cards li { border: 1px solid #ddd; border-radius: 6px; padding: .5em 1em; min-width: 8em; }
.cards b { display: block; font-size: 1.6em; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1.2em; }
section { border: 1px solid #ddd; border-radius: 6px; padding: .8em 1em; margin: 0 0 1.2em; }
svg { width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
.bar { fill: #4a78b5; }
.s-none { fill: #b0b0b0; } .s-pending { fill: #e0b030; } .s-in_progress { fill: #5fa8d8; }
.s-succeeded { fill: #3c9a50; } .s-failed { fill: #c8423a; } .s-lapsed { fill: #8a5cb0; }
.legend { display: flex; flex-wrap: wrap; gap: .8em; margin: .4em 0 0; padding: 0; list-style: none; font-size: .9em; }
.legend svg { width: 12px; height: 12px; vertical-align: middle; }
.empty { color: #666; font-style: italic; }
table { border-collapse: collapse; width: 100%; font-size: .9em; }
th, td { border-bottom: 1px solid #eee; padding: .25em .5em; text-align: left; vertical-align: top; }
th button { font: inherit; font-weight: bold; background: none; border: 0; padding: 0; cursor: pointer; }
th[aria-sort="ascending"] button::after { content: " \25B2"; }
th[aria-sort="descending"] button::after { content: " \25BC"; }
.scroll { max-height: 70vh; overflow: auto; }
</style>
</head>
<body>
<h1>CAPF report</h1>
<p class="meta">Generated {{ generated_at }} by opencapf {{ version }}
{%- if query %}; phones selected by
{%- for key, value in query %} {{ key }}={{ value }}{{ "," if not loop.last }}{% endfor %}
{%- endif %}.</p>

<ul class="cards" id="summary">
<li><b>{{ summary.phones }}</b>phones</li>
<li><b>{{ summary.lsc_installed }}</b>LSC installed</li>
<li><b>{{ summary.failed }}</b>operations failed</li>
<li><b>{{ summary.locked }}</b>locked out</li>
<li><b>{{ summary.stale_lscs }}</b>stale LSCs</li>
<li><b>{{ summary.pending_csrs }}</b>pending CSRs</li>
</ul>

{% macro bars(chart, name) %}
{% if chart.bars %}
<svg class="chart" id="chart-{{ name }}" viewBox="0 0 {{ chart.width }} {{ chart.height }}" role="img"
 aria-label="{{ name }}" xmlns="http://www.w3.org/2000/svg">
{% for bar in chart.bars %}
<g class="mark"><title>{{ bar.label }}: {{ bar.value }}</title>
<text x="{{ bar.x - 6 }}" y="{{ bar.text_y }}" text-anchor="end">{{ bar.label | truncate(28, true, "...", 0) }}</text>
<rect class="{{ bar.css }}" x="{{ bar.x }}" y="{{ bar.y }}" width="{{ bar.width }}" height="{{ bar.height }}"/>
<text x="{{ bar.value_x }}" y="{{ bar.text_y }}">{{ bar.value }}</text></g>
{% endfor %}
</svg>
{% else %}
<p class="empty">None.</p>
{% endif %}
{% endmacro %}

<section id="expiries">
<h2>LSC expiries by month</h2>
{% if expiries.bars %}
<svg class="chart" id="chart-expiries" viewBox="0 0 {{ expiries.width }} {{ expiries.height }}" role="img"
 aria-label="LSC expiries by month" xmlns="http://www.w3.org/2000/svg">
<line x1="0" y1="{{ expiries.baseline }}" x2="{{ expiries.width }}" y2="{{ expiries.baseline }}" stroke="#999"/>
{% for bar in expiries.bars %}
<g class="mark"><title>{{ bar.label }}: {{ bar.value }} LSCs expire</title>
<rect class="bar" x="{{ bar.x }}" y="{{ bar.y }}" width="{{ bar.width }}" height="{{ bar.height }}"/>
<text x="{{ bar.label_x }}" y="{{ bar.y - 3 }}" text-anchor="middle">{{ bar.value }}</text>
<text transform="translate({{ bar.label_x }} {{ bar.label_y }}) rotate(-45)" text-anchor="end">{{ bar.label }}</text></g>
{% endfor %}
</svg>
{% else %}
<p class="empty">No LSCs.</p>
{% endif %}
</section>

<div class="grid">
<section id="statuses">
<h2>Operations by status</h2>
{{ bars(statuses, "statuses") }}
</section>
<section id="modes">
<h2>Authentication modes</h2>
{{ bars(modes, "modes") }}
</section>
<section id="pools">
<h2>Operations by device pool</h2>
{% if pools.bars %}
<svg class="chart" id="chart-pools" viewBox="0 0 {{ pools.width }} {{ pools.height }}" role="img"
 aria-label="Operations by device pool" xmlns="http://www.w3.org/2000/svg">
{% for bar in pools.bars %}
<g class="mark"><title>{{ bar.label }}: {{ bar.value }}</title>
<text x="184" y="{{ bar.text_y }}" text-anchor="end">{{ bar.label | truncate(28, true, "...", 0) }}</text>
{% for segment in bar.segments %}
<rect class="{{ segment.css }}" x="{{ segment.x }}" y="{{ bar.y }}" width="{{ segment.width }}" height="{{ bar.height }}">
<title>{{ bar.label }}, {{ segment.key }}: {{ segment.value }}</title></rect>
{% endfor %}
<text x="{{ bar.value_x }}" y="{{ bar.text_y }}">{{ bar.value }}</text></g>
{% endfor %}
</svg>
<ul class="legend">
{% for key in pools["keys"] %}
<li><svg viewBox="0 0 10 10" aria-hidden="true"><rect class="s-{{ key }}" width="10" height="10"/></svg> {{ key }}</li>
{% endfor %}
</ul>
{% else %}
<p class="empty">None.</p>
{% endif %}
</section>
<section id="lsc-statuses">
<h2>Current LSCs by status</h2>
{{ bars(lsc_statuses, "lsc-statuses") }}
</section>
<section id="failures">
<h2>Failures by reason</h2>
{{ bars(failures, "failures") }}
</section>
<section id="locked">
<h2>Lock-outs: {{ locked.count }}</h2>
{% if locked.names %}
<p>{% for name in locked.names %}{{ name }}{{ ", " if not loop.last }}{% endfor %}
{%- if locked.count > max_listed %} and {{ locked.count - max_listed }} more{% endif %}.</p>
{% else %}
<p class="empty">No phone is locked out.</p>
{% endif %}
</section>
<section id="stale-lscs">
<h2>Stale LSCs: {{ stale_lscs.count }}</h2>
{% if stale_lscs.rows %}
<table><thead><tr><th>Device</th><th>Serial</th><th>Not after</th><th>Issued</th></tr></thead><tbody>
{% for row in stale_lscs.rows %}
<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}
</tbody></table>
{% if stale_lscs.count > max_listed %}<p>and {{ stale_lscs.count - max_listed }} more.</p>{% endif %}
{% else %}
<p class="empty">None.</p>
{% endif %}
</section>
<section id="pending-csrs">
<h2>Pending CSRs: {{ pending_csrs.count }}</h2>
{% if pending_csrs.rows %}
<table><thead><tr><th>Device</th><th>Status</th><th>Created</th><th>External reference</th></tr></thead><tbody>
{% for row in pending_csrs.rows %}
<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}
</tbody></table>
{% if pending_csrs.count > max_listed %}<p>and {{ pending_csrs.count - max_listed }} more.</p>{% endif %}
{% else %}
<p class="empty">None.</p>
{% endif %}
</section>
</div>

<section id="devices-section">
<h2>Devices: {{ rows | length }}</h2>
<p class="meta">Click a column header to sort.</p>
<div class="scroll">
<table id="devices">
<thead><tr>
{% for column in columns %}
<th aria-sort="none"><button type="button">{{ column }}</button></th>
{% endfor %}
</tr></thead>
<tbody></tbody>
</table>
</div>
<noscript><p>The device table needs JavaScript; the CSV report lists the same phones.</p></noscript>
</section>
<script type="application/json" id="device-rows">{{ rows | tojson }}</script>
<script>
(function () {
  "use strict";
  // The rows arrive as JSON (escaped for HTML by the template) and become text nodes only.
  var rows = JSON.parse(document.getElementById("device-rows").textContent);
  var table = document.getElementById("devices");
  var body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var fragment = document.createDocumentFragment();
  var items = rows.map(function (row) {
    var line = document.createElement("tr");
    row.forEach(function (cell) {
      var item = document.createElement("td");
      item.textContent = cell;
      line.appendChild(item);
    });
    fragment.appendChild(line);
    return [row, line];
  });
  body.appendChild(fragment);
  heads.forEach(function (head, column) {
    head.querySelector("button").addEventListener("click", function () {
      var ascending = head.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (other) { other.setAttribute("aria-sort", "none"); });
      head.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var keyed = items.map(function (item, index) { return [item[0][column], index, item[1]]; });
      keyed.sort(function (a, b) {
        var order = a[0] < b[0] ? -1 : (a[0] > b[0] ? 1 : 0);
        return (ascending ? order : -order) || a[1] - b[1];
      });
      items = keyed.map(function (key) { return items[key[1]]; });
      var sorted = document.createDocumentFragment();
      items.forEach(function (item) { sorted.appendChild(item[1]); });
      body.appendChild(sorted);
    });
  });
}());
</script>
</body>
</html>
"""
