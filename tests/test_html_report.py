"""``optsde report``: one self-contained page; opened in a real headless browser, every figure
loads and the results tables render."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from optsde.cli import main
from optsde.results_table import collect

FLAGS = ["--steps", "100", "--paths", "8", "--no-progress"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
REQUIRE_BROWSER = "OPTSDE_REQUIRE_BROWSER"
"""Set (CI sets it) to fail, rather than skip, the browser test where no browser is found."""

# Appended to a copy of the page: after load, it writes what the browser saw into the DOM,
# which `chromium --dump-dom` prints.
CHECK = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const tables = Array.from(document.querySelectorAll("table.results"));
  const seen = {
    images: images.length,
    loaded: images.filter((img) => img.complete && img.naturalWidth > 0).length,
    tables: tables.length,
    rendered: tables.filter((t) => t.getBoundingClientRect().height > 0).length,
    rows: tables.reduce((n, t) => n + t.tBodies[0].rows.length, 0),
  };
  const out = document.createElement("pre");
  out.id = "browser-check";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
});
</script>
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs of two kinds in a sweep-like tree, and the page `optsde report` writes for them."""
    root = tmp_path_factory.mktemp("report")
    assert main(["simulate", *FLAGS, "--out", str(root / "simulate/lr=0.001/seed=0")]) == 0
    assert main(["simulate", *FLAGS, "--seed", "1", "--out", str(root / "simulate/lr=0.001/seed=1")]) == 0
    assert (
        main(["simulate", *FLAGS, "--problem", "saddle", "--hessian", "1", "--out", str(root / "saddle")])
        == 0
    )
    assert main(["report", str(root)]) == 0
    return root


def test_the_page_is_self_contained_and_holds_every_run(page: Path) -> None:
    text = (page / "index.html").read_text()
    figures = sorted(page.rglob("*.png"))
    sources = re.findall(r'<img[^>]*\bsrc="([^"]*)"', text)
    assert len(sources) == len(figures) > 0
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r'(src|href)="(https?:)?//', text), "the page must not need the network"
    assert "<h3>lr=0.001</h3>" in text  # the two seeds of one setting, under its heading
    rows = re.findall(r"<tr><td>", text)
    assert len(rows) == len(collect(page))
    for run in ("simulate/lr=0.001/seed=0", "simulate/lr=0.001/seed=1", "saddle"):
        kappa = json.loads((page / run / "summary.json").read_text())["kappa"]
        assert f'href="{run}/summary.json"' in text and f"<td>{kappa:.3g}</td>" in text


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.mark.browser
def test_every_figure_loads_and_the_tables_render_in_a_browser(page: Path, tmp_path: Path) -> None:
    browser = find_browser()
    if browser is None:
        if os.environ.get(REQUIRE_BROWSER):
            pytest.fail(f"{REQUIRE_BROWSER} is set but none of {', '.join(BROWSERS)} is on PATH")
        pytest.skip(
            f"no headless browser: none of {', '.join(BROWSERS)} is on PATH (apt-get install chromium)"
        )
    probe = tmp_path / "probe.html"
    probe.write_text((page / "index.html").read_text().replace("</body>", CHECK + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [browser, *flags, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seen = json.loads(re.search(r'<pre id="browser-check">(.*?)</pre>', dom)[1])
    figures = len(list(page.rglob("*.png")))
    assert seen["images"] == seen["loaded"] == figures, seen
    assert seen["tables"] == seen["rendered"] == 1, seen  # one per experiment
    assert seen["rows"] == len(collect(page)), seen
