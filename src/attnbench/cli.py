"""The `attnbench` command: tools around the sweeps that `python run.py` runs (`attnbench --help`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnbench.store.credentials import hide_in_arguments, mask

# Exit codes of the store-reading commands (docs/cli.md: Exit codes).
EXIT_REFUSED = 1  # a run that is not there or not what was asked for, a store that cannot be read, a bad value
EXIT_STORE_FAILED = 2  # the store failed part-way (the same command again, once it works)
EXIT_REGRESSION = 3  # compare --fail-if-slower: a case got significantly slower, or stopped being ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help="upload a sweep folder's saved results to an MLflow store (idempotent)")
    sync.add_argument("folder", type=Path, help="a sweep folder (multirun/DATE/TIME) or a single run's folder")
    sync.add_argument("--uri", help="the store (default: the one the sweep was configured with, else "
                                    "$MLFLOW_TRACKING_URI, else <repo>/mlruns/mlflow.db)")
    sync.add_argument("--experiment", help="the MLflow experiment (default: the sweep's tracking.experiment)")
    report = commands.add_parser("report", help="a sweep's summary.csv, summary.md and plots, from MLflow; logged to "
                                                "its parent run, whose description becomes the summary")
    report.add_argument("run", nargs="?", metavar="PARENT_RUN_ID", help="the sweep's parent run (default: the "
                                                                          "latest sweep)")
    report.add_argument("--experiment", help="the latest sweep of this MLflow experiment")
    report.add_argument("--baseline", metavar="BACKEND", help="speedups against this backend (default: the slowest "
                                                              "backend of each problem)")
    report.add_argument("--out", type=Path, help="folder for the files (default: the sweep's folder when it is "
                                                 "on this machine, else reports/<run id>)")
    compare = commands.add_parser("compare", help="two sweeps (or jobs) case by case, with a verdict from both "
                                                  "runs' samples; --rerun: the command that reproduces a run")
    compare.add_argument("runs", nargs="*", metavar="RUN", help="RUN_A RUN_B: two parent runs (or two job runs)")
    compare.add_argument("--fail-if-slower", type=float, metavar="PCT", help=f"exit {EXIT_REGRESSION} when a case "
                         "of B is significantly slower than in A by PCT percent or more, or no longer ok")
    compare.add_argument("--force", action="store_true", help="compare even when the two sides ran on another "
                         "card, torch, CUDA, cuDNN or thread count (said as warnings)")
    compare.add_argument("--rerun", metavar="RUN_ID", help="print the `python run.py ...` command that reproduces "
                                                           "this sweep (parent run) or job (child run)")
    url = commands.add_parser("url", help="save the MLflow UI view of a sweep (its jobs, the useful columns, fastest "
                                          "first) and print its links")
    url.add_argument("run", nargs="?", metavar="PARENT_RUN_ID", help="default: the latest sweep")
    url.add_argument("--base", help="the UI's address (default: the tracking server, else http://127.0.0.1:5000)")
    ls = commands.add_parser("ls", help="the store's sweeps, newest first: name, start, jobs by status, winner, "
                                        "run id")
    ls.add_argument("--experiment", help="only this MLflow experiment's sweeps (default: every experiment)")
    ls.add_argument("--limit", type=_positive, default=20, metavar="N", help="the N newest sweeps (default: 20)")
    show = commands.add_parser("show", help="one sweep (its jobs, as the end-of-sweep table) or one job")
    show.add_argument("run", metavar="RUN_ID", help="a sweep's parent run or a job's run (`attnbench ls` lists them)")
    for command in (report, compare, url, ls, show):
        command.add_argument("--uri", help="the store (default: $MLFLOW_TRACKING_URI, else <repo>/mlruns/mlflow.db)")
    args = parser.parse_args(hide_in_arguments(sys.argv[1:] if argv is None else argv))
    if args.command == "compare" and not (len(args.runs) == 2 and not args.rerun or not args.runs and args.rerun):
        parser.error("compare takes two runs (RUN_A RUN_B) or --rerun RUN_ID; got "
                     f"{len(args.runs)} runs{' and --rerun' if args.rerun else ''}")
    return {"sync": _sync, "report": _report, "compare": _compare, "url": _url, "ls": _ls,
            "show": _show}[args.command](args)


def _positive(text: str) -> int:
    """--limit: a whole number of 1 or more (argparse says which option, and exits 2 with the usage)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more; got {text!r}")
    return value


def _sync(args: argparse.Namespace) -> int:
    from attnbench.harness.sync import SyncProblem, sync
    from attnbench.store.credentials import real_uri

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
          f"(experiment {done.experiment}), {done.skipped} skipped jobs without a run of their own"
          + (f"; {done.damaged} result files cannot be read (said above): not uploaded" if done.damaged else ""))
    return EXIT_REFUSED if done.damaged else 0



