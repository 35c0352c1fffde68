"""The `attnbench` command: tools around the sweeps that `python run.py` runs (`attnbench --help`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnbench.credentials import hide_in_arguments, mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help="upload a sweep folder's saved results to an MLflow store (idempotent)")
    sync.add_argument("folder", type=Path, help="a sweep folder (multirun/DATE/TIME) or a single run's folder")
    sync.add_argument("--uri", help="the store (default: the one the sweep was configured with, else "
                                    "$MLFLOW_TRACKING_URI, else <repo>/mlruns/mlflow.db)")
    sync.add_argument("--experiment", help="the MLflow experiment (default: the sweep's tracking.experiment)")
    args = parser.parse_args(hide_in_arguments(sys.argv[1:] if argv is None else argv))
    return _sync(args)


def _sync(args: argparse.Namespace) -> int:
    from attnbench.credentials import real_uri
    from attnbench.sync import SyncProblem, sync

    try:
        done = sync(args.folder, real_uri(args.uri) if args.uri else None, args.experiment)
    except SyncProblem as e:
        print(f"attnbench sync: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the store failed part-way: a later sync picks up from there
        print(mask(f"attnbench sync: the store failed part-way ({type(e).__name__}: {str(e).splitlines()[0]}); "
                   "run the same command again once it works"), file=sys.stderr)
        return 2
    print(f"attnbench sync: {done.uploaded} results uploaded, {done.already} already in {done.store} "
          f"(experiment {done.experiment}), {done.skipped} skipped jobs without a run of their own")
    return 0


if __name__ == "__main__":
    sys.exit(main())
