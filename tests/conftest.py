"""Shared fixtures: compose the real configs in-process, and run the real script in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from attnbench.core.job import run_job
from attnbench.core.record import Record
from attnbench.harness.config import job_spec, register_configs

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))  # test workloads, importable by the tests

register_configs()

# Inductor's first CPU compile in a process probes each vector ISA the CPU reports by compiling and loading a small
# C++ program: ~5 s, paid again by every sweep's job worker that compiles (attnbench compiles each job with a fresh
# cache, so nothing of it is kept). Trust the CPU's flags instead (torch's TORCHINDUCTOR_VEC_ISA_OK): the ISA picked
# is the same wherever the compiler can build for it. Set before any test imports torch's compiler; the tests'
# subprocesses inherit it.
os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "1")

# Small and quick: the e2e tests check structure and relations, not speed.
FAST_TIMING = ["timing.warmup_s=0.01", "timing.min_time_s=0.02", "timing.min_reps=3", "timing.max_reps=50"]


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> the job config Hydra would build, hydra node included."""

    def _compose(*overrides: str, return_hydra_config: bool = False):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)

    yield _compose
    GlobalHydra.instance().clear()


def run_config(cfg, **kwargs) -> Record:
    """The job a composed config asks for, measured in this process (as the job worker runs it)."""
    return run_job(job_spec(cfg), **kwargs)


