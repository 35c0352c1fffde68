"""What each backend, mask and model option can be set to: its `Config` dataclass, in a module that imports no torch.

Hydra types every option of the `backend`, `mask` and `model` groups with its dataclass (the schema
`schema/<group>/<name>` its YAML extends), so that a bad value is refused while the config is composed. Those
schemas are read here rather than from the modules that implement the options, which import torch: `--help` and a
refused command line then cost no torch import (most of a command's start-up). An option with fields of its own
declares its dataclass below, and its implementation takes it as its `Config`; an option without any (`math`,
`causal`) has its group's base dataclass with its name. A backend plugin's `Config` lives in the plugin's module.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum

# The entry point group through which an installed distribution adds backends (attnbench.core.backends).
BACKEND_PLUGINS = "attnbench.backends"


@dataclass
class BackendConfig:
    name: str = "default"


@dataclass
class FlexConfig(BackendConfig):
    name: str = "flex"
    block_size: int = 128  # BlockMask block (query and key positions)
    kernel_backend: str = "AUTO"  # AUTO | TRITON | TRITON_DECODE | FLASH (torch builds with kernel_options BACKEND)


@dataclass
class FlexFlashConfig(FlexConfig):
    name: str = "flex_flash"
    kernel_backend: str = "FLASH"


@dataclass
class LinearConfig(BackendConfig):
    name: str = "linear"
    chunk: int = 64  # causal: positions per chunk of the prefix sums


@dataclass
class PerformerConfig(LinearConfig):
    name: str = "performer"
    features: int = 256  # random features m: more is closer to softmax and slower
    seed: int = 0  # draws the random features


@dataclass
class MaskConfig:
    name: str = "none"


class DocumentLengths(Enum):
    equal = "equal"
    random = "random"


@dataclass
class DocumentConfig(MaskConfig):
    name: str = "document"
    documents: int = 4  # documents packed into seq_len positions
    lengths: DocumentLengths = DocumentLengths.equal  # equal | random (seeded by the job's seed)
    causal: bool = True  # causal within a document, as in packed language-model training


@dataclass
class PrefixLMConfig(MaskConfig):
    name: str = "prefix_lm"
    prefix: int = 256  # length of the bidirectional prefix (a prompt, an image's patches)


@dataclass
class SlidingWindowConfig(MaskConfig):
    name: str = "sliding_window"
    window: int = 256  # keys each query sees, its own position included


@dataclass
class ModelConfig:
    name: str = "attention"


@dataclass
class AttentionConfig(ModelConfig):
    name: str = "attention"


@dataclass
class CausalSelfAttentionConfig(ModelConfig):
    name: str = "causal_self_attention"
    bias: bool = False
    dropout: float = 0.1  # as in the article; only active when training
    training: bool = False


@dataclass
class NnModuleConfig(ModelConfig):
    """What the options that wrap a torch.nn module share."""

    bias: bool = True  # nn's default
    dropout: float = 0.0  # only active when training
    training: bool = False


@dataclass
class EncoderLayerConfig(NnModuleConfig):
    name: str = "encoder_layer"
    dropout: float = 0.1  # nn's default; only active when training
    feedforward: int = 4  # dim_feedforward = feedforward × E


@dataclass
class MultiheadAttentionConfig(NnModuleConfig):
    name: str = "multihead_attention"


@dataclass(frozen=True)
class OptionGroup:
    """A config group whose options are implementations: the dataclass of an option without fields of its own, and
    those of the options that have some, by option name."""

    base: type
    declared: tuple[type, ...]

    def config(self, name: str) -> type:
        """The dataclass that types option `name` (its `name` field is set to the option's name when stored)."""
        return next((config for config in self.declared if config.name == name), self.base)

    def has_field(self, field: str) -> bool:
        """Whether some option of the group has this field (plugins' aside)."""
        return any(field in {f.name for f in fields(config)} for config in (self.base, *self.declared))


OPTION_GROUPS = {
    "backend": OptionGroup(BackendConfig, (FlexConfig, FlexFlashConfig, LinearConfig, PerformerConfig)),
    "mask": OptionGroup(MaskConfig, (DocumentConfig, PrefixLMConfig, SlidingWindowConfig)),
    "model": OptionGroup(ModelConfig, (AttentionConfig, CausalSelfAttentionConfig, EncoderLayerConfig,
                                       MultiheadAttentionConfig)),
}
