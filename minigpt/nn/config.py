"""Configuration dataclasses (model, training) and named presets.

Every field is validated in ``__post_init__``; a bad value raises ``ValueError`` naming the field and the rule.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

DTYPES = ("float32", "float64")
ACT_FNS = ("gelu_new", "gelu", "relu")
NORMALIZATIONS = ("LN", None)


# Upper bounds: far above anything this numpy model can train, low enough that a typo
# (``model.d_model=640000``) is refused at once instead of exhausting memory.
MAX_DIM = 1 << 16  # any width, head count, context length or layer count
MAX_PARAMS = 1 << 28  # parameters in one model (1 GiB in float32)
MAX_BATCH = 1 << 20  # sequences in one batch or held-out set
MAX_STEPS = 10**9
MAX_SEED = (1 << 63) - 1


def cut(text: object, limit: int = 80) -> str:
    """``text`` (any object, as ``str``) cut to its first ``limit`` characters: error lines never echo a
    huge input."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (an int too long for ``repr`` is described instead)."""
    try:
        text = repr(value)
    except ValueError:  # an int of more than sys.get_int_max_str_digits() digits
        text = f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    return cut(text, limit)


_short = short_repr


def _int_field(section, name, value, lo=1, hi=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rule = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{section}.{name} must be an integer {rule}, got {short_repr(value)}")


def _float_field(section, name, value, lo=0.0, strict=False, hi=math.inf):
    # ints are compared exactly (an int too large for a float is still refused by ``hi``, not by an OverflowError)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"{section}.{name} must be a finite number, got {_short(value)}")
    if value < lo or (strict and value == lo) or value > hi:
        rule = f"{'>' if strict else '>='} {lo}" + (f" and <= {hi}" if hi != math.inf else "")
        raise ValueError(f"{section}.{name} must be {rule}, got {_short(value)}")


@dataclass
class ModelConfig:
    """Shape and numerics of the transformer (names as in TransformerLens's HookedTransformerConfig)."""

    n_layers: int = 3  # number of transformer blocks
    d_model: int = 64  # width of the residual stream
    n_heads: int = 4  # attention heads per block
    d_head: int | None = None  # width of each head's q, k, v (None: d_model // n_heads)
    d_mlp: int = 256  # hidden width of each MLP (ignored when attn_only)
    n_ctx: int = 32  # longest sequence the positional embedding covers
    d_in: int = 1  # size of each input term (1 for scalar recurrences)
    d_out: int = 1  # size of each prediction
    attn_only: bool = False  # True: blocks have no MLP
    normalization_type: str | None = "LN"  # "LN" (pre-LN blocks and a final LayerNorm) or None
    act_fn: str = "gelu_new"  # MLP activation: "gelu_new" (tanh approx.), "gelu" (erf) or "relu"
    eps: float = 1e-5  # LayerNorm epsilon
    init_range: float = 0.02  # std of the normal initialisation of every weight matrix
    dtype: str = "float32"  # "float32" (training) or "float64" (gradient checks)

    def __post_init__(self) -> None:
        s = "model"
        for name in ("n_layers", "d_model", "n_heads", "d_mlp", "n_ctx", "d_in", "d_out"):
            _int_field(s, name, getattr(self, name), hi=MAX_DIM)
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"model.d_head is None, so model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
                )
            self.d_head = self.d_model // self.n_heads
        _int_field(s, "d_head", self.d_head, hi=MAX_DIM)
        if not isinstance(self.attn_only, bool):
            raise ValueError(f"model.attn_only must be true or false, got {short_repr(self.attn_only)}")
        if self.normalization_type not in NORMALIZATIONS:
            raise ValueError(f"model.normalization_type must be 'LN' or None, got {short_repr(self.normalization_type)}")
        if self.act_fn not in ACT_FNS:
            raise ValueError(f"model.act_fn must be one of {ACT_FNS}, got {short_repr(self.act_fn)}")
        _float_field(s, "eps", self.eps, 0.0, strict=True, hi=1.0)
        _float_field(s, "init_range", self.init_range, 0.0, strict=True, hi=1e6)
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {DTYPES}, got {short_repr(self.dtype)}")
        n = self.num_params()
        if n > MAX_PARAMS:
            raise ValueError(f"model has {n:,} parameters, more than the limit of {MAX_PARAMS:,}; reduce model.d_model, d_mlp, n_layers or n_ctx")

    def num_params(self) -> int:
        """Parameter count implied by the config (the sizes of ``model.param_shapes``)."""
        D, H, E, M = self.d_model, self.n_heads, self.d_head, self.d_mlp
        ln = 2 * D if self.normalization_type == "LN" else 0
        block = ln + 3 * H * D * E + 3 * H * E + H * E * D + D
        if not self.attn_only:
            block += ln + D * M + M + M * D + D
        return self.d_in * D + self.n_ctx * D + self.n_layers * block + ln + D * self.d_out + self.d_out

    @classmethod
    def from_dict(cls, d: object) -> "ModelConfig":
        """Build from a dict (e.g. the ``model`` section of a preset), refusing unknown fields (and anything but a dict)."""
        return cls(**_check_fields(cls, "model", d))
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainConfig:
    """How to train: AdamW with linear warmup and cosine decay, fresh sequences every step."""

    steps: int = 3000  # optimizer steps
    batch_size: int = 256  # sequences per step
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # final lr as a fraction of the peak (cosine floor)
    warmup_steps: int = 200  # linear warmup from 0 to lr
    weight_decay: float = 0.01  # decoupled weight decay on weight matrices only
    beta1: float = 0.9  # Adam first-moment decay
    beta2: float = 0.999  # Adam second-moment decay
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 disables)
    eval_every: int = 250  # steps between held-out evaluations
    eval_size: int = 2048  # held-out sequences (drawn once, from a fixed seed)
    checkpoint_every: int = 1000  # steps between checkpoints (the final one is always written)
    seed: int = 0  # seeds the initialisation, the data stream and the held-out set

    def __post_init__(self) -> None:
        s = "train"
        _int_field(s, "steps", self.steps, hi=MAX_STEPS)
        _int_field(s, "batch_size", self.batch_size, hi=MAX_BATCH)
        _float_field(s, "lr", self.lr, 0.0, strict=True, hi=10.0)
        _float_field(s, "min_lr_ratio", self.min_lr_ratio, 0.0, hi=1.0)
        _int_field(s, "warmup_steps", self.warmup_steps, lo=0, hi=MAX_STEPS)
        _float_field(s, "weight_decay", self.weight_decay, 0.0, hi=1e3)
        _float_field(s, "beta1", self.beta1, 0.0, hi=0.999999)
        _float_field(s, "beta2", self.beta2, 0.0, hi=0.999999)
        _float_field(s, "grad_clip", self.grad_clip, 0.0, hi=1e30)
        _int_field(s, "eval_every", self.eval_every, hi=MAX_STEPS)
        _int_field(s, "eval_size", self.eval_size, hi=MAX_BATCH)
        _int_field(s, "checkpoint_every", self.checkpoint_every, hi=MAX_STEPS)
        _int_field(s, "seed", self.seed, lo=0, hi=MAX_SEED)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: object) -> "TrainConfig":
        """Build from a dict (e.g. the ``train`` section of a preset), refusing unknown fields (and anything but a dict)."""
        return cls(**_check_fields(cls, "train", d))


