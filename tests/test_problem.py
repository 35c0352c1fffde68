"""Problems and masks: the score elements each mask keeps, counted exactly, and the work and bytes they imply."""

from __future__ import annotations

import itertools

import pytest
import torch

from attnbench.core.errors import ConfigError
from attnbench.core.masks import registered_masks
from attnbench.core.masks.document import DocumentConfig, DocumentLengths
from attnbench.core.masks.prefix_lm import PrefixLMConfig
from attnbench.core.masks.sliding_window import SlidingWindowConfig
from attnbench.core.problem import Problem
from attnbench.harness.config import Mode

CONFIGS = {
    "none": None,
    "causal": None,
    "sliding_window": SlidingWindowConfig(window=5),
    "document": DocumentConfig(documents=3, lengths=DocumentLengths.random),
    "prefix_lm": PrefixLMConfig(prefix=6),
}


def make_mask(name: str, q_len: int, seq_len: int, seed: int = 0, config=None):
    cls = registered_masks()[name]
    return cls(config or CONFIGS[name] or cls.Config(name=name), q_len, seq_len, seed)


def brute_force_keeps(name: str, q_len: int, seq_len: int, mask) -> torch.Tensor:
    """The rule written out position by position, independent of the masks' own code."""
    offset = seq_len - q_len
    keep = torch.zeros(q_len, seq_len, dtype=torch.bool)
    for i, j in itertools.product(range(q_len), range(seq_len)):
        p = offset + i
        if name == "none":
            keep[i, j] = True
        elif name == "causal":
            keep[i, j] = j <= p
        elif name == "sliding_window":
            keep[i, j] = 0 <= p - j < mask.config.window
        elif name == "prefix_lm":
            keep[i, j] = j < mask.config.prefix or j <= p
        elif name == "document":
            starts = [int(s) for s in mask.starts()]
            doc = lambda pos: max(d for d, s in enumerate(starts) if s <= pos)  # noqa: E731
            keep[i, j] = doc(p) == doc(j) and j <= p
    return keep


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("q_len, seq_len", [(13, 13), (1, 13), (4, 13), (16, 16)])
def test_every_mask_keeps_exactly_what_its_rule_says(name, q_len, seq_len):
    mask = make_mask(name, q_len, seq_len, seed=3)
    expected = brute_force_keeps(name, q_len, seq_len, mask)
    assert torch.equal(mask.dense(), expected)
    assert torch.equal(mask.row_counts(), expected.sum(-1))  # the closed form, against the count
    assert mask.kept() == int(expected.sum())


def test_registered_masks_are_the_five_of_the_mask_group():
    assert set(registered_masks()) == set(CONFIGS)


def test_causal_keeps_the_diagonal_not_half():
    assert make_mask("causal", 16, 16).kept() == 16 * 17 // 2


def test_a_decode_step_sees_every_key_under_a_causal_mask():
    assert make_mask("causal", 1, 1000).kept() == 1000  # bottom-right: the last position


def test_random_documents_come_from_the_seed():
    a, b = make_mask("document", 64, 64, seed=1), make_mask("document", 64, 64, seed=2)
    assert torch.equal(a.starts(), make_mask("document", 64, 64, seed=1).starts())
    assert not torch.equal(a.starts(), b.starts())
    assert len(a.starts()) == 3 and a.starts()[0] == 0


def _problem(mask="causal", batch=2, heads=8, kv_heads=8, q_len=64, seq_len=64, head_dim=16):
    return Problem(batch, heads, kv_heads, q_len, seq_len, head_dim, make_mask(mask, q_len, seq_len))


def test_flops_count_the_kept_scores_of_every_query_head():
    p = _problem(mask="causal")
    assert p.flops() == 4 * 2 * 8 * 16 * (64 * 65 // 2)
    assert p.flops(Mode.bwd) == 2.5 * p.flops() and p.flops(Mode.fwd_bwd) == 3.5 * p.flops()
    assert _problem(mask="none").flops() == 4 * 2 * 8 * 16 * 64 * 64
    assert _problem(kv_heads=2).flops() == p.flops()  # grouped-query heads do as much score work


def test_minimum_bytes_shrink_with_fewer_key_value_heads():
    q_side = 2 * 8 * 64 * 16
    assert _problem().min_bytes(2) == (2 * q_side + 2 * q_side) * 2  # Q, K, V read; O written
    assert _problem(kv_heads=2).min_bytes(2) == (2 * q_side + 2 * q_side // 4) * 2
    assert _problem().min_bytes(2, Mode.fwd_bwd) == 12 * q_side * 2


def test_a_decode_step_reads_the_whole_cache_once():
    p = _problem(q_len=1, seq_len=1024, heads=32, kv_heads=8, head_dim=128, batch=1)
    assert p.min_bytes(2) == (2 * 32 * 128 + 2 * 8 * 1024 * 128) * 2


@pytest.mark.parametrize("field, changes", [("shape.kv_heads", {"kv_heads": 3}), ("shape.q_len", {"q_len": 65}),
                                            ("shape.batch", {"batch": 0})])
def test_problem_rules_name_the_field(field, changes):
    from omegaconf import OmegaConf

    shape = OmegaConf.create({"batch": 2, "heads": 8, "kv_heads": 8, "q_len": 64, "seq_len": 64, "head_dim": 16,
                              "page_size": 0} | changes)
    with pytest.raises(ConfigError) as info:
        Problem.from_config(shape, make_mask("none", 64, 64))
    assert info.value.field == field and field in str(info.value)


@pytest.mark.parametrize("q_len", [1, 5, 64])
@pytest.mark.parametrize("name", sorted(registered_masks()))
def test_keys_read_are_the_key_positions_some_query_keeps(name, q_len):
    mask = make_mask(name, q_len, 64)
    assert mask.keys_read() == int(brute_force_keeps(name, q_len, 64, mask).any(0).sum())


def test_a_sliding_window_decode_step_reads_its_window_not_the_cache():
    window = make_mask("sliding_window", 1, 1024, config=registered_masks()["sliding_window"].Config(window=256))
    p = Problem(1, 32, 8, 1, 1024, 128, window)
    assert p.min_bytes(2) == (2 * 32 * 128 + 2 * 8 * 256 * 128) * 2
