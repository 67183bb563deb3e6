"""``DIR/index.html``: every run under a directory on one self-contained page.

The page holds the results table (:mod:`optsde.results_table`) and each run's report and
figures, grouped by experiment and then by setting (the directory a run sits in, which for
a sweep is its grid point).  Figures are embedded as base64 ``data:`` URIs and the styles
are inline, so the file can be mailed or opened offline; each report.md is rendered with
the ``markdown`` package (its ``tables`` extension).
"""

from __future__ import annotations

import base64
import html
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import markdown

from optsde import __version__
from optsde.results_table import Run, display, find_runs, run_rows

OPEN_UP_TO = 12
"""Pages with at most this many runs show every report open; larger ones show a list to open."""

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
td { white-space: nowrap; }
th { background: #f2f2f2; }
.scroll { overflow-x: auto; }
details { margin: 0.5em 0 0.5em 1em; }
summary { cursor: pointer; font-weight: 600; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.files { font-size: 13px; color: #555; }
"""


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "top"


def _table(run_list: list[Run]) -> str:
    header, body = display([row for run in run_list for row in run_rows(run)])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in body)
    table = f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _run_section(run: Run, is_open: bool) -> str:
    """A run's report.md as HTML, its figures inlined, and links to its data files."""
    figures = {p.name: p for p in sorted(run.path.glob("*.png"))}
    report = run.path / "report.md"
    text = report.read_text() if report.exists() else ""
    # Reports indent nested lists by two spaces; markdown's default needs four.
    body = markdown.markdown(text, extensions=["tables"], tab_length=2)
    # The page's own headings are h1–h3; a report's start below them.
    body = re.sub(r"<(/?)h([1-6])>", lambda m: f"<{m[1]}h{min(int(m[2]) + 3, 6)}>", body)
    shown: set[str] = set()

    def inline(match: re.Match[str]) -> str:
        name = html.unescape(match[1])
        if name not in figures:
            return match[0]
        shown.add(name)
        return f'src="{_data_uri(figures[name])}"'

    body = re.sub(r'src="([^"]+)"', inline, body)
    body += "".join(
        f'<img alt="{html.escape(n)}" src="{_data_uri(p)}">' for n, p in figures.items() if n not in shown
    )
    links = " · ".join(
        f'<a href="{html.escape(Path(run.name, f).as_posix())}">{f}</a>'
        for f in ("report.md", "summary.json", "series.csv", "config.json")
        if (run.path / f).exists()
    )
    status = run.summary.get("status", "")
    label = html.escape(run.path.name if run.name != "." else run.experiment)
    flag = "" if status == "complete" else f" — {html.escape(str(status))}"
    return (
        f'<details id="run-{_anchor(run.name)}"{" open" if is_open else ""}><summary>{label}{flag}</summary>'
        f'<p class="files">{html.escape(run.name)}: {links}</p>{body}</details>'
    )


def render(root: Path) -> str:
    """The page for every run under ``root``."""
    root = Path(root)
    runs = find_runs(root)
    by_experiment: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        setting = Path(run.name).parent.as_posix()
        by_experiment[run.experiment][setting].append(run)
    title = f"optsde results: {root.resolve().name}"
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>{len(runs)} runs under <code>{html.escape(str(root))}</code>, written by optsde {__version__}. "
        "Each table has one row per (run, comparison, SDE model); numbers are estimate ± standard error. "
        "Open a run for its report and figures.</p><ul>",
    ]
    for experiment, settings in sorted(by_experiment.items()):
        count = sum(len(v) for v in settings.values())
        parts.append(
            f'<li><a href="#{_anchor(experiment)}">{html.escape(experiment)}</a> ({count} runs)</li>'
        )
    parts.append("</ul>")
    for experiment, settings in sorted(by_experiment.items()):
        parts.append(f'<section id="{_anchor(experiment)}"><h2>{html.escape(experiment)}</h2>')
        parts.append(_table([run for group in settings.values() for run in group]))
        for setting, group in sorted(settings.items()):
            if setting not in (".", experiment):
                parts.append(f"<h3>{html.escape(setting.removeprefix(experiment + '/'))}</h3>")
            parts.extend(_run_section(run, is_open=len(runs) <= OPEN_UP_TO) for run in group)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_index(root: Path) -> Path:
    """Write ``root/index.html`` (whole or not at all) and return its path."""
    root = Path(root)
    page = render(root)
    handle, temporary = tempfile.mkstemp(prefix=".index.", suffix=".html", dir=root)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(page)
    os.chmod(temporary, 0o644)
    target = root / "index.html"
    os.replace(temporary, target)
    return target
