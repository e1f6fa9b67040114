"""minigpt: a numpy GPT-style transformer with hand-written backprop, for affine-recurrence ICL."""
from . import data, ops, optim  # noqa: F401
from .config import ModelConfig, TrainConfig
from .model import Transformer

__version__ = "0.1.0"
__all__ = ["ModelConfig", "TrainConfig", "Transformer", "data", "ops", "optim", "train"]


def train(*args, **kwargs):
    """Train a model; see ``minigpt.train.train`` (imported lazily to keep ``import minigpt`` light)."""
    from .training import train as _train

    return _train(*args, **kwargs)


def extensions_report(*args, **kwargs):
    """Analyse models trained on the linear / polynomial tasks and write ``report/extensions.md``; see
    ``minigpt.extensions.extensions_report`` (imported lazily)."""
    from .extensions import extensions_report as _report

    return _report(*args, **kwargs)
