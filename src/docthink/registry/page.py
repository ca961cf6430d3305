"""The leaderboard as one static HTML file: no server, no external script or style; rows sort by
a click on a column header and filter by a text box (inline JavaScript). Every text from the
registry is HTML-escaped, so a recipe or note holding markup shows as text."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape

from docthink.registry.leaderboard import EMPTY, METRICS, RECIPE_NAMES, Leaderboard, Row

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


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _tokens(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


# Recipe values repeat from row to row (base models, learning rates): escaped once each.
_escape_cached = functools.lru_cache(maxsize=1 << 16)(escape)


def _num_cell(value: float | None, text: str, href: str | None = None) -> str:
    """A number's cell; `text` is the number formatted here (digits and '.'), `href` is escaped."""
    data = "" if value is None else repr(value)
    shown = text if href is None else f'<a href="{escape(href)}">{text}</a>'
    return f'<td class="num" data-value="{data}">{shown}</td>'


def header_cells(board: Leaderboard) -> str:
    cells = ['<th data-type="num">rank</th>', "<th>checkpoint</th>"]
    for b in board.benchmarks:
        for label, _ in METRICS:
            cells.append(f'<th data-type="num">{escape(b)} {escape(label)}</th>')
    cells += [f"<th>{escape(name)}</th>" for name in RECIPE_NAMES]
    cells.append('<th data-type="num">lineage</th>')
    return "".join(cells)


def row_cells(board: Leaderboard, rank: int, row: Row, lineage_href: str,
              run_href: Callable[[str], str] | None) -> str:
    checkpoint = escape(row.checkpoint)
    cells = [f'<td class="num" data-value="{rank}">{rank}</td>', f"<td>{checkpoint}</td>"]
    for b in board.benchmarks:
        for _, key in METRICS:
            value = row.value(b, key)
            text = _tokens(value) if key.startswith("mean_output_tokens") else _pct(value)
            href = (run_href(row.scores[b].run_id)
                    if value is not None and run_href is not None else None)
            cells.append(_num_cell(value, text, href))
    recipe = row.recipe
    cells += [f"<td>{_escape_cached(recipe[name])}</td>" if name in recipe else "<td></td>"
              for name in RECIPE_NAMES]
    cells.append(f'<td class="num" data-value="{len(row.lineage)}">'
                 f'<a href="{escape(lineage_href)}">{len(row.lineage)} runs</a></td>')
    return "".join(cells)


def render_static(board: Leaderboard, title: str = "docthink leaderboard") -> str:
    """The whole page; lineage of each row in a section below the table, linked from the row."""
    benchmark, metric = board.ranked_by
    rows = []
    sections = []
    for rank, row in enumerate(board.rows, start=1):
        anchor = f"lineage-{rank}"
        rows.append(f"<tr>{row_cells(board, rank, row, '#' + anchor, None)}</tr>")
        items = "".join(
            f'<li><span class="id">{escape(run_id)}</span> <span class="muted">{escape(kind)}</span></li>'
            for run_id, kind in row.lineage
        )
        evals = ", ".join(escape(s.run_id) for s in row.scores.values())
        sections.append(
            f'<section id="{anchor}"><h3>{rank}. {escape(row.checkpoint)}</h3>'
            f'<p>eval runs: <span class="id">{evals}</span></p>'
            f"<ol>{items or '<li class=muted>no ancestor runs recorded</li>'}</ol></section>"
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    empty = "" if board.rows else f'<p id="empty">{escape(EMPTY)}</p>'
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"{empty}"
        f"<p>{len(board.rows)} checkpoints, ranked by {escape(benchmark)} {escape(metric)}; "
        f"accuracy in %, tokens = mean output tokens. Generated {generated}. "
        "Click a column header to sort.</p>"
        '<input type="search" data-filter="board" placeholder="filter rows (all words)" '
        'aria-label="filter rows"> <span class="muted"><span id="board-shown">'
        f"{len(board.rows)}</span> shown</span>"
        f'<table id="board" class="sortable"><thead><tr>{header_cells(board)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<h2>Lineage</h2>{''.join(sections)}"
        f"<script>{TABLE_JS}</script></body></html>\n"
    )
