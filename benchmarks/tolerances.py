"""The real error of every backend against float64, per error class, input distribution and dtype: the evidence
behind attnbench.core.correctness.TOLERANCE.

Each backend runs each case (the experiments' shapes on CUDA; CPU-sized ones on a CPU) in each dtype, forward
and forward+backward, on normal and on large-logit inputs, and is checked exactly as a job is
(attnbench.core.correctness.check, whole output or its recorded sample). Kernels are built and compiled once per
backend, case, dtype and mode (both input distributions reuse them), and the kernel that ran is read from a
profile: a fallback (flash asked, math ran) is reported, never counted as the backend's error. Prints, per input
distribution and dtype, the worst of each error over all backends and cases, who made it, and TOLERANCE_MARGIN ×
that.

    python benchmarks/tolerances.py [--device cuda] [--out errors.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from attnbench.core.correctness import TOLERANCE, TOLERANCE_MARGIN, check, error_class
from attnbench.core.errors import Unsupported
from attnbench.core.timing.profiling import profile_call
from attnbench.core.validation import validate
from attnbench.harness.config import Mode, job_spec, register_configs

CONF = Path(__file__).resolve().parents[1] / "conf"
CUDA_BACKENDS = ["default", "math", "flash", "efficient", "cudnn", "flex", "naive", "linear", "performer"]
CPU_BACKENDS = ["default", "math", "flash", "flex", "naive", "linear", "performer"]
# Modules (the experiments' CausalSelfAttention shape): their own layers round too, so they are a class of their own.
MODULES = ["model=causal_self_attention", "model=multihead_attention", "model=encoder_layer"]
# The experiments' shapes and masks (experiments/*.yaml), plus the longest sequence seqlen_scaling runs.
CUDA_CASES = {
    "seed_sdpa": ["shape=seed_sdpa", "mask=none"],
    "long_context causal": ["shape=long_context", "mask=causal"],
    "long_context sliding_window": ["shape=long_context", "mask=sliding_window"],
    "long_context document": ["shape=long_context", "mask=document"],
    "gqa_prefill causal": ["shape=gqa_prefill", "mask=causal"],
    "decode 32k causal": ["shape=decode", "mask=causal", "shape.seq_len=32768"],
    "long_context 16k causal": ["shape=long_context", "mask=causal", "shape.seq_len=16384"],
    **{f"{m.split('=')[1]} causal": [m, "shape=seed_causal_self_attention", "mask=causal"] for m in MODULES},
}
CPU_CASES = {
    "tiny": ["shape=tiny", "mask=none"],
    "seed_sdpa/4 causal": ["shape=seed_sdpa", "shape.batch=4", "shape.heads=8", "mask=causal"],
    "gqa 1k causal": ["shape=gqa_prefill", "shape.seq_len=1024", "shape.head_dim=64", "mask=causal"],
    "decode 4k": ["shape=decode", "shape.batch=2", "shape.seq_len=4096", "mask=causal"],
    "window 1k": ["shape=long_context", "shape.batch=1", "shape.heads=4", "shape.seq_len=1024",
                  "mask=sliding_window"],
    **{f"{m.split('=')[1]} causal": [m, "shape=seed_causal_self_attention", "shape.batch=4", "mask=causal"]
       for m in MODULES},
}
DTYPES = ["float16", "bfloat16", "float32"]
INPUTS = ["normal", "large_logits"]
METRICS = ["rel_l2_err", "max_rel_err", "grad_rel_l2_err", "grad_max_rel_err"]


def configs(device: str, case: list[str], backend: str, dtype: str, mode: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return {inputs: compose("config", overrides=[f"device={device}", *case, f"backend={backend}",
                                                     f"dtype={dtype}", f"mode={mode}", f"inputs={inputs}"])
                for inputs in INPUTS}


def evaluate(cfgs) -> list[dict]:
    """One build (and compile) of the backend; each input distribution checked on it."""
    torch.compiler.reset()
    plan = validate(job_spec(next(iter(cfgs.values()))))
    found = []
    with plan.backend.context():
        attend = plan.backend.build(plan.problem, plan.device, plan.dtype)
        for inputs, cfg in cfgs.items():
            plan = validate(job_spec(cfg))
            torch.manual_seed(cfg.seed)
            fn, args = plan.model.build(attend)
            training = cfg.mode is not Mode.fwd
            with torch.set_grad_enabled(training):
                args = tuple(a.requires_grad_(training) for a in args)
                out = fn(*args)
                grads = grad_out = None
                if training:
                    grad_out = torch.randn_like(out)
                    grads = torch.autograd.grad(out, args, grad_out, retain_graph=True)
                ran = plan.backend.dispatch(profile_call(lambda: fn(*args), plan.device))
                verdict = check(plan.model, plan.backend, cfg.mode, args, out, grads, grad_out,
                                lambda g: torch.autograd.grad(out, args, g, retain_graph=True))
            found.append({"inputs": inputs, "class": error_class(plan.model, plan.backend), "kernel": ran.ran,
                          "fallback": ran.fallback, "wrong": verdict.wrong,
                          "coverage": verdict.tags.get("check.coverage", ""), **verdict.metrics})
            del out, grads, args
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("errors.jsonl"))
    parser.add_argument("--backends", nargs="*", help="only these backends")
    parser.add_argument("--cases", nargs="*", help="only the cases whose name contains one of these")
    args = parser.parse_args()
    register_configs()
    cuda = args.device == "cuda"
    cases, backends = (CUDA_CASES, CUDA_BACKENDS) if cuda else (CPU_CASES, CPU_BACKENDS)
    rows = []
    with args.out.open("w") as out:
        for case_name, case in cases.items():
            if args.cases and not any(part in case_name for part in args.cases):
                continue
            for dtype in DTYPES:
                for mode in ("fwd", "fwd_bwd") if "decode" not in case_name else ("fwd",):
                    for backend in args.backends or backends:
                        key = {"case": case_name, "dtype": dtype, "mode": mode, "backend": backend}
                        started = time.perf_counter()
                        try:
                            results = evaluate(configs(args.device, case, backend, dtype, mode))
                        except Unsupported as e:
                            results = [{"unsupported": str(e)}]
                        except Exception as e:  # noqa: BLE001 - out of memory, a kernel's refusal: say and go on
                            results = [{"error": f"{type(e).__name__}: {e}".splitlines()[0][:200]}]
                        finally:
                            torch.cuda.empty_cache() if cuda else None
                        for result in results:
                            row = key | result | {"seconds": time.perf_counter() - started}
                            rows.append(row)
                            out.write(json.dumps(row) + "\n")
                            out.flush()
                            print(json.dumps(row), flush=True)
    print(table(rows, args.device))


def table(rows: list[dict], device: str) -> str:
    """Per error class, input distribution and dtype: the worst of each error, who made it, the limit it suggests
    (TOLERANCE_MARGIN × it) and the limit in force. Approximate backends are judged against their own formula:
    their errors against it (`self_…`) are what counts."""
    worst: dict[tuple[str, str, str], dict[str, tuple[float, str]]] = defaultdict(dict)
    for row in rows:
        if "inputs" not in row or row.get("fallback"):
            continue
        prefix = "self_" if "self_rel_l2_err" in row else ""  # an approximate backend, in a module or not
        key = (row["class"], row["inputs"], row["dtype"])
        for metric in METRICS:
            value = row.get(prefix + metric)
            if value is not None and value > worst[key].get(metric, (-1.0, ""))[0]:
                worst[key][metric] = (value, f"{row['backend']} ({row['kernel']}), {row['case']}, {row['mode']}")
    lines = [f"| class | inputs | dtype | error | worst on {device} | made by | × {TOLERANCE_MARGIN} | in force |",
             "|---|---|---|---|---|---|---|---|"]
    for (kind, inputs, dtype), metrics in sorted(worst.items()):
        now = TOLERANCE.get((kind, inputs, getattr(torch, dtype)))
        for metric, (value, who) in metrics.items():
            limit = getattr(now, metric) if now else float("nan")
            lines.append(f"| {kind} | {inputs} | {dtype} | {metric} | {value:.3g} | {who} | "
                         f"{TOLERANCE_MARGIN * value:.3g} | {limit:.3g} |")
    bad = [r for r in rows if r.get("fallback") or r.get("wrong") or "error" in r]
    lines += ["", f"{len(rows)} checks; {len(bad)} fallback, wrong or error:"]
    lines += [f"- {r['backend']} {r['case']} {r['dtype']} {r['mode']} {r.get('inputs', '')}: "
              f"{r.get('error') or r.get('wrong') or 'fallback to ' + r.get('kernel', '?')}" for r in bad]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
