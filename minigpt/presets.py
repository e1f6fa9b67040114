"""Named presets: ``{"model": ModelConfig fields, "train": TrainConfig fields, "data": task fields}``.

``paper``: the three-layer model of the paper with our own choices (see the README's "Why these
settings").  ``tiny``: trains in seconds, for tests and demos.
"""
from __future__ import annotations

import copy
import json

PRESETS = {
    "paper": {
        "model": dict(n_layers=3, d_model=64, n_heads=4, d_mlp=256, n_ctx=32),
        "train": dict(steps=3000, batch_size=256, lr=1e-3, warmup_steps=200, weight_decay=0.01, eval_every=250),
        "data": dict(a=("uniform", -1.0, 1.0), b=("uniform", -1.0, 1.0), x0=("uniform", -1.0, 1.0), length=20),
    },
    "tiny": {
        "model": dict(n_layers=3, d_model=16, n_heads=2, d_mlp=32, n_ctx=16),
        "train": dict(steps=60, batch_size=32, lr=3e-3, warmup_steps=10, eval_every=20, eval_size=256, checkpoint_every=30),
        "data": dict(a=("uniform", -1.0, 1.0), b=("uniform", -1.0, 1.0), x0=("uniform", -1.0, 1.0), length=10),
    },
}
SECTIONS = ("model", "train", "data")


def get_preset(name: str) -> dict:
    """A deep copy of preset ``name`` (unknown names raise ValueError listing the known ones)."""
    if name not in PRESETS:
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


def apply_overrides(spec: dict, overrides) -> dict:
    """Apply ``section.field=value`` strings to a preset spec; unknown sections or fields raise ValueError."""
    from .config import ModelConfig, TrainConfig
    from .data import AffineRecurrence

    fields = {
        "model": set(ModelConfig.__dataclass_fields__),
        "train": set(TrainConfig.__dataclass_fields__),
        "data": {f for f, v in AffineRecurrence.__dataclass_fields__.items() if v.init},
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
            raise ValueError(f"unknown field {key!r}; {section} fields: {', '.join(sorted(fields[section]))}")
        v = parse_value(value)
        if isinstance(v, list):
            v = tuple(v)
        spec[section][field] = v
    return spec


def build(spec: dict):
    """(ModelConfig, TrainConfig, AffineRecurrence) from a spec; checks that the context fits the data."""
    from .config import ModelConfig, TrainConfig
    from .data import AffineRecurrence

    data = AffineRecurrence(**spec["data"])
    model_spec = dict(spec["model"])
    mcfg = ModelConfig(**model_spec)
    tcfg = TrainConfig(**spec["train"])
    if data.length - 1 > mcfg.n_ctx:
        raise ValueError(f"data.length - 1 = {data.length - 1} positions exceed model.n_ctx = {mcfg.n_ctx}")
    return mcfg, tcfg, data
