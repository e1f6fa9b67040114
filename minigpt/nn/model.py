"""The GPT-style transformer for real-valued sequences, forward and hand-written backward (the textbook model).

    resid_0    = x W_E + W_pos[:T]                               hook_embed, hook_pos_embed
    for each block l (GPT-2 pre-LN order):
        resid_mid  = resid_pre + Attn(LN1(resid_pre))            hook_attn_out, hook_resid_mid
        resid_post = resid_mid + MLP(LN2(resid_mid))             hook_mlp_out, hook_resid_post
    prediction = LN_final(resid) W_U + b_U                        [batch, pos(, d_out)]

Position t predicts term t + 1.  Parameters live in one flat dict with TransformerLens names.
The backward (``backward_pass``) is the forward (``forward_pass``) read in reverse, op by op.
The model runs on any op set with the functions of ``minigpt.nn.ops``; speed (buffer reuse, sharding the
batch over processes) lives in ``minigpt.fast``, saving and loading in ``minigpt.io``.
"""
from __future__ import annotations

import contextlib
import json
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from . import ops as reference_ops
from .config import ModelConfig, param_shapes
from .hooks import ActivationCache, HookState, as_predicate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from numpy.typing import ArrayLike

    from .hooks import FwdHooks, NameFilter


def is_weight_matrix(name: str) -> bool:
    """Weight matrices get weight decay; biases, LayerNorm and positional embeddings do not."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf.startswith("W_") and name != "pos_embed.W_pos"


def init_params(cfg: ModelConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Weights ~ N(0, init_range^2) (as TransformerLens), biases 0, LayerNorm gains 1."""
    dtype = np.dtype(cfg.dtype)
    params = {}
    for name, shape in param_shapes(cfg).items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("W_"):
            params[name] = (cfg.init_range * rng.standard_normal(shape)).astype(dtype)
        elif leaf == "w":
            params[name] = np.ones(shape, dtype)
        else:
            params[name] = np.zeros(shape, dtype)
    return params


