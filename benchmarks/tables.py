"""Markdown tables of the sweeps in an MLflow store: how the tables in docs/ are made from a GPU run's store.

    python benchmarks/tables.py sqlite:///path/to/mlflow.db [EXPERIMENT_FILE_NAME ...]

One table per parent run (named after its experiment file): one row per job, the params that vary across the
sweep first, then status, the headline median (events on CUDA), useful TFLOP/s, GB/s, peak memory, the kernel that
ran, and the error against float64 softmax attention (`rel_l2_err`, or `max_rel_err` for stores written before it
existed), or the reason a job did not run.
"""

from __future__ import annotations

import sys

from mlflow.tracking import MlflowClient

VARYING = ["backend.name", "mask.name", "shape.seq_len", "shape.q_len", "compile", "compile_mode", "model.name",
           "mode", "shape.batch", "shape.heads", "shape.kv_heads", "shape.head_dim"]


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def table(client: MlflowClient, parent) -> str:
    children = client.search_runs([parent.info.experiment_id], max_results=5000,
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    children.sort(key=lambda r: r.info.start_time)
    varied = [k for k in VARYING if len({c.data.params.get(k) for c in children}) > 1]
    if all(c.data.params.get("shape.q_len") == c.data.params.get("shape.seq_len") for c in children):
        varied = [k for k in varied if k != "shape.q_len"]  # it only followed seq_len
    header = [*(k.removesuffix(".name").split(".")[-1] for k in varied), "status", "median µs", "CV",
              "TFLOP/s", "GB/s", "peak MiB", "kernel / reason", "rel err"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in children:
        p, m, t = c.data.params, c.data.metrics, c.data.tags
        ok = t.get("status") in ("ok", "fallback", "wrong")
        note = t.get("kernel", "") if t.get("status") == "ok" else f"{t.get('kernel', '')} {t.get('reason', '')}"
        lines.append("| " + " | ".join([
            *(p.get(k, "") for k in varied), t.get("status", "?"),
            _fmt(m.get("median_us") if ok else None, ".1f"), _fmt(m.get("events_cv") if ok else None, ".3f"),
            _fmt(m.get("tflops") if ok else None, ".1f"),
            _fmt(m.get("gbps") if ok else None, ".0f"), _fmt(m.get("peak_mem_mib") if ok else None, ".0f"),
            note.strip()[:110].replace("|", "/"), _fmt(m.get("rel_l2_err", m.get("max_rel_err")), ".1e"),
        ]) + " |")
    return "\n".join(lines)


def main(uri: str, names: list[str]) -> None:
    client = MlflowClient(tracking_uri=uri)
    for experiment in client.search_experiments():
        parents = [r for r in client.search_runs([experiment.experiment_id], max_results=5000)
                   if "mlflow.parentRunId" not in r.data.tags]
        for parent in sorted(parents, key=lambda r: r.info.start_time):
            if names and parent.info.run_name not in names:
                continue
            print(f"\n### {parent.info.run_name} ({parent.data.tags.get('mlflow.note.content', '')})\n")
            print(table(client, parent))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
