"""The GPT-style transformer for real-valued sequences, forward and hand-written backward.

    resid_0    = x W_E + W_pos[:T]                               hook_embed, hook_pos_embed
    for each block l (GPT-2 pre-LN order):
        resid_mid  = resid_pre + Attn(LN1(resid_pre))            hook_attn_out, hook_resid_mid
        resid_post = resid_mid + MLP(LN2(resid_mid))             hook_mlp_out, hook_resid_post
    prediction = LN_final(resid) W_U + b_U                        [batch, pos(, d_out)]

Position t predicts term t + 1.  Parameters live in one flat dict with TransformerLens names.
The backward (``_backward``) is the forward read in reverse, op by op.
"""
from __future__ import annotations

import contextlib
import json

import numpy as np

from . import ops
from .config import ModelConfig
from .hooks import ActivationCache, HookState
from .shardpool import ShardPoolError, drop_pool, get_pool, warn_once
from .threads import limit_blas_threads, resolve_threads, shards


def param_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    """Every parameter name and its shape, in forward order."""
    D, H, E, M = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    shapes = {"embed.W_E": (cfg.d_in, D), "pos_embed.W_pos": (cfg.n_ctx, D)}
    ln = cfg.normalization_type == "LN"
    for l in range(cfg.n_layers):
        p = f"blocks.{l}."
        if ln:
            shapes[p + "ln1.w"], shapes[p + "ln1.b"] = (D,), (D,)
        for n in "QKV":
            shapes[p + f"attn.W_{n}"] = (H, D, E)
        for n in "QKV":
            shapes[p + f"attn.b_{n}"] = (H, E)
        shapes[p + "attn.W_O"], shapes[p + "attn.b_O"] = (H, E, D), (D,)
        if not cfg.attn_only:
            if ln:
                shapes[p + "ln2.w"], shapes[p + "ln2.b"] = (D,), (D,)
            shapes[p + "mlp.W_in"], shapes[p + "mlp.b_in"] = (D, M), (M,)
            shapes[p + "mlp.W_out"], shapes[p + "mlp.b_out"] = (M, D), (D,)
    if ln:
        shapes["ln_final.w"], shapes["ln_final.b"] = (D,), (D,)
    shapes["unembed.W_U"], shapes["unembed.b_U"] = (D, cfg.d_out), (cfg.d_out,)
    return shapes


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
    """``model = Transformer(cfg, seed=0)``; ``model(x)``; ``model.loss_and_grad(x, target)``."""

    def __init__(self, cfg: ModelConfig, seed: int = 0):
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"cfg must be a minigpt.ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.params = init_params(cfg, np.random.default_rng(seed))
        self._fwd_hooks: list = []

    # ------------------------------------------------------------------ inputs
    def _prepare(self, x, name="x"):
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

    def _prepare_target(self, target, pred_shape):
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
    def _forward(self, x, state: HookState | None = None):
        """x [B, T, d_in] -> (pred [B, T, d_out], caches for the backward)."""
        cfg, P = self.cfg, self.params
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

    def _backward(self, dpred, C, record=None):
        """The forward read in reverse.  dpred [B, T, d_out] -> grads dict keyed like ``params``."""
        cfg = self.cfg
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

    def __call__(self, x):
        """x [batch, pos] or [batch, pos, d_in] -> predictions [batch, pos] or [batch, pos, d_out]."""
        pred, _ = self._forward(self._prepare(x), self._state())
        return self._output(pred)

    forward = __call__

    def loss(self, x, target) -> float:
        """mean((model(x) - target)^2) over every element."""
        pred = self(x)
        return ops.mse_forward(pred, self._prepare_target(target, pred.shape))[0]

    def loss_and_grad(self, x, target, threads=1):
        """(loss, grads): the MSE and its gradient for every parameter (same keys and shapes).

        ``threads``: cut the batch into that many shards and compute them side by side, this process and
        ``threads - 1`` helper processes ("auto": as many as BLAS would use; see ``minigpt.shardpool``).
        The loss and gradients are the shards' sums, each weighted by its share of the batch: the one-thread
        numbers up to float rounding.  With hooks registered (``model.hooks``) the step runs here alone,
        so every hook sees the whole batch."""
        x = self._prepare(x)
        B, T = x.shape[:2]
        t = self._prepare_target(target, (B, T) if self.cfg.d_out == 1 else (B, T, self.cfg.d_out))
        parts = shards(B, 1 if self._fwd_hooks else resolve_threads(threads))
        pool = None
        if len(parts) > 1:
            try:
                pool = get_pool(self.cfg, len(parts) - 1)
            except ShardPoolError as e:  # e.g. no shared memory here: compute on one thread
                warn_once(f"minigpt: {e}; computing on one thread")
        if pool is None:
            return self._shard_loss_and_grad(x, t, 1.0)
        try:
            with pool.lock:
                return self._loss_and_grad_with_helpers(pool, x, t, parts)
        except (ShardPoolError, OSError):  # a helper died or its pipe broke: start afresh next time
            drop_pool(pool)
            raise

    def _loss_and_grad_with_helpers(self, pool, x, t, parts):
        """Shard 0 here, shards 1, 2, ... in the pool's helpers; the sum of their scaled losses and grads."""
        B = x.shape[0]
        pool.submit(self.params, x, t, parts[1:])  # the helpers start on shards 1, 2, ...
        first = parts[0]
        try:
            with limit_blas_threads(1):  # the helpers have the other cores
                loss, grads = self._shard_loss_and_grad(x[first], t[first], (first.stop - first.start) / B)
        except BaseException:
            pool.collect(len(parts) - 1, raise_errors=False)  # wait for the helpers, then raise our error
            raise
        for shard_loss, g in pool.collect(len(parts) - 1):  # in shard order: the same numbers every run
            loss += shard_loss
            for k, v in g.items():  # v is a view of the helper's shared block, valid until the next submit
                grads[k] += v
        return loss, grads

    def _shard_loss_and_grad(self, x, t, share):
        """The loss of x [b, T, d_in] against t and its gradients, both scaled by ``share`` (the shard's
        part of the batch)."""
        with ops.using(self._workspace(x.shape)):  # the ops reuse last step's arrays (see ops.Workspace)
            pred, C = self._forward(x, self._state())
            loss, c = ops.mse_forward(self._output(pred), t)
            dpred = ops.mse_backward(c).reshape(pred.shape)  # [b, T, d_out]  d (shard mean) / d pred
            if share != 1:
                dpred *= share  # d (batch mean) / d pred
            return loss * share, self._backward(dpred, C)

    def _workspace(self, shape):
        """The arrays ``loss_and_grad`` reuses from step to step; a new input shape starts a new workspace."""
        ws = getattr(self, "_ws", None)
        if ws is None or ws[0] != shape:
            ws = self._ws = (shape, ops.Workspace())
        return ws[1]

    def run_with_cache(self, x, names_filter=None, incl_bwd=False, target=None):
        """(predictions, ActivationCache).  With ``incl_bwd=True`` the cache also holds ``name + "_grad"``,
        the gradient of the MSE against ``target`` with respect to each cached activation."""
        store: dict = {}
        state = self._state(cache=store, names_filter=names_filter)
        pred, C = self._forward(self._prepare(x), state)
        out = self._output(pred)
        if incl_bwd:
            if target is None:
                raise ValueError("run_with_cache(incl_bwd=True) needs a target to differentiate the loss")
            _, c = ops.mse_forward(out, self._prepare_target(target, out.shape))
            grads: dict = {}

            def record(name, g):
                if name in store:
                    grads[name + "_grad"] = np.array(g)

            self._backward(ops.mse_backward(c).reshape(pred.shape), C, record)
            for name in list(store):  # gradients follow activations, in forward order
                if name + "_grad" in grads:
                    store[name + "_grad"] = grads[name + "_grad"]
        return out, ActivationCache(store, self)

    def run_with_hooks(self, x, fwd_hooks=()):
        """Forward pass with ``fwd_hooks = [(name_or_predicate, fn)]``, ``fn(activation, hook) -> new | None``."""
        pred, _ = self._forward(self._prepare(x), self._state(fwd_hooks))
        return self._output(pred)

    @contextlib.contextmanager
    def hooks(self, fwd_hooks=()):
        """``with model.hooks(fwd_hooks=[...]):`` hooks apply to every call inside, and are always removed."""
        added = list(fwd_hooks)
        for n, _ in added:
            from .hooks import _as_predicate

            _as_predicate(n)  # validate early
        self._fwd_hooks.extend(added)
        try:
            yield self
        finally:
            for h in added:
                self._fwd_hooks.remove(h)

    def reset_hooks(self):
        self._fwd_hooks.clear()

    def hook_names(self) -> list[str]:
        """Every hook point, in forward order."""
        _, cache = self.run_with_cache(np.zeros((1, 1, self.cfg.d_in)))
        return list(cache.keys())

    def num_params(self) -> int:
        return int(sum(v.size for v in self.params.values()))

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """One ``.npz``: parameters under their names, the config as JSON (written atomically)."""
        from .checkpoint import save_checkpoint

        save_checkpoint(path, self.params, {"model": self.cfg.to_dict()})

    @classmethod
    def load(cls, path):
        """Load a model saved by ``save`` (or a training checkpoint); never unpickles."""
        from .checkpoint import load_checkpoint

        arrays, meta = load_checkpoint(path)
        if "model" not in meta:
            raise ValueError(f"{path}: not a minigpt checkpoint (no model config)")
        cfg = ModelConfig(**meta["model"])
        model = cls(cfg, seed=0)
        expected = param_shapes(cfg)
        missing = [k for k in expected if "params/" + k not in arrays]
        if missing:
            raise ValueError(f"{path}: checkpoint lacks parameter {missing[0]!r}")
        for k, shape in expected.items():
            a = arrays["params/" + k]
            if a.shape != shape or a.dtype != np.dtype(cfg.dtype):
                raise ValueError(f"{path}: parameter {k!r} has shape {a.shape} {a.dtype}, expected {shape} {cfg.dtype}")
            model.params[k] = a
        return model

    def __repr__(self):
        return f"Transformer({json.dumps(self.cfg.to_dict())}, {self.num_params()} parameters)"
