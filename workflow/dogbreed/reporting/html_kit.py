"""What both HTML reports are built from (the run report, run_page.py; the profiler report, profiler_page.py): one
style sheet, the page around a body, tables, figures embedded as PNG, legends placed where they hide no data."""

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to files and memory
import matplotlib.pyplot as plt

DPI = 90
CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1150px; margin: 2em auto; color: #222; }
h1 { border-bottom: 2px solid #333; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; font-size: 90%; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; } img { max-width: 100%; } pre { background: #f7f7f7; padding: 8px; font-size: 85%; overflow-x: auto; }
.big { font-size: 140%; } .triggered { color: #c0392b; font-weight: bold; } .ok { color: #1e8449; }
.verdict { color: white; padding: 2px 8px; border-radius: 4px; font-size: 90%; }
.recommendation { background: #fef5e7; border-left: 4px solid #f39c12; padding: 6px 10px; }
.versus { background: #eef4fb; border-left: 4px solid #2e86c1; padding: 6px 10px; }

table.sortable th { cursor: pointer; } table.sortable th:after { content: " \\2195"; color: #999; }
"""
# A click on a header of a table with class "sortable" sorts its rows by that column (numbers as numbers), a second
# click the other way: the page stays one file that opens anywhere, so no library is fetched for this.
SORTING = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (header, column) {
    header.title = "sort by " + header.textContent;
    header.addEventListener("click", function () {
      var ascending = header.dataset.order !== "ascending";
      header.dataset.order = ascending ? "ascending" : "descending";
      var key = function (row) {
        var text = row.cells[column].textContent.trim();
        return /^[-+]?[0-9.]+(e[-+]?[0-9]+)?$/i.test(text) ? parseFloat(text) : text.toLowerCase();
      };
      var rows = Array.from(table.tBodies[0].rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : typeof x === "number" ? -1 : 1;
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { table.tBodies[0].appendChild(row); });
    });
  });
});
"""


def page(title: str, body: str) -> str:
    """A self-contained HTML document: the style sheet inline, every figure embedded (and the table sorting,
    when a table is sortable)."""
    script = f"<script>{SORTING}</script>" if 'class="dataframe sortable"' in body else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>\n{body}\n{script}</body></html>\n"
    )


def figure(fig) -> str:
    """A matplotlib figure as an embedded PNG (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def image(path) -> str:
    """A PNG file as an embedded image, its name as the alternative text."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def save_figure(fig, path):
    """A matplotlib figure as a PNG file (the figure is closed)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def rows_table(rows: list, columns=None) -> str:
    """A table of dict rows whose cells are HTML already (escape text before it goes in)."""
    if not rows:
        return "<p><em>none</em></p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in (row.get(c, "") for c in columns)) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def frame_table(frame, max_rows=200, sortable=False) -> str:
    """A pandas frame as a table (text escaped, numbers to 4 significant digits); the rest said to be in its CSV.
    sortable: its rows sort by the column whose header is clicked (page() adds the script)."""
    shown = frame.head(max_rows)
    more = f"<p><em>{len(frame) - max_rows} more rows in the CSV file</em></p>" if len(frame) > max_rows else ""
    return (
        shown.to_html(
            index=False,
            escape=True,
            na_rep="",
            float_format=lambda v: f"{v:.4g}",
            border=0,
            classes="sortable" if sortable else None,
        )
        + more
    )


def definitions(pairs) -> str:
    """(name, value) pairs as a two-column table, both escaped."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in pairs)
    return f"<table>{rows}</table>"


def legend_right(axis, **options):
    """The legend outside the data area, to the right, where it hides no point (none when nothing is labelled)."""
    if options.get("handles") or axis.get_legend_handles_labels()[0]:
        axis.legend(bbox_to_anchor=(1.01, 1), loc="upper left", borderaxespad=0, fontsize=8, **options)


def legend_above(axis, columns, **options):
    """A legend in a row over the axes, where it covers no bar or point."""
    axis.legend(
        loc="lower left", bbox_to_anchor=(0, 1.01), ncol=columns, borderaxespad=0, frameon=False, fontsize=8, **options
    )


def why_not_applicable(rule) -> str:
    """Beside a training check's not_applicable verdict, its reason (the check's evidence: no GPU, one process)."""
    reason = (rule.get("evidence") or {}).get("reason") if rule["verdict"] == "not_applicable" else None
    return f" ({html.escape(reason)})" if reason else ""
