"""Interpretability toolkit for minigpt: residual decompositions, ablation, activation patching, the
prediction lens, direct attribution, head scores with operational definitions, and PNG plots.

Everything works on a ``Transformer`` and its ``ActivationCache`` (``model.run_with_cache``); see
``docs/hooks.md`` for the hook table and ``docs/interp.md`` for the definitions.
"""
from ..nn.resid import (  # noqa: F401
    accumulated_resid,
    apply_ln_to_stack,
    decompose_resid,
    stack_head_results,
)
from .ablation import head_ablation  # noqa: F401
from .attribution import direct_attribution  # noqa: F401
from .head_scores import classify_heads, head_scores  # noqa: F401
from .lens import prediction_lens  # noqa: F401
from .patching import make_pairs, patch_grid, patch_heads, patch_resid  # noqa: F401
