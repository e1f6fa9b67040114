"""Named presets: ``{"model": ModelConfig fields, "train": TrainConfig fields, "data": task fields}``.

``DESCRIPTIONS`` holds one line per preset (``minigpt train --help`` lists them).  ``paper``: the
three-layer model of the paper with our own choices (see docs/task.md, "The task and the ``paper``
preset").  ``first``: the first thing to train, learns in well under a minute.  ``tiny``: trains in
a second, for tests and demos (too short to learn: it stays worse than copying the last term).
"""
from __future__ import annotations

import copy
import json

from ..nn.config import ModelConfig, TrainConfig, did_you_mean
from . import data

PRESETS = {
    "paper": {
        "model": dict(n_layers=3, d_model=64, n_heads=4, d_mlp=256, n_ctx=32),
        "train": dict(steps=2000, batch_size=256, lr=3e-3, warmup_steps=200, weight_decay=0.01, eval_every=250),
        "data": dict(a=("uniform", -1.0, 1.0), b=("uniform", -1.0, 1.0), x0=("uniform", -1.0, 1.0), length=20),
    },
    # first: tiny's model, ~17x the steps on twice the batch (the README's first training run). 1000 steps x batch 64
    # reached 12-28x below copying over seeds 0-2 (one shard); tiny's 60 steps x batch 32 end at 0.25x, worse than copying.
    "first": {
        "model": dict(n_layers=3, d_model=16, n_heads=2, d_mlp=32, n_ctx=16),
        "train": dict(steps=1000, batch_size=64, lr=3e-3, warmup_steps=50, eval_every=250, eval_size=1024),
        "data": dict(a=("uniform", -1.0, 1.0), b=("uniform", -1.0, 1.0), x0=("uniform", -1.0, 1.0), length=10),
    },
    "tiny": {
        "model": dict(n_layers=3, d_model=16, n_heads=2, d_mlp=32, n_ctx=16),
        "train": dict(steps=60, batch_size=32, lr=3e-3, warmup_steps=10, eval_every=20, eval_size=256, checkpoint_every=30),
        "data": dict(a=("uniform", -1.0, 1.0), b=("uniform", -1.0, 1.0), x0=("uniform", -1.0, 1.0), length=10),
    },
    # Beyond the paper (docs/extensions.md): data.LinearRecurrence and data.PolynomialSequence.
    # linear2: batch 1024 because the 2-D task is data-hungry (1500 steps: batch 128 -> 6x below copying, 512 -> 10x, 1024 -> 13x).
    "linear2": {
        "model": dict(n_layers=3, d_model=64, n_heads=4, d_mlp=128, n_ctx=16, d_in=2, d_out=2),
        "train": dict(steps=1500, batch_size=1024, lr=3e-3, warmup_steps=150, weight_decay=0.01, eval_every=250, eval_size=2048),
        "data": dict(task="linear", dim=2, rho=("uniform", 0.0, 1.0), b=("uniform", -1.0, 1.0), x0=("uniform", -1.0, 1.0), length=12, scale="radius"),
    },
    "poly2": {
        "model": dict(n_layers=3, d_model=64, n_heads=4, d_mlp=128, n_ctx=16),
        "train": dict(steps=1500, batch_size=128, lr=3e-3, warmup_steps=150, weight_decay=0.01, eval_every=250, eval_size=2048),
        "data": dict(task="polynomial", degree=2, coeffs=("uniform", -1.0, 1.0), length=12),
    },
}
SECTIONS = ("model", "train", "data")
DESCRIPTIONS = {
    "paper": "the paper's three-layer model on 20-term affine recurrences (about 2 minutes on 2 cores)",
    "first": "start here: a small model that beats copying the last term within a minute",
    "tiny": "a one-second smoke test for tests and demos; too short to learn (worse than copying)",
    "linear2": "beyond the paper: 2-D linear recurrences x_{n+1} = A x_n + b",
    "poly2": "beyond the paper: degree-2 polynomial sequences",
}


