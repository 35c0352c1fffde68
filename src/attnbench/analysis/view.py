"""The MLflow UI's view of a sweep: its jobs, with the columns that answer, fastest first.

MLflow 3 keeps the runs table's columns in the browser (local storage), not in the URL: a URL carries only the
search (`searchFilter`, `orderByKey`, `orderByAsc`, `startTime`, `lifecycleFilter`, ...). A saved view carries
both. MLflow (3.15+, the Views menu above the runs table) stores one as an experiment tag
`mlflow.sharedViewState.<id>` holding `{"name", "createdAt", "updatedAt", "state"}`, `state` being the search and
the table's settings as JSON, and opens it at `#/experiments/<experiment>/runs?viewStateShareKey=<id>`. attnbench
saves one view per experiment, `attnbench`, overwritten with the sweep asked for: the UI refuses to save more than
40 views per experiment, so one per sweep would soon crowd out the user's own.

MLflow's runs table (3.17) has no number format and no unit for a metric: a cell shows the value as logged
(`26.144578100684157`), cut at its column's edge (100 px by default), under the metric's key (`median_us`). What
reads at a glance is each job's description (`26.1 µs · 1.25 GFLOP/s · math`: attnbench.store.tracking.describe).
The view sets its columns' order and widths (the UI state's `columnOrder` and `columnWidths`): after the name, start
and duration, the description, wide enough for the longest ok job's line, then the status, then each metric as
wide as its longest value, so that a 1280-pixel window shows every job's description, status and, unless the
descriptions are long, whole median without scrolling sideways.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from functools import lru_cache

from attnbench.analysis.pivot import IMPLEMENTATION, JobRecord, problem_keys, problem_of, varied
from attnbench.core.roofline import bound_of
from attnbench.store.credentials import mask
from attnbench.store.tracking.describe import NOTE
from attnbench.store.tracking.names import PARENT_TAG

VIEW_ID = "attnbench"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"
LOCAL_UI = "http://127.0.0.1:5000"  # `make ui`
# The runs table's own columns: the run's name and start (pinned to the left) and its duration.
RUN_NAME, CREATED, DURATION = "attributes.`Run Name`", "runDateAndNestInfo", "duration"
DESCRIPTION, STATUS = "attributes.`Description`", "tags.`status`"
MEDIAN = "metrics.`median_us`"
# The table's text: 12 px of DejaVu Sans (Chromium's sans-serif on Linux; other systems' are narrower), measured with
# matplotlib's copy of the font; a cell's padding, 11 px a side, and 4 px to spare. A per-character guess (6.2 px)
# cut "59 µs · 556 MFLOP/s · eager PyTorch ops" by 2 px. Without matplotlib: 7.5 px a character, the widest digit.
FONT_PX, PADDING_PX, SPARE_PX, FALLBACK_CHAR_PX = 12, 22, 4, 7.5
NAME_MARK_PX = 20  # the run's colour dot before its name


def columns(runs: list) -> list[str]:
    """The description, the problem's params that varied (which problem a row's number is for: rows are sorted by
    median across problems), status, median and throughput (TFLOP/s, GB/s for memory-bound problems, both where the
    sweep has both: attnbench.core.roofline), then the implementation's params that varied."""
    jobs = [JobRecord(run.info.run_name or "", dict(run.data.params), dict(run.data.metrics), dict(run.data.tags))
            for run in runs]
    keys = problem_keys(jobs)
    problems: dict[str, list[JobRecord]] = defaultdict(list)
    for job in jobs:
        problems[problem_of(job, keys)].append(job)
    memory = {bound_of(found).memory for found in problems.values()} or {False}
    throughput = [f"metrics.`{metric}`" for metric, bound in (("tflops", False), ("gbps", True)) if bound in memory]
    implementation = [k for k in varied(jobs) if k.startswith("backend.") or k in IMPLEMENTATION]
    return ([DESCRIPTION, *(f"params.`{k}`" for k in keys), STATUS, MEDIAN, *throughput]
            + [f"params.`{k}`" for k in implementation])


@lru_cache(maxsize=1)
def _font():
    try:
        from matplotlib.font_manager import FontProperties, findfont
        from matplotlib.ft2font import FT2Font

        return FT2Font(findfont(FontProperties(family="DejaVu Sans"), fallback_to_default=False))
    except Exception:  # noqa: BLE001 - no matplotlib or no such font: the per-character allowance
        return None


def text_px(text: str) -> float:
    """The width of `text` in the runs table's font."""
    font = _font()
    if font is None:
        return FALLBACK_CHAR_PX * len(text)
    font.set_size(FONT_PX, 72)  # 72 dpi: points are pixels
    font.set_text(text)
    return font.get_width_height()[0] / 64  # 26.6 fixed point


def _px(texts, least: int, most: int) -> int:
    widest = max((text_px(t) for t in texts), default=0.0)
    return int(min(most, max(least, PADDING_PX + SPARE_PX + widest + 0.999)))


def widths(runs: list, shown: list[str]) -> dict[str, int]:
    """The width in pixels of the columns that need one, to fit what they hold: the run names; the description, as
    the longest ok job's (a reason, longer, is cut: the UI shows 50 characters of a description, and all of it on
    hover); the statuses; each metric's longest value as the UI writes it (the shortest digits that round-trip, as
    Python's repr). MLflow's own width for the start, 150, fits "14 seconds ago"."""
    tags = [run.data.tags for run in runs]
    found = {RUN_NAME: NAME_MARK_PX + _px([run.info.run_name or "" for run in runs], 100, 240),
             DESCRIPTION: _px([t.get(NOTE, "") for t in tags if t.get("status") == "ok"], 200, 360),
             STATUS: _px([t.get("status", "") for t in tags], 80, 160)}
    for column in shown:
        if column.startswith("params."):  # as wide as its header (the param's key) or its longest value
            key = column[len("params.`"):-1]
            found[column] = _px([key, *(run.data.params.get(key, "") for run in runs)], 80, 200)
        if column.startswith("metrics."):
            key = column[len("metrics.`"):-1]
            found[column] = _px([repr(run.data.metrics[key]) for run in runs if key in run.data.metrics], 100, 200)
    return found


def view_state(parent_id: str, runs: list) -> dict:
    shown = columns(runs)
    return {
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent_id}'",  # the sweep's jobs, flat: their parent is not listed
        "orderByKey": MEDIAN,
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "selectedColumns": shown,
        "columnOrder": [RUN_NAME, CREATED, DURATION] + shown,  # a column left out would go to the right end
        "columnWidths": widths(runs, shown),
        "runsHiddenMode": "SHOW_ALL",  # every job in the charts, not only the first 10
    }


def save_view(client, parent, runs: list) -> None:
    now = int(time.time() * 1000)
    envelope = {"name": f"attnbench: {parent.info.run_name}", "createdAt": now, "updatedAt": now,
                "state": json.dumps(view_state(parent.info.run_id, runs))}
    client.set_experiment_tag(parent.info.experiment_id, VIEW_TAG, json.dumps(envelope))


def ui_base(uri: str) -> str:
    """Where the UI of a store is: the tracking server itself, else the one `make ui` starts."""
    return mask(uri).rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI


# The UI's "Model training" side: MLflow 3 opens an experiment, and a run's page, on its GenAI side otherwise (a run
# page there is headed "Evaluations", and its breadcrumb leads to the GenAI evaluations instead of the runs table).
TRAINING_SIDE = "workflowType=machine_learning"


def runs_url(base: str, experiment_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs?{TRAINING_SIDE}&viewStateShareKey={VIEW_ID}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_SIDE}"
