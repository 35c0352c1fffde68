"""What attnbench relies on that its upstreams do not promise: one test each, naming the one module that relies
on it, failing when the upstream behaviour changes (docs/architecture.md lists them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def test_hydra_reads_a_files_package_from_its_last_header_line():
    # attnbench.harness.safety.hydra_header reads an experiment file's header with Hydra's own
    # ConfigSource._get_header_dict, for the file check and for the experiments source to hand Hydra: the package
    # a file is checked for is the one it lands in.
    from hydra.plugins.config_source import ConfigSource

    text = "# @package a\n# @package _global_\nx: 1\n"
    assert ConfigSource._get_header_dict(text) == {"package": "_global_"}
    assert ConfigSource._get_header_dict("x: 1\n") == {"package": None}


def test_multiprocessing_runs_a_processs_finalizers_on_request():
    # attnbench/harness/worker.py runs them before os._exit: the locks a job's libraries made are released.
    script = ("import multiprocessing.util as u\n"
              "u.Finalize(None, lambda: print('finalized'), exitpriority=0)\n"
              "u._run_finalizers(0)\n"
              "import os; os._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "finalized\n", done.stderr


def test_dynamo_counts_each_graph_it_compiles():
    # attnbench/core/isolation.py (dynamo_graphs) reads this counter: the evidence that a job compiled something.
    from attnbench.core.isolation import dynamo_graphs

    before = dynamo_graphs()
    compiled = torch.compile(lambda x: torch.sin(x) + 1, backend="eager")
    compiled(torch.ones(3))
    assert dynamo_graphs() == before + 1


def test_the_mlflow_ui_opens_a_saved_view_from_an_experiment_tag():
    # attnbench/analysis/view.py writes a view as the tag `mlflow.sharedViewState.<id>` and links to it with
    # `viewStateShareKey`; the UI's bundle must still read both, and the state's keys attnbench sets.
    import mlflow

    from attnbench.analysis.view import VIEW_TAG, view_state

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    if not bundle.is_dir():
        pytest.skip("this MLflow install has no UI bundle")
    text = "\n".join(p.read_text(errors="ignore") for p in bundle.glob("*.js"))
    assert VIEW_TAG.rsplit(".", 1)[0] + "." in text and "viewStateShareKey" in text
    for key in view_state("0", []):
        assert re.search(rf"\b{key}\b", text), key


def test_loky_names_a_dead_workers_exit_code():
    # attnbench/harness/pool.py reads how a pool's one worker died from loky's TerminatedWorkerError, whose message
    # is the only place loky gives it ("The exit codes of the workers are {SIGKILL(-9)}").
    import signal

    from joblib.externals.loky import ProcessPoolExecutor
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    from attnbench.harness.pool import worker_death

    pool = ProcessPoolExecutor(max_workers=1)
    try:
        with pytest.raises(TerminatedWorkerError) as raised:
            pool.submit(signal.raise_signal, signal.SIGKILL).result(timeout=120)
    finally:
        pool.shutdown(wait=True)
    assert worker_death(raised.value) == "was killed by SIGKILL"
