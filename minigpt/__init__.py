"""minigpt: a numpy GPT-style transformer with hand-written backprop, for affine-recurrence ICL."""
from . import data, ops, optim  # noqa: F401
from .config import ModelConfig, TrainConfig
from .model import Transformer

__version__ = "0.1.0"
__all__ = ["ModelConfig", "TrainConfig", "Transformer", "data", "ops", "optim", "train", "extensions_report"]

# Imported on first use to keep ``import minigpt`` light; the attribute is the real function, so
# ``help(minigpt.train)`` shows ``minigpt.training.train`` with its signature and docstring.
_LAZY = {"train": ("training", "train"), "extensions_report": ("extensions", "extensions_report")}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'minigpt' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    return getattr(importlib.import_module(f".{module}", __name__), attr)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