class Transformer:
    """``model = Transformer(cfg, seed=0)``; ``model(x)``; ``model.loss_and_grad(x, target)``.

    ``ops``: the op set the forward and backward call, a module with the functions of ``minigpt.nn.ops``
    (the default, the plain reference ops) or ``minigpt.fast.ops`` (the speed kernels, checked against them).
    ``minigpt.Transformer`` is this model on the fast ops (``minigpt.fast.model``)."""

    def __init__(self, cfg: ModelConfig, seed: int = 0, ops: ModuleType | None = None):
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"cfg must be a minigpt.ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.ops = reference_ops if ops is None else ops
        self.params = init_params(cfg, np.random.default_rng(seed))
        self._fwd_hooks: list = []

    @property
    def has_hooks(self) -> bool:
        """Whether hooks are registered (``with model.hooks(...)``): they apply to every forward pass."""
        return bool(self._fwd_hooks)

    # ------------------------------------------------------------------ inputs
    def prepare(self, x: ArrayLike, name: str = "x") -> np.ndarray:
        """Check an input ``[batch, pos]`` or ``[batch, pos, d_in]``; return ``[batch, pos, d_in]`` in dtype."""
        cfg = self.cfg
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
        if x.ndim == 2 and cfg.d_in == 1:
            x = x[:, :, None]
        if x.ndim != 3 or x.shape[2] != cfg.d_in:
            want = "[batch, pos] or [batch, pos, 1]" if cfg.d_in == 1 else f"[batch, pos, {cfg.d_in}]"
            raise ValueError(f"{name} must have shape {want}, got {list(x.shape)}")
        B, T, _ = x.shape
        if B < 1 or T < 1:
            raise ValueError(f"{name} must have at least one sequence and one position, got {list(x.shape)}")
        if T > cfg.n_ctx:
            raise ValueError(f"{name} has {T} positions but the model's n_ctx is {cfg.n_ctx}")
        x = x.astype(cfg.dtype, copy=False)
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return x

    def prepare_target(self, target: ArrayLike, pred_shape: tuple[int, ...]) -> np.ndarray:
        """Check a target of the prediction's shape (``[batch, pos]`` or ``[batch, pos, d_out]``); return it in dtype."""
        t = np.asarray(target)
        if t.dtype.kind not in "fiu":
            raise ValueError(f"target must hold real numbers, got dtype {t.dtype}")
        if t.shape != pred_shape:
            raise ValueError(f"target must have the prediction's shape {list(pred_shape)}, got {list(t.shape)}")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing cast is reported below, not warned about
            t = t.astype(self.cfg.dtype, copy=False)
        if not np.isfinite(t).all():
            raise ValueError(f"target contains NaN or infinite values, or values beyond the {self.cfg.dtype} range")
        return t

    # ------------------------------------------------------------------ forward
    def forward_pass(self, x: np.ndarray, state: HookState | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """x [B, T, d_in] -> (pred [B, T, d_out], caches for the backward)."""
        cfg, P, ops = self.cfg, self.params, self.ops
        ln = cfg.normalization_type == "LN"
        H = (lambda name, v: v) if state is None else state.apply
        ctx = (lambda prefix: None) if state is None else state.context
        B, T, _ = x.shape
        C = {}
        embed, C["embed"] = ops.linear_forward(x, P["embed.W_E"])  # [B, T, D]  x W_E
        embed = H("hook_embed", embed)
        pos = H("hook_pos_embed", np.broadcast_to(P["pos_embed.W_pos"][:T], embed.shape))  # [B, T, D]
        resid = ops.add(embed, pos)  # [B, T, D]  embed + pos
        for l in range(cfg.n_layers):
            p = f"blocks.{l}."
            resid = H(p + "hook_resid_pre", resid)
            h = resid
            if ln:
                h, C[p + "ln1"] = ops.layernorm_forward(resid, P[p + "ln1.w"], P[p + "ln1.b"], cfg.eps, ctx(p + "ln1."))
            attn_out, C[p + "attn"] = ops.attention_forward(  # [B, T, D]
                h, *(P[p + "attn." + n] for n in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")),
                hook=ctx(p + "attn."),
            )
            attn_out = H(p + "hook_attn_out", attn_out)
            resid = ops.add(resid, attn_out)  # [B, T, D]  resid + attn_out
            if not cfg.attn_only:
                resid = H(p + "hook_resid_mid", resid)
                h = resid
                if ln:
                    h, C[p + "ln2"] = ops.layernorm_forward(resid, P[p + "ln2.w"], P[p + "ln2.b"], cfg.eps, ctx(p + "ln2."))
                mlp_out, C[p + "mlp"] = ops.mlp_forward(  # [B, T, D]
                    h, P[p + "mlp.W_in"], P[p + "mlp.b_in"], P[p + "mlp.W_out"], P[p + "mlp.b_out"], cfg.act_fn, ctx(p + "mlp.")
                )
                mlp_out = H(p + "hook_mlp_out", mlp_out)
                resid = ops.add(resid, mlp_out)  # [B, T, D]  resid + mlp_out
            resid = H(p + "hook_resid_post", resid)
        h = resid
        if ln:
            h, C["ln_final"] = ops.layernorm_forward(resid, P["ln_final.w"], P["ln_final.b"], cfg.eps, ctx("ln_final."))
        pred, C["unembed"] = ops.linear_forward(h, P["unembed.W_U"], P["unembed.b_U"])  # [B, T, d_out]
        return pred, C

    def backward_pass(self, dpred: np.ndarray, C: dict[str, Any],
                      record: Callable[[str, np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
        """The forward read in reverse.  dpred [B, T, d_out] -> grads dict keyed like ``params``."""
        cfg, ops = self.cfg, self.ops
        ln = cfg.normalization_type == "LN"
        rec = (lambda prefix: None) if record is None else (lambda prefix: lambda n, g: record(prefix + n, g))
        R = (lambda n, g: None) if record is None else record
        grads = {name: np.zeros_like(v) for name, v in self.params.items()}

        def layernorm_back(dh, key):  # h = LN(resid) with parameters key.w, key.b  ->  d resid
            dx, dw, db = ops.layernorm_backward(dh, C[key], rec(key + "."))
            grads[key + ".w"] += dw
            grads[key + ".b"] += db
            return dx

        # pred = h W_U + b_U
        dh, dW, db = ops.linear_backward(dpred, C["unembed"])
        grads["unembed.W_U"] += dW
        grads["unembed.b_U"] += db
        dresid = dh
        if ln:  # h = LN_final(resid)
            dresid = layernorm_back(dh, "ln_final")
        for l in reversed(range(cfg.n_layers)):
            p = f"blocks.{l}."
            R(p + "hook_resid_post", dresid)
            if not cfg.attn_only:
                # resid_post = resid_mid + mlp_out   (the skip passes dresid through unchanged)
                R(p + "hook_mlp_out", dresid)
                dh, g = ops.mlp_backward(dresid, C[p + "mlp"], rec(p + "mlp."))
                for n, v in g.items():
                    grads[p + "mlp." + n] += v
                if ln:  # h = LN2(resid_mid)
                    dh = layernorm_back(dh, p + "ln2")
                dresid = ops.add(dresid, dh)  # dresid + dh
                R(p + "hook_resid_mid", dresid)
            # resid_mid = resid_pre + attn_out
            R(p + "hook_attn_out", dresid)
            dh, g = ops.attention_backward(dresid, C[p + "attn"], rec(p + "attn."))
            for n, v in g.items():
                grads[p + "attn." + n] += v
            if ln:  # h = LN1(resid_pre)
                dh = layernorm_back(dh, p + "ln1")
            dresid = ops.add(dresid, dh)  # dresid + dh
            R(p + "hook_resid_pre", dresid)
        # resid_0 = embed + W_pos[:T]
        R("hook_pos_embed", dresid)
        R("hook_embed", dresid)
        T = dresid.shape[1]
        grads["pos_embed.W_pos"][:T] += dresid.sum(0)
        _, dW, _ = ops.linear_backward(dresid, C["embed"])  # embed = x W_E
        grads["embed.W_E"] += dW
        return grads

    def _output(self, pred):
        return pred[..., 0] if self.cfg.d_out == 1 else pred

    # ------------------------------------------------------------------ public API
    def _state(self, fwd_hooks=(), cache=None, names_filter=None):
        hooks = list(self._fwd_hooks) + list(fwd_hooks)
        if not hooks and cache is None:
            return None
        return HookState(hooks, cache, names_filter)

    def __call__(self, x: ArrayLike) -> np.ndarray:
        """x [batch, pos] or [batch, pos, d_in] -> predictions [batch, pos] or [batch, pos, d_out]."""
        pred, _ = self.forward_pass(self.prepare(x), self._state())
        return self._output(pred)

    forward = __call__

    def loss(self, x: ArrayLike, target: ArrayLike) -> float:
        """mean((model(x) - target)^2) over every element.  x [batch, pos(, d_in)], target [batch, pos(, d_out)] -> a scalar."""
        pred = self(x)
        return self.ops.mse_forward(pred, self.prepare_target(target, pred.shape))[0]

    def loss_and_grad(self, x: ArrayLike, target: ArrayLike) -> tuple[float, dict[str, np.ndarray]]:
        """(loss, grads): the MSE and its gradient for every parameter (same keys and shapes).
        x [batch, pos(, d_in)], target [batch, pos(, d_out)]."""
        x = self.prepare(x)
        B, T = x.shape[:2]
        t = self.prepare_target(target, (B, T) if self.cfg.d_out == 1 else (B, T, self.cfg.d_out))
        return self.batch_loss_and_grad(x, t)

    def batch_loss_and_grad(self, x: np.ndarray, t: np.ndarray, share: float = 1.0) -> tuple[float, dict[str, np.ndarray]]:
        """The loss of a checked batch x [b, T, d_in] (from ``prepare``) against t and its gradients, both
        scaled by ``share``: a shard's part of a larger batch (``minigpt.fast.sharded``), 1 for a whole batch."""
        pred, C = self.forward_pass(x, self._state())  # [b, T, d_out]
        loss, c = self.ops.mse_forward(self._output(pred), t)
        dpred = self.ops.mse_backward(c).reshape(pred.shape)  # [b, T, d_out]  d (shard mean) / d pred
        if share != 1:
            dpred *= share  # d (batch mean) / d pred
        return loss * share, self.backward_pass(dpred, C)

    def run_with_cache(self, x: ArrayLike, names_filter: NameFilter | None = None, incl_bwd: bool = False,
                       target: ArrayLike | None = None) -> tuple[np.ndarray, ActivationCache]:
        """(predictions [batch, pos(, d_out)], ActivationCache).  With ``incl_bwd=True`` the cache also holds ``name + "_grad"``,
        the gradient of the MSE against ``target`` with respect to each cached activation."""
        store: dict = {}
        state = self._state(cache=store, names_filter=names_filter)
        pred, C = self.forward_pass(self.prepare(x), state)
        out = self._output(pred)
        if incl_bwd:
            if target is None:
                raise ValueError("run_with_cache(incl_bwd=True) needs a target to differentiate the loss")
            _, c = self.ops.mse_forward(out, self.prepare_target(target, out.shape))
            grads: dict = {}

            def record(name, g):
                if name in store:
                    grads[name + "_grad"] = np.array(g)

            self.backward_pass(self.ops.mse_backward(c).reshape(pred.shape), C, record)
            for name in list(store):  # gradients follow activations, in forward order
                if name + "_grad" in grads:
                    store[name + "_grad"] = grads[name + "_grad"]
        return out, ActivationCache(store, self)

    def run_with_hooks(self, x: ArrayLike, fwd_hooks: FwdHooks = ()) -> np.ndarray:
        """Forward pass with ``fwd_hooks = [(name_or_predicate, fn)]``, ``fn(activation, hook) -> new | None``.
        x [batch, pos(, d_in)] -> predictions [batch, pos(, d_out)]."""
        pred, _ = self.forward_pass(self.prepare(x), self._state(fwd_hooks))
        return self._output(pred)

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: FwdHooks = ()) -> Iterator[Transformer]:
        """``with model.hooks(fwd_hooks=[...]):`` hooks apply to every call inside, and are always removed."""
        added = list(fwd_hooks)
        for n, _ in added:
            as_predicate(n)  # validate early
        self._fwd_hooks.extend(added)
        try:
            yield self
        finally:
            for h in added:
                self._fwd_hooks.remove(h)

    def reset_hooks(self) -> None:
        self._fwd_hooks.clear()

    def hook_names(self) -> list[str]:
        """Every hook point, in forward order."""
        _, cache = self.run_with_cache(np.zeros((1, 1, self.cfg.d_in)))
        return list(cache.keys())

    def num_params(self) -> int:
        return int(sum(v.size for v in self.params.values()))

    def __repr__(self) -> str:
        return f"Transformer({json.dumps(self.cfg.to_dict())}, {self.num_params()} parameters)"
