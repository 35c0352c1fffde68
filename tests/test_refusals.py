"""Bad input on the command line: refused in one line, before any run is created in the store."""

from __future__ import annotations

from conftest import FAST_TIMING, REPO, run_script, tracked_runs

TINY = ["shape=tiny", "device=cpu", *FAST_TIMING]


def test_a_typo_in_a_swept_option_is_refused_in_one_line_and_leaves_no_run(store, tmp_path):
    proc = run_script("-m", "backend=math,flsh", *TINY, store=store, cwd=tmp_path)
    assert proc.returncode == 1
    _, parents, children = tracked_runs(store)
    assert [run.info.run_name for run in parents + children] == []  # no empty FAILED parent left behind
    assert not (tmp_path / "multirun" / "0").exists()  # no job started
    line = proc.stderr.strip().splitlines()[0]
    assert line.startswith("backend='flsh' is not an option: expected one of ") and "flash, " in line
    assert "Available options" not in proc.stderr  # Hydra's list, one option a line


def test_a_refused_sweep_never_loads_mlflow(store, tmp_path):
    # MLflow takes ~1.5 s to import; the callbacks Hydra creates before the sweeper checks the jobs must not need it.
    loaded = ("import atexit, runpy, sys\n"
              "atexit.register(lambda: print('mlflow loaded:', 'mlflow' in sys.modules, file=sys.stderr))\n"
              f"sys.argv = [{str(REPO / 'run.py')!r}] + sys.argv[1:]\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    script = tmp_path / "run_and_say.py"
    script.write_text(loaded)
    proc = run_script("-m", "backend=math,flsh", *TINY, store=store, cwd=tmp_path, script=script)
    assert proc.returncode == 1 and "backend='flsh' is not an option" in proc.stderr
    assert proc.stderr.strip().endswith("mlflow loaded: False")