def get_preset(name: str) -> dict:
    """A deep copy of preset ``name`` (unknown names raise ValueError listing the known ones)."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def parse_value(text: str):
    """``--set`` values are JSON (``32``, ``1e-3``, ``true``, ``null``, ``["uniform", -1, 1]``); else a string."""
    if text in ("None", "none"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _data_fields() -> set:
    """Every field a data section may hold: those of each task in ``data.TASKS`` plus ``task`` (the
    chosen task then checks its own)."""
    out = {"task"}
    for cls in data.TASKS.values():
        out |= {f for f, v in cls.__dataclass_fields__.items() if v.init}
    return out


def apply_overrides(spec: dict, overrides) -> dict:
    """Apply ``section.field=value`` strings to a preset spec; unknown sections or fields raise ValueError."""
    if isinstance(overrides, str):
        raise ValueError("overrides must be a list of section.field=value strings, not one string")
    fields = {
        "model": set(ModelConfig.__dataclass_fields__),
        "train": set(TrainConfig.__dataclass_fields__),
        "data": _data_fields(),
    }
    spec = copy.deepcopy(spec)
    for item in overrides or ():
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"override {item!r} must look like section.field=value, e.g. model.d_model=32")
        key, value = item.split("=", 1)
        if "." not in key:
            raise ValueError(f"override key {key!r} must be section.field with section one of {', '.join(SECTIONS)}")
        section, field = key.split(".", 1)
        if section not in SECTIONS:
            raise ValueError(f"unknown override section {section!r}; use one of {', '.join(SECTIONS)}")
        if field not in fields[section]:
            raise ValueError(f"unknown field {key!r}; {did_you_mean(section, field, sorted(fields[section]))}")
        v = parse_value(value)
        if isinstance(v, list):
            v = tuple(v)
        spec.setdefault(section, {})[field] = v
    return spec


# Largest |term| accepted per dtype: squares of the terms (in the loss) and their sums over a batch
# must stay finite, so the bound sits well below sqrt(max float).  float32: sqrt(3.4e38) ~ 1.8e19.
TERM_LIMITS = {"float32": 1e15, "float64": 1e150}
NORMAL_SIGMAS = 8.0  # a normal prior is bounded by mean +- 8 std for the overflow check (P ~ 1e-15 per draw)


def term_bound(task) -> float:
    """Bound on |x_n| for n < task.length: |x_{n+1}| <= |a| |x_n| + |b| with every prior at its
    largest magnitude (normal priors at mean + 8 std; every task's ``max_abs_term``); the noise adds 8 std
    at the end."""
    noise = NORMAL_SIGMAS * float(getattr(task, "noise", 0.0) or 0.0)
    return float(task.max_abs_term(normal_sigmas=NORMAL_SIGMAS)) + noise


def check_compatible(mcfg, task) -> None:
    """Refuse a model that cannot train on ``task``: too few positions, the wrong term size, or priors
    that overflow the model's dtype (ValueError naming the field)."""
    if task.length - 1 > mcfg.n_ctx:
        raise ValueError(f"data.length - 1 = {task.length - 1} positions exceed model.n_ctx = {mcfg.n_ctx}")
    d_in = getattr(task, "d_in", 1)
    if mcfg.d_in != d_in or mcfg.d_out != d_in:
        raise ValueError(f"the data has terms of size {d_in}; set model.d_in = model.d_out = {d_in} (got {mcfg.d_in}, {mcfg.d_out})")
    check_overflow(task, mcfg)


def check_overflow(task, mcfg) -> None:
    """Refuse priors whose sequences can leave the safe range of the model's dtype within
    ``task.length`` terms (ValueError with the reason)."""
    limit = TERM_LIMITS[mcfg.dtype]
    bound = term_bound(task)
    if not bound <= limit:
        raise ValueError(
            f"data priors let terms reach |x| ~ {bound:.1e} within data.length = {task.length} terms, beyond the "
            f"{limit:.0e} that {mcfg.dtype} training can square without overflow; narrow data.a (|a| <= 1 keeps "
            f"sequences bounded), data.b or data.x0, or shorten data.length"
        )


def build_task(data_spec):
    """A task from the ``data`` section of a spec (``data.make_task`` for a ``task`` other than affine, else an
    ``AffineRecurrence``); ValueError for unknown or bad fields."""
    if not isinstance(data_spec, dict):
        raise ValueError(f"the data section must be a mapping of field -> value, got {type(data_spec).__name__}")
    if data_spec.get("task", "affine") != "affine":
        return data.make_task(data_spec)
    data_spec = {k: v for k, v in data_spec.items() if k != "task"}
    known = [f for f, v in data.AffineRecurrence.__dataclass_fields__.items() if v.init]
    for k in data_spec:
        if k not in known:
            raise ValueError(f"unknown field data.{k!s}; {did_you_mean('data', k, known)}")
    try:
        return data.AffineRecurrence(**data_spec)
    except TypeError as e:  # defensive: a malformed value the task's own checks let through
        raise ValueError(f"bad data section: {e}") from None


def build(spec: dict):
    """(ModelConfig, TrainConfig, AffineRecurrence) from a spec ``{"model": .., "train": .., "data": ..}``.

    Every field is validated (ValueError naming it); the data must fit the context and must not
    overflow the model's dtype within the sequence length (``check_overflow``)."""
    if not isinstance(spec, dict):
        raise ValueError(f"a spec is a mapping with sections {', '.join(SECTIONS)}, got {type(spec).__name__}")
    unknown = [k for k in spec if k not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown spec section {unknown[0]!r}; use {', '.join(SECTIONS)}")
    mcfg = ModelConfig.from_dict(spec.get("model", {}))
    tcfg = TrainConfig.from_dict(spec.get("train", {}))
    data = build_task(spec.get("data", {}))
    check_compatible(mcfg, data)
    return mcfg, tcfg, data


def data_from_record(data):
    """A data spec read back from JSON (a checkpoint's or config.json's record): JSON turns the priors'
    tuples into lists; turn them back."""
    if not isinstance(data, dict):
        return data
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