def _reading(name: str, work) -> int:
    """Run a command that reads the store: one line and EXIT_REFUSED for bad input, EXIT_STORE_FAILED when the
    store fails part-way."""
    from mlflow.exceptions import MlflowException

    from attnbench.store.tracking.preflight import first_line
    from attnbench.store.tracking.sweeps import SweepProblem

    try:
        return work()
    except SweepProblem as e:
        print(f"attnbench {name}: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except (MlflowException, OSError) as e:  # the store (or the network to it) failed: whatever it says, one line
        print(f"attnbench {name}: the store failed ({first_line(e)}); run the same command again once it works",
              file=sys.stderr)
        return EXIT_STORE_FAILED


def _client(args: argparse.Namespace):
    from attnbench.store.credentials import real_uri
    from attnbench.store.tracking.store import default_uri
    from attnbench.store.tracking.sweeps import open_client

    return open_client(real_uri(args.uri) if args.uri else default_uri())


def _report(args: argparse.Namespace) -> int:
    def work() -> int:
        from attnbench.analysis.sweep_report import report_sweep
        from attnbench.store.session import StoreSession

        client = _client(args)
        done = report_sweep(client, args.run, args.out, args.baseline, args.experiment)
        StoreSession(client, done.experiment_id, client.tracking_uri).log_report(done.parent_id, done.files,
                                                                                 done.description)
        print(done.summary)
        files = ", ".join(str(path) for path in done.files)
        print(f"attnbench report: {done.title} (parent run {done.parent_id}): wrote {files}; logged them to the "
              "parent run, whose description is now this summary")
        return 0

    return _reading("report", work)


def _compare(args: argparse.Namespace) -> int:
    def work() -> int:
        from rich.console import Console

        from attnbench.analysis import compare
        from attnbench.analysis.render import compare_table

        client = _client(args)
        if args.rerun:
            print(compare.rerun_command(client, args.rerun))
            return 0
        result = compare.compare_runs(client, *args.runs)
        if result.mismatches and not args.force:
            print(f"attnbench compare: refused: A and B ran differently ({'; '.join(result.mismatches)}), so their "
                  "times are not comparable; --force compares them anyway", file=sys.stderr)
            return EXIT_REFUSED
        for line in result.mismatches + result.warnings:
            print(f"attnbench compare: warning: {line}", file=sys.stderr)
        for line in result.notes:
            print(f"attnbench compare: {line}")
        Console().print(compare_table.table(result))
        print(compare_table.tally(result))
        if args.fail_if_slower is not None:
            regressed = [pair for pair in result.pairs if pair.regressed(args.fail_if_slower)]
            if regressed:
                print(f"attnbench compare: {len(regressed)} cases regressed (slower by {args.fail_if_slower:g}% or "
                      f"more beyond noise, or no longer ok): " + "; ".join(p.label for p in regressed),
                      file=sys.stderr)
                return EXIT_REGRESSION
        return 0

    return _reading("compare", work)


def _url(args: argparse.Namespace) -> int:
    def work() -> int:
        from attnbench.analysis import view
        from attnbench.store.tracking.store import default_uri
        from attnbench.store.tracking.sweeps import sweep_of

        client = _client(args)
        parent, runs = sweep_of(client, args.run)
        view.save_view(client, parent, runs)
        base = (args.base or view.ui_base(args.uri or default_uri())).rstrip("/")
        experiment = parent.info.experiment_id
        print(f"the sweep ({parent.info.run_name}): {view.run_url(base, experiment, parent.info.run_id)}")
        print(f"its jobs (saved view {view.VIEW_ID!r}): {view.runs_url(base, experiment)}")
        return 0

    return _reading("url", work)


def _ls(args: argparse.Namespace) -> int:
    def work() -> int:
        from attnbench.analysis.listing import sweep_lines
        from attnbench.analysis.render.console import render
        from attnbench.analysis.render.listing_table import sweeps_table

        client = _client(args)
        lines = sweep_lines(client, args.experiment, args.limit)
        if not lines:
            print(f"attnbench ls: no sweep in {mask(client.tracking_uri)} yet: run one with `python run.py -m ...`")
            return 0
        render(sweeps_table(lines, mask(client.tracking_uri)))
        return 0

    return _reading("ls", work)


def _show(args: argparse.Namespace) -> int:
    def work() -> int:
        from attnbench.analysis.listing import SweepShown, show
        from attnbench.analysis.render.console import render
        from attnbench.analysis.render.listing_table import job_view, sweep_view

        shown = show(_client(args), args.run)
        render(sweep_view(shown) if isinstance(shown, SweepShown) else job_view(shown))
        return 0

    return _reading("show", work)


if __name__ == "__main__":
    sys.exit(main())
