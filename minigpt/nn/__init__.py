"""The textbook core, numpy only: read it in this order.

    config.py   ModelConfig, TrainConfig: every setting, checked; param_shapes
    ops.py      every op as a plain forward/backward pair (the reference the fast kernels are checked against)
    hooks.py    hook points and the ActivationCache (TransformerLens names)
    model.py    Transformer: forward_pass, and backward_pass = the forward read in reverse
    optim.py    AdamW, gradient clipping, the learning-rate schedule
    gradcheck.py the model's gradients against float64 central differences

Nothing here imports anything else from minigpt.
"""
from . import ops  # noqa: F401
from .config import ModelConfig, TrainConfig  # noqa: F401
from .model import Transformer  # noqa: F401
