"""One step's loss and gradients on the fast ops, reusing the previous step's arrays.

    loss, grads = loss_and_grad(model, x, t, share=1.0)

``model`` is a ``minigpt.nn.Transformer`` built on ``minigpt.fast.ops``; x [b, T, d_in] and t are already
checked (``model.prepare``).  The ops take their result arrays from a ``Workspace`` kept per model and
input shape (see ``minigpt.fast.ops.Workspace``): a training step of the ``paper`` preset writes ~200 MB
of activations and gradients, and reusing them saves about a quarter of the step.
"""
from __future__ import annotations

import weakref

import numpy as np

from . import ops

_WORKSPACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (input shape, Workspace)


def workspace(model, shape: tuple) -> ops.Workspace:
    """The arrays ``loss_and_grad`` reuses for ``model``; a new input shape starts a new workspace."""
    ws = _WORKSPACES.get(model)
    if ws is None or ws[0] != shape:
        ws = _WORKSPACES[model] = (shape, ops.Workspace())
    return ws[1]


def loss_and_grad(model, x: np.ndarray, t: np.ndarray, share: float = 1.0):
    """``model.batch_loss_and_grad(x, t, share)`` with the ops' results taken from the model's workspace."""
    with ops.using(workspace(model, x.shape)):
        return model.batch_loss_and_grad(x, t, share)
