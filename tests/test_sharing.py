"""A shared experiment file cannot run code, read the environment or redirect results; credentials in a tracking
URI are never shown or recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attnbench.harness.safety import UnsafeExperiment, load_experiment
from attnbench.store.credentials import hide_in_arguments, mask, real_uri
from conftest import FAST_TIMING, FIXTURES, REPO, run_script
from servers import mlflow_server

HOSTILE = FIXTURES / "experiments"
TINY = ["shape=tiny", "device=cpu", *FAST_TIMING]


@pytest.mark.parametrize("name, key", [
    ("callback_open", "hydra.callbacks.pwn._target_"),
    ("callback_copyfile", "hydra.callbacks.steal._target_"),
    ("callback_urlopen", "hydra.callbacks.leak._target_"),
    ("job_logging", "hydra.job_logging"),
    ("hydra_logging", "hydra.hydra_logging"),
    ("env_copy", "hydra.job"),
    ("launcher", "hydra.launcher"),
    ("sweep_dir", "hydra.sweep"),
    ("tracking_uri", "tracking"),
    ("env_in_value", "shape.seq_len"),
    ("custom_resolver", "dtype"),
    ("target_in_group", "model._target_"),
    ("reads_tracking", "hydra.sweeper.params.backend"),
    ("package_hydra", "# @package"),
    ("no_package", "# @package"),
    ("defaults_hydra_group", "defaults[0]"),
    ("defaults_package", "defaults[0]"),
    ("sweep_param_tracking", "hydra.sweeper.params.tracking.uri"),
    ("sweep_param_hydra", "hydra.sweeper.params.+hydra.callbacks.x._target_"),
    ("unknown_key", "sead"),
])
def test_a_hostile_experiment_file_is_refused_naming_the_key_and_the_file(name, key):
    path = HOSTILE / f"{name}.yaml"
    with pytest.raises(UnsafeExperiment) as refused:
        load_experiment(path.read_text(), str(path))
    assert str(refused.value).startswith(f"{path}: {key}: ") and "\n" not in str(refused.value)


@pytest.mark.parametrize("path", [*sorted((REPO / "experiments").glob("*.yaml")), HOSTILE / "fine.yaml"],
                         ids=lambda p: p.stem)
def test_a_sweep_definition_passes(path):
    assert load_experiment(path.read_text(), str(path)) is not None


def test_an_unparsable_experiment_file_names_its_file_and_line():
    path = HOSTILE / "unparsable.yaml"
    with pytest.raises(UnsafeExperiment, match=rf"^{path}, line 5, column 8: not valid YAML: "):
        load_experiment(path.read_text(), str(path))


def test_experiment_files_come_through_the_check_when_hydra_composes(compose_cfg):
    fine = compose_cfg(f"hydra.searchpath=[attnbench-experiments://{HOSTILE}]", "experiment=fine",
                       return_hydra_config=True)
    assert fine.shape.seq_len == 16 and fine.hydra.sweeper.params["shape.seq_len"] == "16,32"
    with pytest.raises(UnsafeExperiment, match="callback_open.yaml: hydra.callbacks.pwn._target_"):
        compose_cfg(f"hydra.searchpath=[attnbench-experiments://{HOSTILE}]", "experiment=callback_open")


@pytest.mark.slow
def test_running_a_hostile_file_runs_nothing_of_it(fresh_store, tmp_path):
    store = fresh_store  # an empty folder: the refused commands must not even create the database
    canary = tmp_path / "canary.txt"
    canary.write_text("precious")
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "evil.yaml").write_text((HOSTILE / "callback_open.yaml").read_text().replace(
        "/tmp/attnbench-canary", str(canary)))
    (folder / "leak.yaml").write_text((HOSTILE / "env_in_value.yaml").read_text())
    for name in ("evil", "leak"):
        proc = run_script("-m", f"experiment={name}", *TINY, f"hydra.searchpath=[attnbench-experiments://{folder}]",
                          store=store, cwd=tmp_path, env={"MY_SECRET_TOKEN": "hunter2"})
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert f"{folder}/{name}.yaml: " in proc.stderr
    assert canary.read_text() == "precious"
    assert not (tmp_path / "multirun").exists() and list(store.iterdir()) == []
    assert not _files_containing(tmp_path, b"hunter2")


def _files_containing(folder: Path, secret: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret in p.read_bytes()]


def test_credentials_are_masked_and_kept_for_connecting():
    arguments = hide_in_arguments(["run.py", "tracking.uri=http://alice:s3cret@host:5000", "seed=1"])
    assert arguments[1] == "tracking.uri=http://alice:***@host:5000"
    assert real_uri("http://alice:***@host:5000") == "http://alice:s3cret@host:5000"
    assert mask("postgresql://bob:pw@db/mlflow and https://token@host") == (
        "postgresql://bob:***@db/mlflow and https://***@host")
    assert mask("sqlite:////tmp/a@b/mlflow.db") == "sqlite:////tmp/a@b/mlflow.db"


@pytest.fixture
def tracking_server(tmp_path, empty_store_db):
    """A real MLflow server on a free port, its store and artifacts under tmp_path/server."""
    folder = tmp_path / "server"
    folder.mkdir()
    shutil.copyfile(empty_store_db, folder / "mlflow.db")  # already migrated: the server starts a second sooner
    with mlflow_server(f"sqlite:///{folder}/mlflow.db", folder / "artifacts") as url:
        yield int(url.rsplit(":", 1)[1]), folder


@pytest.mark.slow
def test_a_password_in_the_tracking_uri_is_used_and_recorded_nowhere(tracking_server, tmp_path):
    port, server_folder = tracking_server
    proc = run_script("-m", "seed=1,2", *TINY, f"tracking.uri=http://alice:s3cret@127.0.0.1:{port}", store=None,
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "alice:***@127.0.0.1" in proc.stdout and "s3cret" not in proc.stdout + proc.stderr
    assert len(list(server_folder.rglob("result.json"))) == 2  # the runs' artifacts reached the server
    assert not _files_containing(tmp_path, b"s3cret")  # sweep folder, job logs, .hydra, the server's store
