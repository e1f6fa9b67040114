"""Hook points and the activation cache, with TransformerLens names and habits.

A *hook point* is a named place in the forward pass (``blocks.0.attn.hook_pattern``). During
``run_with_hooks`` / ``run_with_cache`` every activation passes through ``HookState.apply``, which
calls the user's hook functions ``fn(activation, hook) -> new_activation | None`` (``hook.name`` is the
full name) and stores the (possibly replaced) activation in the cache. With no hooks and no cache
the model passes ``hook=None`` to the ops and pays nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import resid

if TYPE_CHECKING:
    from collections.abc import Collection, ItemsView, Iterable, Iterator, KeysView

    from .model import Transformer

    # what may name hook points: one full name, several, or a predicate on names
    NameFilter = str | Collection[str] | Callable[[str], bool]
    # a hook function: fn(activation, hook) -> new activation of the same shape, or None to keep it
    HookFn = Callable[[np.ndarray, "HookPoint"], np.ndarray | None]
    FwdHooks = Iterable[tuple[NameFilter, HookFn]]
    # a cache key: a full name ("blocks.0.attn.hook_pattern") or a shorthand with a layer (("pattern", 0))
    CacheKey = str | tuple[str] | tuple[str, int | None]


@dataclass(frozen=True)
class HookPoint:
    """What a hook function receives as its second argument (``hook.name``, ``hook.layer()``)."""

    name: str

    def layer(self) -> int | None:
        m = re.match(r"blocks\.(\d+)\.", self.name)
        return int(m.group(1)) if m else None


def as_predicate(name_or_predicate: NameFilter) -> Callable[[str], bool]:
    if callable(name_or_predicate):
        return name_or_predicate
    if isinstance(name_or_predicate, str):
        return lambda n: n == name_or_predicate
    if isinstance(name_or_predicate, (list, tuple, set, frozenset)):
        names = set(name_or_predicate)
        return lambda n: n in names
    raise TypeError(f"a hook name must be a string, a list of strings or a predicate, got {name_or_predicate!r}")


class HookState:
    """The hooks and cache of one forward pass.  ``apply(name, value)`` is the single entry point."""

    def __init__(self, fwd_hooks: FwdHooks = (), cache: dict | None = None, names_filter: NameFilter | None = None):
        self.fwd_hooks = [(as_predicate(n), fn) for n, fn in fwd_hooks]
        self.cache = cache
        self.names_filter = (lambda n: True) if names_filter is None else as_predicate(names_filter)

    def wants(self, name: str) -> bool:
        """Is anything listening at ``name``?  Lets ops skip activations nobody needs."""
        if self.cache is not None and self.names_filter(name):
            return True
        return any(pred(name) for pred, _ in self.fwd_hooks)

    def apply(self, name: str, value: np.ndarray) -> np.ndarray:
        """``value`` [any shape] -> the (possibly replaced) activation [same shape], cached if asked for."""
        for pred, fn in self.fwd_hooks:
            if pred(name):
                new = fn(value, HookPoint(name))
                if new is not None:
                    if np.shape(new) != np.shape(value):
                        raise ValueError(f"hook at {name} returned shape {np.shape(new)}, expected {np.shape(value)}")
                    value = np.asarray(new, dtype=value.dtype)
        if self.cache is not None and self.names_filter(name):
            self.cache[name] = value
        return value

    def context(self, prefix: str) -> "HookContext":
        return HookContext(self, prefix)


class HookContext:
    """The ``hook`` an op receives: names relative to a prefix such as ``blocks.0.attn.``."""

    __slots__ = ("state", "prefix")

    def __init__(self, state: HookState, prefix: str):
        self.state, self.prefix = state, prefix

    def __call__(self, name: str, value: np.ndarray) -> np.ndarray:
        return self.state.apply(self.prefix + name, value)

    def wants(self, name: str) -> bool:
        return self.state.wants(self.prefix + name)


_SHORT = {  # TransformerLens-style shorthand: cache["pattern", 0] -> "blocks.0.attn.hook_pattern"
    "resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out",
    "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v", "z": "attn.hook_z",
    "attn_scores": "attn.hook_attn_scores", "pattern": "attn.hook_pattern", "attn": "attn.hook_pattern",
    "result": "attn.hook_result", "pre": "mlp.hook_pre", "post": "mlp.hook_post",
    "scale1": "ln1.hook_scale", "normalized1": "ln1.hook_normalized",
    "scale2": "ln2.hook_scale", "normalized2": "ln2.hook_normalized",
}


def full_hook_name(name: str, layer: int | None = None, n_layers: int | None = None) -> str:
    """``("pattern", 0)`` -> ``blocks.0.attn.hook_pattern``; negative layers count from the end."""
    if layer is None:
        if name in ("embed", "pos_embed"):
            return "hook_" + name
        if name in ("scale", "normalized"):
            return "ln_final.hook_" + name
        return name
    if layer < 0:
        if n_layers is None:
            raise ValueError("a negative layer needs n_layers")
        layer += n_layers
    if name.endswith("_grad"):
        return full_hook_name(name[: -len("_grad")], layer, n_layers) + "_grad"
    suffix = _SHORT.get(name, name)
    return f"blocks.{layer}.{suffix}"


class ActivationCache:
    """Activations by full hook name, in forward order (gradients follow as ``name + "_grad"``).

    ``cache["blocks.0.attn.hook_pattern"]``, ``cache["pattern", 0]``, ``cache["resid_pre", -1]``.
    """

    def __init__(self, store: dict, model: Transformer):
        self.cache_dict = store
        self.model = model

    def _key(self, key):
        if isinstance(key, tuple):
            return full_hook_name(key[0], key[1] if len(key) > 1 else None, self.model.cfg.n_layers)
        return key

    def __getitem__(self, key: CacheKey) -> np.ndarray:
        k = self._key(key)
        if k not in self.cache_dict:
            raise KeyError(f"no activation {k!r} in the cache (have {len(self.cache_dict)} names)")
        return self.cache_dict[k]

    def __contains__(self, key: object) -> bool:
        return self._key(key) in self.cache_dict

    def keys(self) -> KeysView[str]:
        return self.cache_dict.keys()

    def items(self) -> ItemsView[str, np.ndarray]:
        return self.cache_dict.items()

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache_dict)

    def __len__(self) -> int:
        return len(self.cache_dict)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} activations)"

    # TransformerLens-style helpers (implemented in minigpt.nn.resid)
    def accumulated_resid(self, layer: int | None = None, incl_mid: bool = False,
                          return_labels: bool = True) -> np.ndarray | tuple[np.ndarray, list[str]]:
        """``resid.accumulated_resid``: ``(stack [n, batch, pos, d_model], labels)`` (or just the stack)."""
        return resid.accumulated_resid(self, layer, incl_mid, return_labels)

    def decompose_resid(self, layer: int | None = None, mode: str = "all", incl_embeds: bool = True,
                        return_labels: bool = True) -> np.ndarray | tuple[np.ndarray, list[str]]:
        """``resid.decompose_resid``: ``(stack [n_components, batch, pos, d_model], labels)`` (or just the stack)."""
        return resid.decompose_resid(self, layer, mode, incl_embeds, return_labels)

    def stack_head_results(self, layer: int | None = None, return_labels: bool = True,
                           incl_remainder: bool = False) -> np.ndarray | tuple[np.ndarray, list[str]]:
        """``resid.stack_head_results``: ``(stack [n_heads * layers (+ 1), batch, pos, d_model], labels)`` (or just the stack)."""
        return resid.stack_head_results(self, layer, return_labels, incl_remainder)

    def apply_ln_to_stack(self, stack: np.ndarray, layer: int | None = None) -> np.ndarray:
        """``resid.apply_ln_to_stack``: ``stack [n, batch, pos, d_model]`` -> ``[n, batch, pos, d_model]``."""
        return resid.apply_ln_to_stack(self, stack, layer)
