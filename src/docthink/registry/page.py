"""The leaderboard's table, as one static HTML file (no server, no external script or style) and
in the web UI: the rows ride in the page as JSON, and an inline script lists them a page at a
time, sorts them by a click on a column header and filters them by a text box. Texts from the
registry reach the page as JSON with every `<` escaped and are set as text by the script, so a
recipe or note holding markup shows as text. TABLE_JS sorts and filters the web UI's other
tables, rendered as HTML."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

import orjson

from docthink.registry.leaderboard import EMPTY, METRICS, RECIPE_NAMES, Leaderboard

# Sorting and filtering for every `table.sortable` and `input[data-filter]`; shared with the web UI.
TABLE_JS = r"""
(function () {
  function cellValue(row, i) {
    var cell = row.cells[i];
    return cell.hasAttribute('data-value') ? cell.getAttribute('data-value') : cell.textContent.trim();
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, i) {
      th.addEventListener('click', function () {
        var ascending = th.getAttribute('aria-sort') !== 'ascending';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        var numeric = th.getAttribute('data-type') === 'num';
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, i), y = cellValue(b, i);
          if (x === '' || y === '') { return (x === '') - (y === ''); }  // blanks last
          var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
          return ascending ? order : -order;
        });
        var fragment = document.createDocumentFragment();
        rows.forEach(function (r) { fragment.appendChild(r); });
        body.appendChild(fragment);
      });
    });
  });
  document.querySelectorAll('input[data-filter]').forEach(function (input) {
    var table = document.getElementById(input.getAttribute('data-filter'));
    input.addEventListener('input', function () {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var text = row.textContent.toLowerCase();
        var keep = words.every(function (w) { return text.indexOf(w) >= 0; });
        row.hidden = !keep;
        shown += keep ? 1 : 0;
      });
      var counter = document.getElementById(input.getAttribute('data-filter') + '-shown');
      if (counter) { counter.textContent = shown; }
    });
  });
})();
"""

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { cursor: pointer; background: #f4f4f4; position: sticky; top: 0; white-space: nowrap; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
input[type=search] { width: 24em; margin: 0.5em 0; padding: 3px; }
.muted { color: #777; }
mark { background: #fe6; }
code, .id { font-family: ui-monospace, monospace; font-size: 12px; }
"""


def header_cells(board: Leaderboard) -> str:
    cells = ['<th data-type="num">rank</th>', "<th>checkpoint</th>"]
    for b in board.benchmarks:
        for label, _ in METRICS:
            cells.append(f'<th data-type="num">{escape(b)} {escape(label)}</th>')
    cells += [f"<th>{escape(name)}</th>" for name in RECIPE_NAMES]
    cells.append('<th data-type="num">lineage</th>')
    return "".join(cells)


