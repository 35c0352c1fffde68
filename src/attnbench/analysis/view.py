"""The MLflow UI's view of a sweep: its jobs, with the columns that answer, fastest first.

MLflow 3 keeps the runs table's columns in the browser (local storage), not in the URL: a URL carries only the
search (`searchFilter`, `orderByKey`, `orderByAsc`, `startTime`, `lifecycleFilter`, ...). A saved view carries
both. MLflow (3.15+, the Views menu above the runs table) stores one as an experiment tag
`mlflow.sharedViewState.<id>` holding `{"name", "createdAt", "updatedAt", "state"}`, `state` being the search and
the table's settings as JSON, and opens it at `#/experiments/<experiment>/runs?viewStateShareKey=<id>`. attnbench
saves one view per experiment, `attnbench`, overwritten with the sweep asked for: the UI refuses to save more than
40 views per experiment, so one per sweep would soon crowd out the user's own.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

from attnbench.analysis.pivot import IMPLEMENTATION, JobRecord, problem_keys, problem_of, varied
from attnbench.analysis.roofline import bound_of
from attnbench.store.credentials import mask
from attnbench.store.tracking.names import PARENT_TAG

VIEW_ID = "attnbench"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"
LOCAL_UI = "http://127.0.0.1:5000"  # `make ui`
ALWAYS_SHOWN = ["attributes.`Description`", "tags.`status`", "metrics.`median_us`"]


def columns(runs: list) -> list[str]:
    """The description, status, median and throughput (TFLOP/s, GB/s for memory-bound problems, both where the sweep
    has both: attnbench.analysis.roofline), then the params that varied: implementation, then problem."""
    jobs = [JobRecord(run.info.run_name or "", dict(run.data.params), dict(run.data.metrics), dict(run.data.tags))
            for run in runs]
    keys = problem_keys(jobs)
    problems: dict[str, list[JobRecord]] = defaultdict(list)
    for job in jobs:
        problems[problem_of(job, keys)].append(job)
    memory = {bound_of(found).memory for found in problems.values()} or {False}
    throughput = [f"metrics.`{metric}`" for metric, bound in (("tflops", False), ("gbps", True)) if bound in memory]
    implementation = [k for k in varied(jobs) if k.startswith("backend.") or k in IMPLEMENTATION]
    return ALWAYS_SHOWN + throughput + [f"params.`{k}`" for k in implementation + keys]


def view_state(parent_id: str, runs: list) -> dict:
    return {
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent_id}'",  # the sweep's jobs, flat: their parent is not listed
        "orderByKey": "metrics.`median_us`",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "selectedColumns": columns(runs),
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
