"""Decoder-layout registry: where each model family keeps its blocks and seven matrix types.

The family is chosen from ``config.model_type`` (an explicit field of every Hugging Face
config), never guessed from a model's name. To add a family, add one :class:`FamilySpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from pruning.errors import ConfigError
from pruning.config.presets import MATRIX_TYPES

_LLAMA_MATRICES = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}


@dataclass(frozen=True)
class FamilySpec:
    """Layout facts of one decoder family.

    layers_path: dotted attribute path from the ``*ForCausalLM`` module to the block list.
    matrices: matrix type -> dotted path inside one block.
    bos_each_window: evaluation windows must start with BOS (Gemma degrades badly without).
    input_groups: matrix types that read the same input tensor (they share one Hessian), in the order
        a block's forward reads them.
    stats_exit: the matrix type whose input is the last statistic a block's forward produces (it runs
        last, and nothing after it feeds a statistic). The statistics pass of a block that is pruned
        afterwards stops once that input is recorded: the matrix's own GEMM and everything after it
        would be thrown away (:func:`pruning.calibration.sequential.run_block`). ``None`` runs the
        whole block. A type that is not last fails the pass loudly: the groups after it see no tokens.
    """

    name: str
    model_types: tuple[str, ...]
    layers_path: str = "model.layers"
    matrices: dict[str, str] = field(default_factory=lambda: dict(_LLAMA_MATRICES))
    attention_path: str = "self_attn"
    mlp_path: str = "mlp"
    bos_each_window: bool = False
    input_groups: tuple[tuple[str, ...], ...] = (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))
    stats_exit: str | None = "down"

    def sub_block(self, matrix_type: str) -> str:
        """'attn' or 'mlp': whether this layout keeps the matrix under ``attention_path`` or ``mlp_path``."""
        path = self.matrices.get(matrix_type)
        if path is None:
            raise ConfigError(f"family {self.name!r}: unknown matrix type {matrix_type!r}; accepted: "
                              f"{', '.join(self.matrices)}")
        for prefix, part in ((self.attention_path, "attn"), (self.mlp_path, "mlp")):
            if path.startswith(prefix + "."):
                return part
        raise ConfigError(f"family {self.name!r}: matrix {matrix_type!r} at {path!r} lies under neither "
                          f"{self.attention_path!r} nor {self.mlp_path!r}")


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec("llama", ("llama",)),
        FamilySpec("mistral", ("mistral", "mixtral_dense")),
        FamilySpec("qwen2", ("qwen2",)),
        FamilySpec("qwen3", ("qwen3",)),
        FamilySpec("gemma3", ("gemma3_text",), bos_each_window=True),
        FamilySpec("gemma2", ("gemma2",), bos_each_window=True),
    )
}


def family_for_model_type(model_type: str) -> FamilySpec:
    """The registered family for a Hugging Face ``config.model_type``."""
    for spec in FAMILIES.values():
        if model_type in spec.model_types:
            return spec
    known = sorted(t for s in FAMILIES.values() for t in s.model_types)
    raise ConfigError(
        f"model.name: config.model_type {model_type!r} has no decoder layout in the family registry; "
        f"known model types: {', '.join(known)} (add a FamilySpec in pruning/model/families.py)"
    )


def family_for(model: nn.Module) -> FamilySpec:
    """The family of a loaded Hugging Face causal LM."""
    return family_for_model_type(model.config.model_type)


def get_attr_path(root: nn.Module, dotted: str) -> nn.Module:
    """``root.a.b.c`` for ``dotted='a.b.c'``."""
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def decoder_layers(model: nn.Module, family: FamilySpec | None = None) -> nn.ModuleList:
    """The list of decoder blocks of ``model``."""
    family = family or family_for(model)
    return get_attr_path(model, family.layers_path)


@dataclass(frozen=True)
class MatrixRef:
    """One prunable linear layer: block index, matrix type and full module name."""

    block: int
    matrix_type: str
    name: str
    module: nn.Linear

    @property
    def shape(self) -> tuple[int, int]:
        """(out_features, in_features)."""
        return tuple(self.module.weight.shape)  # type: ignore[return-value]

    @property
    def numel(self) -> int:
        return self.module.weight.numel()


def block_matrices(block: nn.Module, block_index: int, family: FamilySpec) -> list[MatrixRef]:
    """The seven matrices of one block, in MATRIX_TYPES order."""
    prefix = f"{family.layers_path}.{block_index}"
    refs = []
    for mtype in MATRIX_TYPES:
        module = get_attr_path(block, family.matrices[mtype])
        refs.append(MatrixRef(block_index, mtype, f"{prefix}.{family.matrices[mtype]}", module))
    return refs


def prunable_matrices(model: nn.Module, family: FamilySpec | None = None) -> list[MatrixRef]:
    """Every prunable matrix of the decoder: blocks in order, MATRIX_TYPES order within."""
    family = family or family_for(model)
    refs: list[MatrixRef] = []
    for i, block in enumerate(decoder_layers(model, family)):
        refs.extend(block_matrices(block, i, family))
    return refs