# The static page's table, built in the browser from the rows embedded as JSON: a page of 30,000
# checkpoints is written in a fraction of a second instead of formatting a million cells here,
# and the browser lays out only the rows listed (PAGE at a time) rather than all of them.
BOARD_JS = r"""
(function () {
  var PAGE = 500;
  var data = JSON.parse(document.getElementById('board-data').textContent);
  var nb = data.benchmarks.length, nm = data.metrics.length, nr = data.recipe.length;
  function score(r, k) {  // k: benchmark-major index of a metric column
    var b = data.benchmarks[Math.floor(k / nm)];
    var s = own(r.scores, b) ? r.scores[b] : undefined;
    var v = s === undefined ? undefined : s[2][data.metrics[k % nm]];
    return v === undefined ? null : v;
  }
  function own(o, key) { return Object.prototype.hasOwnProperty.call(o, key); }
  function recipe(r, k) { return own(r.recipe, data.recipe[k]) ? r.recipe[data.recipe[k]] : null; }
  function metrics(r) { var out = []; for (var k = 0; k < nb * nm; k++) { out.push(score(r, k)); } return out; }
  function recipes(r) { var out = []; for (var k = 0; k < nr; k++) { out.push(recipe(r, k)); } return out; }
  var table = document.getElementById('board');
  var heads = table.tHead.rows[0].cells;
  var body = table.tBodies[0];
  var input = document.querySelector('input[data-filter=board]');
  var shown = document.getElementById('board-shown');
  var more = document.getElementById('board-more');
  function every() { return data.rows.map(function (_, i) { return i; }); }  // rank order
  var view = every();
  var limit = PAGE, texts = null;

  // data.runs: where run pages are (the web UI), null on the static page
  function runHref(id) { return data.runs + encodeURIComponent(id); }
  function latest(r) {  // the eval run of the checkpoint's newest score
    var best = null;
    Object.keys(r.scores).forEach(function (b) { if (best === null || r.scores[b][1] > best[1]) { best = r.scores[b]; } });
    return best[0];
  }
  function metricText(value, m) {
    if (value === null) { return ''; }
    return data.metrics[m].indexOf('mean_output_tokens') === 0 ? value.toFixed(0) : (100 * value).toFixed(1);
  }
  // column c of row i: the value sorted on (null: blank, sorts last)
  function value(i, c) {
    var r = data.rows[i];
    if (c === 0) { return i + 1; }
    if (c === 1) { return r.checkpoint; }
    c -= 2;
    if (c < nb * nm) { return score(r, c); }
    c -= nb * nm;
    if (c < nr) { return recipe(r, c); }
    return r.lineage.length;
  }
  function rowText(i) {
    var r = data.rows[i], parts = [String(i + 1), r.checkpoint];
    metrics(r).forEach(function (v, k) { parts.push(metricText(v, k % nm)); });
    recipes(r).forEach(function (v) { if (v !== null) { parts.push(v); } });
    parts.push(r.lineage.length + ' runs');
    return parts.join(' ').toLowerCase();
  }
  function cell(tr, text, numeric, href) {
    var td = tr.insertCell();
    if (numeric) { td.className = 'num'; }
    if (href) {
      var a = document.createElement('a');
      a.href = href; a.textContent = text; td.appendChild(a);
    } else {
      td.textContent = text;
    }
  }
  function render() {
    var rows = document.createDocumentFragment();
    view.slice(0, limit).forEach(function (i) {
      var r = data.rows[i], tr = document.createElement('tr');
      cell(tr, String(i + 1), true);
      cell(tr, r.checkpoint, false);
      metrics(r).forEach(function (v, k) {
        var s = r.scores[data.benchmarks[Math.floor(k / nm)]];
        cell(tr, metricText(v, k % nm), true, v !== null && data.runs ? runHref(s[0]) : null);
      });
      recipes(r).forEach(function (v) { cell(tr, v === null ? '' : v, false); });
      cell(tr, r.lineage.length + ' runs', true, data.runs ? runHref(latest(r)) + '#lineage' : '#lineage-' + (i + 1));
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    shown.textContent = view.length;
    more.hidden = view.length <= limit;
    more.textContent = 'listed ' + Math.min(limit, view.length) + ' of ' + view.length + '; show ' + PAGE + ' more';
  }
  function filtered() {
    var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    if (!words.length) { return every(); }
    if (texts === null) { texts = every().map(rowText); }
    return every().filter(function (i) {
      return words.every(function (w) { return texts[i].indexOf(w) >= 0; });
    });
  }
  var sortBy = null;
  function sorted(rows) {
    if (sortBy === null) { return rows; }
    var c = sortBy[0], ascending = sortBy[1], numeric = heads[c].getAttribute('data-type') === 'num';
    return rows.sort(function (a, b) {
      var x = value(a, c), y = value(b, c);
      if (x === null || y === null) { return (x === null) - (y === null) || a - b; }  // blanks last
      var order = numeric ? x - y : String(x).localeCompare(String(y));
      return (ascending ? order : -order) || a - b;
    });
  }
  Array.prototype.forEach.call(heads, function (th, c) {
    th.addEventListener('click', function () {
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      sortBy = [c, ascending];
      view = sorted(view);
      render();
    });
  });
  input.addEventListener('input', function () { view = sorted(filtered()); limit = PAGE; render(); });
  more.addEventListener('click', function () { limit += PAGE; render(); });

  function showLineage() {
    var rank = parseInt((location.hash.match(/^#lineage-(\d+)$/) || [])[1], 10);
    var box = document.getElementById('lineage');
    if (box === null || !(rank >= 1 && rank <= data.rows.length)) { return; }
    var r = data.rows[rank - 1], section = document.createElement('section');
    section.id = 'lineage-' + rank;
    var h = document.createElement('h3');
    h.textContent = rank + '. ' + r.checkpoint;
    var p = document.createElement('p'), ids = document.createElement('span');
    p.textContent = 'eval runs: '; ids.className = 'id';
    ids.textContent = data.benchmarks.filter(function (b) { return own(r.scores, b); })
      .map(function (b) { return r.scores[b][0]; }).join(', ');
    p.appendChild(ids);
    var ol = document.createElement('ol');
    r.lineage.forEach(function (step) {
      var li = document.createElement('li'), id = document.createElement('span'), kind = document.createElement('span');
      id.className = 'id'; id.textContent = step[0];
      kind.className = 'muted'; kind.textContent = step[1];
      li.append(id, ' ', kind); ol.appendChild(li);
    });
    if (!r.lineage.length) {
      var none = document.createElement('li');
      none.className = 'muted'; none.textContent = 'no ancestor runs recorded'; ol.appendChild(none);
    }
    section.append(h, p, ol);
    box.replaceChildren(section);
    section.scrollIntoView();
  }
  window.addEventListener('hashchange', showLineage);
  render();
  showLineage();
})();
"""


