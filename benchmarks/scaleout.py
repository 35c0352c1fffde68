"""One sweep run twice, one job after another and spread over GPUs: where each job ran, and whether the numbers held.

Reads the two sweep folders' saved results (result.json of each job) and prints markdown for docs/scale-out.md:
the jobs of the parallel sweep with their GPU and time span, each GPU's jobs checked for overlap, the medians of
both runs side by side, and the time from the first job's start to the last job's end in each.

    python benchmarks/scaleout.py multirun/SEQUENTIAL multirun/PARALLEL
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from attnbench.core.units import format_time
from attnbench.store.results import read_all


def _label(record: dict) -> str:
    params = record["params"]
    return f"{record['name']} S{params.get('shape.seq_len', '?')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sequential")
    parser.add_argument("parallel")
    args = parser.parse_args()
    seq, par = read_all(args.sequential), read_all(args.parallel)
    before = {_label(r): r for r in seq}
    start = min(r["started_ms"] for r in par)
    print("| job | GPU | UUID | from s | to s | side by side | median, one GPU | median, spread | ratio |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for record in sorted(par, key=lambda r: r["started_ms"]):
        tags, label = record["tags"], _label(record)
        spans[tags.get("placement.gpu_uuid", "?")].append((record["started_ms"], record["ended_ms"]))
        a, b = before.get(label, {}).get("metrics", {}).get("median_us"), record["metrics"].get("median_us")
        ratio = f"{b / a:.3f}" if a and b else ""
        print(f"| {label} | {tags.get('placement.gpu_index', '?')} | `{tags.get('placement.gpu_uuid', '?')[:12]}…` "
              f"| {(record['started_ms'] - start) / 1e3:.1f} | {(record['ended_ms'] - start) / 1e3:.1f} "
              f"| {tags.get('placement.concurrent_jobs', '?')} | {format_time(a)} | {format_time(b)} | {ratio} |")
    print()
    for uuid, found in spans.items():
        found.sort()
        overlaps = sum(end > next_start for (_, end), (next_start, _) in zip(found, found[1:]))
        print(f"- `{uuid}`: {len(found)} jobs, {overlaps} overlapping another on that GPU")
    for name, records in (("one GPU", seq), ("spread", par)):
        first, last = min(r["started_ms"] for r in records), max(r["ended_ms"] for r in records)
        print(f"- {name}: first job's start to last job's end {(last - first) / 1e3:.1f} s")


if __name__ == "__main__":
    main()
