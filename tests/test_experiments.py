"""Every shareable sweep file in experiments/ runs on the CPU, shrunk by command-line overrides: its job count and
every job's status are what the file promises (kernels that need CUDA are `unsupported`, never `error`)."""

from __future__ import annotations

from collections import Counter

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import CONF, REPO, run_script

pytestmark = pytest.mark.slow
ONE_SAMPLE = ["device=cpu", "timing.warmup_s=0", "timing.min_time_s=0", "timing.min_reps=2", "timing.max_reps=2"]
SMALL_GQA = ["shape.batch=1", "shape.heads=4", "shape.kv_heads=2", "shape.head_dim=8"]
CUDA_ONLY = {"efficient", "cudnn"}
# Third-party kernels (not installed in the tests) and flex on FA4's kernels: `unsupported`, with the install line.
NOT_HERE = {"fa4", "fa3", "fa2", "flashinfer", "xformers", "sage", "flex_flash", "flash4"}

# experiment → (overrides that shrink it, jobs, {status: count}). Each run keeps every backend the file sweeps.
LONG = {"seqlen_scaling", "decode", "gqa_prefill", "masks", "kernels",
        "kernels_decode", "compile_modes"}  # ~12 s each on 2 cores: `make test-long`
EXPERIMENTS = {
    "seed_sdpa": (["shape=tiny"], 5, {"ok": 3, "unsupported": 2}),
    "seed_causal_self_attention": (["shape=tiny"], 2, {"ok": 2}),
    # One length instead of the file's six (the override replaces them whatever their number): flex compiles a
    # kernel per job, seconds on a CPU.
    "seqlen_scaling": (["shape=tiny", "shape.seq_len=16"], 9, {"ok": 7, "unsupported": 2}),
    # One mask instead of the file's three, the least like causal (the others' mask): a document mask is a tensor
    # that flex's mask_mod reads, a window is index arithmetic as causal is. Flex and the dense-mask kernels under
    # every mask: test_backends.
    "masks": (["shape=tiny", "shape.seq_len=32", "mask=document"], 5, {"ok": 3, "unsupported": 2}),
    "gqa_prefill": (["shape.seq_len=32", *SMALL_GQA], 7, {"ok": 5, "unsupported": 2}),
    "decode": (["shape.seq_len=64", *SMALL_GQA], 7, {"ok": 5, "unsupported": 2}),  # one length, as above
    "training": (["shape=tiny"], 6, {"ok": 3, "unsupported": 3}),  # flex: no backward on the CPU
    # max-autotune-no-cudagraphs compiles as max-autotune on a CPU (CUDA graphs are for CUDA): three modes run,
    # reduce-overhead (its own step marking) among them, each eager (skipped but for default) and compiled.
    "compile_modes": (["shape=tiny", "compile_mode=default,reduce-overhead,max-autotune"], 6,
                      {"ok": 4, "skipped": 2}),
    # One problem of the four, forward only: default, flash and flex run on a CPU; the rest need CUDA or a library.
    "kernels": (["shape=tiny", "mask=sliding_window", "mask.window=8", "mode=fwd"], 13, {"ok": 3, "unsupported": 10}),
    "kernels_decode": (["shape.seq_len=64", *SMALL_GQA, "mask=causal"], 13, {"ok": 3, "unsupported": 10}),
    "decode_paged": (["shape.seq_len=64", *SMALL_GQA], 3, {"unsupported": 3}),  # FlashInfer: CUDA
}


def test_every_experiment_file_is_listed_here():
    assert {p.stem for p in (REPO / "experiments").glob("*.yaml")} == set(EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_value_an_experiment_sweeps_is_valid(compose_cfg, name):
    """What the runs below leave out by their overrides is checked here without running: every value the file
    sweeps is an option of its group, or passes its field's schema (an Enum's names, a number)."""
    cfg = compose_cfg(f"experiment={name}", return_hydra_config=True)
    for key, values in cfg.hydra.sweeper.params.items():
        for value in (v.strip() for v in str(values).split(",")):
            if (CONF / key).is_dir():  # a config group: backend, mask, shape, ...
                assert (CONF / key / f"{value}.yaml").is_file(), f"experiments/{name}.yaml: {key}={value}"
            else:
                OmegaConf.update(cfg, key, value)  # ValidationError for a value the schema refuses
                assert str(getattr(OmegaConf.select(cfg, key), "value", OmegaConf.select(cfg, key))).lower() == (
                    value.lower()), f"experiments/{name}.yaml: {key}={value}"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.long) if n in LONG else n
                                  for n in sorted(EXPERIMENTS)])
def test_an_experiment_runs_its_sweep_with_the_statuses_it_promises(name, store, tmp_path):
    overrides, jobs, statuses = EXPERIMENTS[name]
    proc = run_script("-m", f"experiment={name}", *overrides, *ONE_SAMPLE, store=store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("attnbench").experiment_id], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == jobs
    assert Counter(c.data.tags["status"] for c in children) == Counter(statuses)
    for child in children:
        if child.data.tags["status"] == "unsupported":
            assert (child.data.params["backend.name"] in CUDA_ONLY | NOT_HERE
                    or "backward on the CPU" in child.data.tags["reason"]), child.data.tags["reason"]
        if child.data.tags["status"] == "ok":
            assert child.data.metrics["median_us"] > 0 and child.data.tags["kernel"]