def did_you_mean(section: str | None, name: object, known: Sequence[str], kind: str = "fields") -> str:
    """``"did you mean model.d_model?"`` for a near miss, else the list of known fields (``"model fields:
    ..."``).  ``section=None`` drops the prefix: ``"did you mean train?"``, else ``"commands: ..."``."""
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(str(name), known, n=1)
    if close:
        return f"did you mean {prefix}{close[0]}?"
    return f"{section + ' ' if section else ''}{kind}: {', '.join(known)}"


def _check_fields(cls, section, d) -> dict:
    if not isinstance(d, dict):
        raise ValueError(f"the {section} section must be a mapping of field -> value, got {type(d).__name__}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for k in d:
        if k not in known:
            raise ValueError(f"unknown field {section}.{cut(k, 60)}; {did_you_mean(section, cut(k, 200), known)}")
    return dict(d)


def param_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    """Every parameter name and its shape, in forward order."""
    D, H, E, M = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    shapes: dict[str, tuple] = {"embed.W_E": (cfg.d_in, D), "pos_embed.W_pos": (cfg.n_ctx, D)}
    ln = cfg.normalization_type == "LN"
    for l in range(cfg.n_layers):
        p = f"blocks.{l}."
        if ln:
            shapes[p + "ln1.w"], shapes[p + "ln1.b"] = (D,), (D,)
        for n in "QKV":
            shapes[p + f"attn.W_{n}"] = (H, D, E)
        for n in "QKV":
            shapes[p + f"attn.b_{n}"] = (H, E)
        shapes[p + "attn.W_O"], shapes[p + "attn.b_O"] = (H, E, D), (D,)
        if not cfg.attn_only:
            if ln:
                shapes[p + "ln2.w"], shapes[p + "ln2.b"] = (D,), (D,)
            shapes[p + "mlp.W_in"], shapes[p + "mlp.b_in"] = (D, M), (M,)
            shapes[p + "mlp.W_out"], shapes[p + "mlp.b_out"] = (M, D), (D,)
    if ln:
        shapes["ln_final.w"], shapes["ln_final.b"] = (D,), (D,)
    shapes["unembed.W_U"], shapes["unembed.b_U"] = (D, cfg.d_out), (cfg.d_out,)
    return shapes
