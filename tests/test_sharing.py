"""A shared experiment file cannot run code, read the environment or redirect results; credentials in a tracking
URI are never shown or recorded."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from attnbench.harness.safety import UnsafeExperiment, load_experiment, read_experiment
from attnbench.store.credentials import hide_in_arguments, mask, real_uri
from conftest import FAST_TIMING, FIXTURES, REPO, run_script, tracked_runs
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
    ("two_headers", "# @package"),  # Hydra reads the last @package line: hydra.job_logging.handlers
    ("other_directive", "# @package"),
    ("defaults_path", "defaults[0]"),
    ("sweep_param_path", "hydra.sweeper.params.backend"),
    ("sweep_param_url", "hydra.sweeper.params.mask"),
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


def _alias_bomb(levels: int) -> str:
    """Each level names the one below ten times: 10**levels values once expanded, in a few hundred bytes."""
    lines = ["# @package _global_", "a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, says", [
    (_alias_bomb(6), "more than 100,000 values once its aliases are expanded"),
    ("# @package _global_\nseed: &s [*s]\n", "line 2: an alias that contains itself"),
    ("# @package _global_\n" + "# padding\n" * 100_000, "larger than 1,000,000 characters"),
], ids=["alias_bomb", "recursive_alias", "too_large"])
def test_a_file_too_large_to_be_a_sweep_is_refused_before_it_is_expanded(text, says):
    with pytest.raises(UnsafeExperiment, match=f"^shared.yaml: {says}"):
        load_experiment(text, "shared.yaml")


def test_a_file_is_read_no_further_than_the_limit_and_as_utf8_text():
    with pytest.raises(UnsafeExperiment, match=r"^x.yaml: larger than 1,000,000 bytes"):
        read_experiment(b"#" * 1_000_001, "x.yaml")
    with pytest.raises(UnsafeExperiment, match=r"^x.yaml: not UTF-8 text \(byte 20\)"):
        read_experiment(b"# @package _global_\n\xff: 1\n", "x.yaml")


@pytest.mark.slow
def test_a_sweep_reads_no_experiment_file_it_does_not_name(store, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    shutil.copy(HOSTILE / "fine.yaml", folder)
    (folder / "bomb.yaml").write_text(_alias_bomb(9))  # 10**9 values: minutes and gigabytes, if it were read
    shutil.copy(HOSTILE / "unparsable.yaml", folder)
    proc = run_script("-m", "experiment=fine", "mask=none,causal", *TINY,
                      f"hydra.searchpath=[attnbench-experiments://{folder}]", store=store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "multirun").glob("*/result.json"))) == 8  # 2 backends × 2 lengths × 2 masks


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


def _shared_folder(tmp_path: Path, canary: Path, *names: str) -> Path:
    """A folder of shared files from the hostile fixtures, aimed at the canary file."""
    folder = tmp_path / "shared"
    folder.mkdir(exist_ok=True)
    for name in names:
        text = (HOSTILE / f"{name}.yaml").read_text().replace("/tmp/attnbench-canary", str(canary))
        (folder / f"{name}.yaml").write_text(text)
    return folder


def _refused_and_untouched(proc, tmp_path: Path, store: Path, canary: Path, says: str) -> None:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert says in proc.stderr, proc.stderr[-3000:]
    assert canary.read_text() == "precious"
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()
    assert list(store.iterdir()) == []


@pytest.mark.slow
def test_a_file_whose_last_header_puts_it_under_hydra_runs_nothing(fresh_store, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("precious")
    folder = _shared_folder(tmp_path, canary, "two_headers")
    proc = run_script("-m", "experiment=two_headers", *TINY, f"hydra.searchpath=[attnbench-experiments://{folder}]",
                      store=fresh_store, cwd=tmp_path)
    _refused_and_untouched(proc, tmp_path, fresh_store, canary, f"{folder}/two_headers.yaml: # @package: 2 header")


@pytest.mark.slow
@pytest.mark.parametrize("group", ["experiment", "backend"])
def test_an_option_that_is_a_path_loads_no_file(fresh_store, tmp_path, group):
    # Hydra joins GROUP/OPTION to each config folder: `..` in an option reaches a file that no check has seen.
    canary = tmp_path / "canary.txt"
    canary.write_text("precious")
    folder = _shared_folder(tmp_path, canary, "callback_open")
    option = os.path.relpath(folder / "callback_open", REPO / "conf" / group)
    proc = run_script("-m", f"{group}={option}", *TINY, store=fresh_store, cwd=tmp_path)
    _refused_and_untouched(proc, tmp_path, fresh_store, canary, f"{group}={option!r}: not an option name")


@pytest.mark.slow
def test_a_sweep_value_that_is_a_path_loads_no_file(fresh_store, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("precious")
    folder = _shared_folder(tmp_path, canary, "callback_open")
    option = os.path.relpath(folder / "callback_open", REPO / "conf" / "backend")
    (folder / "sweep.yaml").write_text(f"# @package _global_\nhydra:\n  sweeper:\n    params:\n"
                                       f"      backend: math,{option}\n")
    proc = run_script("-m", "experiment=sweep", *TINY, f"hydra.searchpath=[attnbench-experiments://{folder}]",
                      store=fresh_store, cwd=tmp_path)
    _refused_and_untouched(proc, tmp_path, fresh_store, canary,
                           f"{folder}/sweep.yaml: hydra.sweeper.params.backend: {option!r}: expected an option name")


def test_options_are_names_and_paths_are_not():
    from hydra_plugins.attnbench_experiments.option_names import is_name_path
    assert all(map(is_name_path, ["config", "hydra/launcher/basic", "backend/flash", "experiment/seed_sdpa.yaml",
                                  "shape/gqa-8", "model/v1.2"]))
    assert not any(map(is_name_path, ["backend/../x", "experiment/../../tmp/x", "backend//etc/x", "backend/.x",
                                      "experiment/pkg:x", "backend/a\\b", "backend/"]))


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


@pytest.mark.slow
def test_a_redacted_sweep_names_no_host_and_no_home_and_still_closes_its_dead_runs(store, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from attnbench.store import redact

    home = tmp_path / "home"
    work = home / "work"
    work.mkdir(parents=True)
    monkeypatch.setattr(redact, "SALT_FILE", home / ".cache" / "attnbench" / "host-salt")  # the sweep's, below
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("attnbench") or client.get_experiment(
        client.create_experiment("attnbench"))
    dead = subprocess.Popen(["true"])
    dead.wait()  # a redacted run this machine's process left RUNNING when it died
    orphan = client.create_run(experiment.experiment_id, tags={"attnbench.host": redact.host_id(),
                                                               "attnbench.pid": str(dead.pid)}).info.run_id
    proc = run_script("-m", "seed=1,2", *TINY, "tracking.redact=true", store=store, cwd=work,
                      env={"HOME": str(home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert client.get_run(orphan).info.status == "KILLED"  # found by its hashed host
    _, parents, children = tracked_runs(store)
    parents = [run for run in parents if run.info.run_id != orphan]
    assert len(parents) == 1 and len(children) == 2
    for run in parents + children:
        values = run.data.tags | run.data.params
        assert not [key for key, value in values.items() if str(home) in value], run.info.run_name
        named = {key: values[key] for key in redact.HOST_KEYS & values.keys()}
        assert named and set(named.values()) == {redact.host_id()} != {socket.gethostname()}
    assert parents[0].data.tags["sweep.dir"] == "~/work/multirun"


@pytest.mark.slow
def test_an_unredacted_sweep_names_its_host(store, tmp_path):
    proc = run_script("seed=1", *TINY, store=store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, (run,), _ = tracked_runs(store)  # a single run: no parent
    assert run.data.tags["attnbench.host"] == socket.gethostname()
