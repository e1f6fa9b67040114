"""minigpt: a numpy GPT-style transformer with hand-written backprop, for affine-recurrence ICL.

The package's folders are its layers, each importing only from those above it in this list:

    nn/           the textbook core: config, reference ops, hooks, model (forward, backward), optimiser
    tasks/        the sequences, their priors, baselines, presets
    io/           the checkpoint file format
    fast/         the speed kernels (checked against nn/ops.py), sharded steps; minigpt.Transformer
    training/     the training loop and load_run
    interp/       the interpretability toolkit
    experiments/  the studies and reports built on it
    cli.py, bench.py
"""
import importlib
import importlib.abc
import importlib.util
import sys

from .fast import ops
from .fast.model import Transformer
from .nn import optim  # noqa: F401
from .nn.config import ModelConfig, TrainConfig
from .tasks import data

__version__ = "0.1.0"
__all__ = ["ModelConfig", "TrainConfig", "Transformer", "data", "ops", "optim", "train", "extensions_report"]

# Old module paths (before the package had layers) -> where the module lives now.  ``import minigpt.data``
# and ``from minigpt.model import Transformer`` keep working: the old name is the same module object.
MOVED = {
    "minigpt.config": "minigpt.nn.config",
    "minigpt.hooks": "minigpt.nn.hooks",
    "minigpt.optim": "minigpt.nn.optim",
    "minigpt.gradcheck": "minigpt.nn.gradcheck",
    "minigpt.model": "minigpt.fast.model",  # the old minigpt.model.Transformer ran on the fast ops
    "minigpt.ops": "minigpt.fast.ops",
    "minigpt.threads": "minigpt.fast.threads",
    "minigpt.shardpool": "minigpt.fast.shardpool",
    "minigpt.checkpoint": "minigpt.io.checkpoint",
    "minigpt.data": "minigpt.tasks.data",
    "minigpt.baselines": "minigpt.tasks.baselines",
    "minigpt.baselines_ext": "minigpt.tasks.baselines_ext",
    "minigpt.presets": "minigpt.tasks.presets",
    "minigpt.runner": "minigpt.experiments.pool",
    "minigpt.reproduce": "minigpt.experiments.reproduce",
    "minigpt.sweep": "minigpt.experiments.sweep",
    "minigpt.emergence": "minigpt.experiments.emergence",
    "minigpt.extensions": "minigpt.experiments.extensions",
    "minigpt.refinement": "minigpt.experiments.refinement",
    "minigpt.interp.resid": "minigpt.nn.resid",
    "minigpt.interp.analysis": "minigpt.experiments.analysis",
    "minigpt.interp.claims": "minigpt.experiments.claims",
    "minigpt.interp.report": "minigpt.experiments.report",
    "minigpt.interp.story": "minigpt.experiments.story",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path (``MOVED``) as the module at its new path (the same object)."""

    def __init__(self):
        self.specs: dict = {}  # new module name -> its own spec, restored after the old name's import

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self.specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.specs[module.__name__]  # the import machinery gave it the old name's spec


if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(MovedModuleFinder())

# Imported on first use to keep ``import minigpt`` light; the attribute is the real function, so
# ``help(minigpt.train)`` shows ``minigpt.training.loop.train`` with its signature and docstring.
_LAZY = {"train": ("training.loop", "train"), "extensions_report": ("experiments.extensions", "extensions_report")}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'minigpt' has no attribute {name!r}")
    module, attr = _LAZY[name]
    return getattr(importlib.import_module(f".{module}", __name__), attr)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
