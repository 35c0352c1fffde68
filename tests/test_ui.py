"""The MLflow UI in a real browser: what `attnbench url` links to shows the sweep's answer.

A tiny CPU sweep (math and naive are `ok`, efficient is `unsupported` on a CPU) goes into a throw-away store,
`mlflow server` serves it on a free loopback port, and headless Chromium (Debian's `chromium`, driven by
Playwright) opens the two links `attnbench url` prints: the parent run's page and the saved view of its jobs.
Screenshots are written to the test's folder, and copied to $ATTNBENCH_SCREENSHOTS when it is set.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from pathlib import Path

import pytest

from attnbench import cli
from conftest import NEVER_CONTENDED, sweep_into_fresh_store
from servers import mlflow_server

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sync_playwright is None, reason="needs Playwright (pip install -e '.[dev]')"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install "
                                                     "chromium); Playwright's own browsers are never downloaded"),
]

# ≥ 5 samples a job, so the report can name a winner; milliseconds per job on any CPU.
SWEEP = ["backend=math,naive,efficient", "shape=tiny", "device=cpu", "timing.min_reps=10", "timing.max_reps=10",
         "timing.min_time_s=0", "timing.warmup_s=0", NEVER_CONTENDED]
WAIT_MS = 60_000  # MLflow's React UI takes seconds to render on a loaded 2-core machine; a hang still fails
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# MLflow 3.17 opens its assistant panel on a first visit, taking a third of a 1280-pixel window (the parent's
# description then falls below the fold). Start as a user who has closed it once.
ASSISTANT_CLOSED = ("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                    "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    store, _, parent, children, _ = sweep_into_fresh_store(tmp_path_factory.mktemp("ui"), *SWEEP)
    return store, parent, children


@pytest.fixture(scope="module")
def ui(sweep):
    """The store served as `make ui` serves it; yields the two links `attnbench url` prints."""
    store, parent, _ = sweep
    with mlflow_server(f"sqlite:///{store}/mlflow.db", store / "artifacts", serve_artifacts=False) as base:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.main(["url", parent.info.run_id, "--uri", f"sqlite:///{store}/mlflow.db", "--base", base])
        assert code == 0
        links = re.findall(r": (http://\S+)$", out.getvalue(), re.MULTILINE)
        assert len(links) == 2, out.getvalue()
        yield dict(zip(("parent", "jobs"), links))


@pytest.fixture(scope="module")
def browser():
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})  # a fresh profile for each test
    context.add_init_script(ASSISTANT_CLOSED)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


@contextlib.contextmanager
def screenshot_after(page, path: Path):
    """Screenshot the page once the block is done, passed or failed: a failure shows what the browser saw."""
    try:
        yield
    finally:
        page.screenshot(path=path)
        if os.environ.get("ATTNBENCH_SCREENSHOTS"):
            keep = Path(os.environ["ATTNBENCH_SCREENSHOTS"])
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, keep / path.name)


def test_the_parent_run_page_shows_the_winner_the_statuses_and_the_plot(sweep, ui, page, tmp_path):
    _, parent, children = sweep
    note = parent.data.tags["mlflow.note.content"]
    winner = note.splitlines()[0].strip("*")  # the report's first line: **Winner: math (1.77× over naive)**
    assert winner.startswith("Winner: ")
    page.goto(ui["parent"])
    with screenshot_after(page, tmp_path / "ui-parent-run.png"):
        expect(page.get_by_text(winner, exact=True)).to_be_in_viewport()  # no scrolling needed
        expect(page.get_by_test_id("experiment-observatory-link-runs")).to_have_text("Runs")  # not "Evaluations"
        page.get_by_role("button", name="Expand description").click()  # MLflow shows the description's start
        expect(page.get_by_text("efficient: unsupported: memory-efficient attention runs on CUDA only")).to_be_visible()
        expect(page.get_by_text("3 jobs: 2 ok, 1 unsupported")).to_be_visible()  # the footer's count of statuses
        plots = re.findall(r"get-artifact\?path=([\w.]+)&run_uuid=", note)
        assert plots, note
        for plot in plots:
            image = page.locator(f'img[src*="get-artifact?path={plot}&run_uuid={parent.info.run_id}"]')
            image.scroll_into_view_if_needed()
            expect(image).to_be_visible()
            # served by the tracking server and decoded: a broken link would leave naturalWidth at 0
            page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=image.element_handle())
            # whole, at its own size: the description column is as wide as the window leaves it, and a wider image
            # widened it past the window's edge, cutting every line of text with it
            assert image.evaluate("image => image.getBoundingClientRect().right <= window.innerWidth && "
                                  "image.getBoundingClientRect().width == image.naturalWidth")
        legend = page.get_by_text("Median per call (device time on CUDA", exact=False)
        assert legend.evaluate("text => text.getBoundingClientRect().right <= window.innerWidth")
        pivot = page.locator("table").filter(has_text="winner").first
        assert pivot.evaluate(SMALLEST_GAP) >= 8  # px between one cell's text and the next's, in any row
        # back up to the winner, as the page opens: the screenshot is the description's first screen
        page.get_by_text(winner, exact=True).evaluate("line => line.scrollIntoView({block: 'end'})")
        expect(page.get_by_text(winner, exact=True)).to_be_in_viewport()


# The narrowest space, in pixels, between the text of two neighbouring cells of a table's rows (the glyphs' boxes,
# spaces left out): MLflow draws markdown tables without padding, and `24.9 µs 2.51×` ran into the next cell.
SMALLEST_GAP = """table => {
  let smallest = Infinity;
  for (const row of table.rows) {
    let previous = null;
    for (const cell of row.cells) {
      let left = Infinity, right = -Infinity;
      const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const start = node.textContent.search(/\\S/), end = node.textContent.trimEnd().length;
        if (start < 0) continue;
        const range = document.createRange();
        range.setStart(node, start);
        range.setEnd(node, end);
        const box = range.getBoundingClientRect();
        left = Math.min(left, box.left);
        right = Math.max(right, box.right);
      }
      if (left === Infinity) continue;
      if (previous !== null) smallest = Math.min(smallest, left - previous);
      previous = right;
    }
  }
  return smallest;
}"""


def _main_colour(css_colour: str) -> str:
    r, g, b = (int(v) for v in re.findall(r"\d+", css_colour)[:3])
    return max((r, "red"), (g, "green"), (b, "blue"))[1]


def _shown_whole(cell) -> bool:
    """The cell's text is not cut at its column's edge (where AG Grid draws "...": the page's text still holds all
    of it, so only the value's box, narrower than its text, tells)."""
    return cell.locator(".ag-cell-value").evaluate("value => value.scrollWidth <= value.clientWidth")


# MLflow writes a run's duration as 172ms, 1.2s, 3.5min, 2.0h, 1.5d (Utils.formatDuration); never negative
DURATION = re.compile(r"^\d+(\.\d+)?(ms|s|min|h|d)$")


def test_the_runs_view_lists_the_jobs_fastest_first_and_marks_the_one_that_is_not_ok(sweep, ui, page, tmp_path):
    _, parent, children = sweep
    fastest_first = sorted(children, key=lambda c: c.data.metrics.get("median_us", float("inf")))
    assert [c.data.tags["status"] for c in fastest_first] == ["ok", "ok", "unsupported"]
    # the winner the parent's description names: **Winner: math (1.77× over naive)**
    winner = re.match(r"\*\*Winner: (\S+) ", parent.data.tags["mlflow.note.content"]).group(1)
    page.goto(ui["jobs"])
    rows = [page.locator(f'[role="row"][row-id="{child.info.run_id}"]') for child in fastest_first]
    with screenshot_after(page, tmp_path / "ui-runs-table.png"):  # as it opens, in a 1280×800 window
        expect(page.get_by_text(f"{len(children)} matching runs")).to_be_visible()  # the jobs, not their parent
        # the first row is the winner's, in sight
        first = page.locator('[role="row"][row-index="0"]')
        expect(first.get_by_role("link", name=winner, exact=True)).to_be_in_viewport()
        # the median's unit is in its column's name, and in the description, which reads at a glance
        header = page.locator('.ag-header-cell[col-id="metrics.`median_us`"]')
        expect(header).to_be_in_viewport()
        expect(header).to_contain_text("median_us")
        for index, (child, row) in enumerate(zip(fastest_first, rows)):
            # AG Grid draws a row as a pinned part (name, Created) and a scrolling part, both with the run's id
            expect(row.first).to_have_attribute("row-index", str(index))
            expect(row.get_by_role("link", name=child.info.run_name, exact=True)).to_be_in_viewport()
            description = child.data.tags["mlflow.note.content"]
            cell = row.locator('[col-id="attributes.`Description`"]')
            expect(cell).to_be_in_viewport()  # no scrolling sideways
            if child.data.tags["status"] == "ok":
                expect(cell).to_have_text(description)  # `26.1 µs · 1.09 GFLOP/s · math`, whole
                assert " µs · " in description and "FLOP/s" in description, description
                assert _shown_whole(cell), description
                median = row.locator('[col-id="metrics.`median_us`"]')
                expect(median).to_be_in_viewport()
                expect(median).to_have_text(repr(child.data.metrics["median_us"]))  # every digit, uncut
                assert _shown_whole(median), child.data.metrics["median_us"]
            else:
                expect(cell).to_contain_text(description[:40])
            status = row.locator('[col-id="tags.`status`"]')
            expect(status).to_be_in_viewport()
            expect(status).to_have_text(child.data.tags["status"])
            assert _shown_whole(status), child.data.tags["status"]
            duration = row.locator('[col-id="duration"]')
            expect(duration).to_have_text(DURATION)
            # The run's status mark has no text: its colour is what tells a FAILED run from a FINISHED one
            mark = row.locator('[col-id="runDateAndNestInfo"] [role="img"]')
            expect(mark).to_be_in_viewport()
            colour = _main_colour(mark.evaluate("icon => getComputedStyle(icon).color"))
            assert colour == ("green" if child.info.status == "FINISHED" else "red"), (child.info.run_name, colour)