def board_data(board: Leaderboard, runs: str | None = None) -> str:
    """What the page's script reads: {benchmarks, metrics, recipe (column names), runs (where run
    pages are, or null), rows}, the rows in rank order as `leaderboard_checkpoints` keeps them
    ({checkpoint, evals, lineage, recipe, scores: {benchmark: [eval run, started, {metric:
    value}]}}). Every `<` is escaped, so no text from the registry can end the script element."""
    head = orjson.dumps({"benchmarks": board.benchmarks, "metrics": [k for _, k in METRICS],
                         "recipe": RECIPE_NAMES, "runs": runs}).decode()
    rows = ",".join(board.stored())
    return f'{head[:-1]},"rows":[{rows}]}}'.replace("<", "\\u003c")


def board_table(board: Leaderboard, runs: str | None = None) -> str:
    """The filter box, the table (filled by BOARD_JS) and the rows' data; `runs`: the web UI's
    run pages (scores and lineage link there), None: a static page (lineage shown below)."""
    lineage = ('<h2>Lineage</h2><div id="lineage"><p class="muted">a row\'s "runs" link shows '
               "its lineage here</p></div>") if runs is None else ""
    return (
        "<noscript><p>This table lists its rows with JavaScript; `docthink leaderboard --csv` "
        "or `--json` exports the same rows.</p></noscript>"
        '<input type="search" data-filter="board" placeholder="filter rows (all words)" '
        'aria-label="filter rows"> <span class="muted"><span id="board-shown">'
        f"{len(board)}</span> shown</span>"
        f'<table id="board"><thead><tr>{header_cells(board)}</tr></thead><tbody></tbody></table>'
        f'<button id="board-more" hidden></button>{lineage}'
        f'<script type="application/json" id="board-data">{board_data(board, runs)}</script>'
        f"<script>{BOARD_JS}</script>"
    )


def render_static(board: Leaderboard, title: str = "docthink leaderboard") -> str:
    """The whole page: the rows as JSON, listed, sorted and filtered by its own script; the
    lineage of a row shown below the table when its link is followed."""
    benchmark, metric = board.ranked_by
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    empty = "" if len(board) else f'<p id="empty">{escape(EMPTY)}</p>'
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"{empty}"
        f"<p>{len(board)} checkpoints, ranked by {escape(benchmark)} {escape(metric)}; "
        f"accuracy in %, tokens = mean output tokens. Generated {generated}. "
        "Click a column header to sort.</p>"
        f"{board_table(board)}</body></html>\n"
    )