def _command(args: tuple[str, ...], store: Path | None, cwd: Path, script: Path, env: dict | None):
    """Attnbench as a user runs it, against a throw-away store, with Hydra's swallowed callback exceptions turned
    back into errors so that a broken callback fails the test."""
    environment = os.environ | {"PYTHONWARNINGS": ""} | (env or {})
    if store is not None:
        environment["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
    cmd = [sys.executable, "-W", "error:Callback:UserWarning", str(script), *args,
           f"hydra.sweep.dir={cwd}/multirun", f"hydra.run.dir={cwd}/outputs"]
    return cmd, environment


def run_script(*args: str, store: Path | None, cwd: Path, script: Path = REPO / "run.py", timeout: int = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
    cmd, environment = _command(args, store, cwd, script, env)
    return subprocess.run(cmd, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


def start_script(*args: str, store: Path, cwd: Path, script: Path = REPO / "run.py") -> subprocess.Popen:
    """The script, started and left running (its output in cwd/stdout.txt and cwd/stderr.txt)."""
    cmd, environment = _command(args, store, cwd, script, None)
    return subprocess.Popen(cmd, cwd=cwd, env=environment, stdout=(cwd / "stdout.txt").open("w"),
                            stderr=(cwd / "stderr.txt").open("w"), text=True)


def wait_until(condition, what: str, timeout_s: float = 300) -> None:
    """Poll for a state another process reaches; the generous deadline only turns a hang into a failure."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


def job_is_running(job_dir: Path) -> bool:
    """The job's worker has started its work (its log says so): the job is inside its task."""
    log = job_dir / "run.log"
    return log.is_file() and "Building" in log.read_text()


def tracked_runs(store: Path, experiment: str = "attnbench"):
    """(client, parent runs, child runs) of the experiment in a test store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000) if found else []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def sweep_into_fresh_store(tmp: Path, *args: str):
    """`python run.py -m ARGS` into a fresh store under tmp: (store, client, its one parent run, its child runs,
    what it printed)."""
    store = tmp / "mlruns"
    store.mkdir()
    proc = run_script("-m", *args, store=store, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, (parent,), children = tracked_runs(store)
    return store, client, parent, children, proc.stdout


# Tests of what a report or a table shows, not of the machine: a loaded test machine must not make a job contended.
NEVER_CONTENDED = "timing.max_cpu_wait=1"

# One tiny CPU sweep that the report's and the console's tests both assert on: 2 lengths × math and naive (ok) and
# efficient (unsupported on a CPU), 2 samples a job (too few to separate anything: no winner, every speedup `~`).
SMALL_SWEEP = ["backend=math,naive,efficient", "shape=tiny", "device=cpu", "shape.seq_len=16,32", "timing.min_reps=2",
               "timing.max_reps=2", "timing.min_time_s=0", "timing.warmup_s=0", NEVER_CONTENDED]


@dataclass
class Sweep:
    folder: Path  # where it ran: its multirun/ and its store's mlruns/
    store: Path
    client: object
    parent: object  # its parent run and its child runs, as they were when it ended
    children: list
    stdout: str


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory) -> Sweep:
    """SMALL_SWEEP, run once per session into a fresh store. Tests may add runs to its store (the report's
    --rerun test does), not change its folder."""
    folder = tmp_path_factory.mktemp("small_sweep")
    return Sweep(folder, *sweep_into_fresh_store(folder, *SMALL_SWEEP))


@dataclass
class FailingSweep:
    folder: Path  # where it ran: multirun/ in it
    store: Path
    returncode: int
    default_model: str


@pytest.fixture(scope="session")
def failing_sweep(tmp_path_factory, empty_store_db) -> FailingSweep:
    """One sweep through the failing workloads (tests/fixtures), asserted on by test_e2e and test_endings: a job
    that raises (model=broken), then one that takes its worker down (model=crashing), then a normal job (the
    default model), which must still run, in the fresh worker the crash left it."""
    folder = tmp_path_factory.mktemp("failing_sweep")
    store = folder / "mlruns"
    store.mkdir()
    shutil.copyfile(empty_store_db, store / "mlflow.db")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        default_model = compose("config").model.name
    GlobalHydra.instance().clear()
    proc = run_script("-m", f"model=broken,crashing,{default_model}", "shape=tiny", "device=cpu", *FAST_TIMING,
                      f"hydra.searchpath=[file://{FIXTURES}/conf]", store=store, cwd=folder,
                      script=FIXTURES / "run_with_failing_workloads.py")
    (folder / "stderr.txt").write_text(proc.stderr)
    return FailingSweep(folder, store, proc.returncode, default_model)


@pytest.fixture(scope="session")
def empty_store_db(tmp_path_factory) -> Path:
    """An MLflow SQLite database, created and migrated once per session: MLflow's migrations take about a second,
    which every test store would otherwise pay again. Tests copy it (`store`); none writes to it."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("empty_store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates and migrates it
    assert {p.name for p in path.parent.iterdir()} == {"mlflow.db"}  # nothing left in a journal beside it
    return path


@pytest.fixture
def store(tmp_path: Path, empty_store_db: Path) -> Path:
    """A test's store folder, holding an empty MLflow database (a copy of the session's): as a store is after its
    first use. Creating one from nothing is tested where that is the point (`fresh_store`, sweep_into_fresh_store)."""
    path = tmp_path / "mlruns"
    path.mkdir()
    shutil.copyfile(empty_store_db, path / "mlflow.db")
    return path


@pytest.fixture
def fresh_store(tmp_path: Path) -> Path:
    """An empty store folder: the first command that uses it creates the database."""
    path = tmp_path / "mlruns"
    path.mkdir()
    return path


# The browser tests need what a developer's machine often lacks (Chromium, Playwright); their skip lines sit among
# the GPU tests' in the summary. Say it last, with how to run them.
BROWSER_TESTS = "tests/test_ui.py"


@pytest.hookimpl(wrapper=True, tryfirst=True)  # around the terminal's own summary: after its skip lines
def pytest_terminal_summary(terminalreporter):
    result = yield
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.nodeid.startswith(BROWSER_TESTS + "::")]
    if skipped:
        reasons = sorted({str(r.longrepr[2]).removeprefix("Skipped: ") for r in skipped
                          if isinstance(r.longrepr, tuple)})
        terminalreporter.write_sep("-", "browser tests skipped", yellow=True)
        terminalreporter.write_line(
            f"The {len(skipped)} browser tests ({BROWSER_TESTS}: the MLflow UI in headless Chromium) did not run: "
            f"{'; '.join(reasons)}. Install what it names, then `make test` runs them (CI installs both; "
            "docs/troubleshooting.md#skipped-tests).")
    return result
