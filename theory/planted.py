"""Planted circuits: multi-layer minigpt models with hand-set weights whose mechanism is known by construction.

They are the ground truth the interpretability tools (``minigpt.interp``) are tested against: every head
computes an idealised head of ``theory.heads`` exactly, so what ablation, patching, the lens, attribution,
head scores and the fits should report is a closed form (``closed_form`` below), not a guess.

A head is described by a ``HeadSpec`` (made by the builders ``copying``, ``previous_token``, ``similarity``,
``inert``, ``positional``, ``pattern_only``).  Each head reads scalar *channels* of the residual stream for its
query q, key k and value v and writes one scalar channel of its own (named ``L{l}H{h}``):

    out_t = gamma * sum_{j<=t} softmax_j(beta q_t k_j + P[t, j]) v_j                     (*)

Channels: ``"x"`` (the term x_t), ``"one"`` (constant 1), ``"pos"`` (the position t) and every head of an
earlier layer (``"L0H1"``: a composition of heads).  The prediction is a fixed linear read-out of channels,
``pred_t = sum_c readout[c] * channel_c[t] + bias``.

Weights: each head's W_Q, W_K, W_V, W_O are those of ``theory.heads.head_model`` (one-layer idealised head:
q = (x_t, onehot(t)), k = sqrt(E) (beta x_j, P[:, j]), v = x_j, W_O writes gamma v), with the rows that read
x in head_model re-pointed at the chosen q / k / v channel and the output column at the head's own channel.
Residual layout, d_model = 3 + n_ctx + n_layers * n_heads:
    dim 0: x_t (W_E);  dim 1: 1 and dim 2: t (W_pos);  dims 3 .. 3 + n_ctx - 1: onehot(t) (W_pos);
    dim 3 + n_ctx + l * n_heads + h: the output of head (l, h).
No LayerNorm, attention only; biases zero except ``b_U``.  A head not given a spec has all-zero weights:
uniform attention and zero output.  Hard positional patterns (copying, previous-token) leak exp(-60).

Ready-made: ``reference_circuit`` (every kind of head, one composition), ``claim_circuit`` (the paper's two claims
made true or false by construction), ``layer_bias_model`` / ``layer_bias_resid`` (a LayerNorm model whose residual is
known in closed form, for the lens's LayerNorm choices) and ``head_recurrence`` (sequences whose next term is a copy
plus a planted similarity head, for ``theory.heads.copy_plus_head_fit``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import minigpt
from theory.heads import causal_softmax, head_model, positional_bias

BASE_CHANNELS = ("x", "one", "pos")


@dataclass(frozen=True)
class HeadSpec:
    """One planted head at (layer, head) computing (*) of the module docstring."""

    layer: int
    head: int
    kind: str  # "copy", "previous", "similarity", "inert", "positional", "pattern_only"
    beta: float = 0.0
    gamma: float = 1.0
    pos_bias: np.ndarray | None = field(default=None, compare=False)  # [n_ctx, n_ctx] P[t, j]; None: 0
    q: str = "x"
    k: str = "x"
    v: str = "x"

    @property
    def name(self) -> str:
        return f"L{self.layer}H{self.head}"

    def bias(self, T: int) -> np.ndarray:
        """The positional bias P[:T, :T] in the logits (hard one-hot for copying / previous-token heads)."""
        if self.kind in ("copy", "previous"):
            return positional_bias(self.kind, T)
        return np.zeros((T, T)) if self.pos_bias is None else np.asarray(self.pos_bias, float)[:T, :T]


# ----------------------------------------------------------------------------- builders of head specs
def copying(layer, head, gamma=1.0, source="x"):
    """Copying head: out_t = gamma * source_t (attends only to the current position)."""
    return HeadSpec(layer, head, "copy", 0.0, gamma, None, source, source, source)


def previous_token(layer, head, gamma=1.0, source="x"):
    """Previous-token head: out_t = gamma * source_{t-1}, out_0 = gamma * source_0."""
    return HeadSpec(layer, head, "previous", 0.0, gamma, None, source, source, source)


def similarity(layer, head, beta, gamma=1.0, pos_bias=None, source="x"):
    """Similarity head: out_t = gamma sum_j softmax_j(beta x_t x_j + P[t, j]) x_j (``theory.heads.similarity_head``);
    beta < 0 is a negative similarity head."""
    return HeadSpec(layer, head, "similarity", float(beta), gamma, pos_bias, source, source, source)


def inert(layer, head, beta=2.0, pos_bias=None):
    """Inert head: a similarity pattern (it attends somewhere) but zero OV (gamma = 0): out_t = 0."""
    return HeadSpec(layer, head, "inert", float(beta), 0.0, pos_bias, "x", "x", "x")


def positional(layer, head, gamma=1.0, pos_bias=None):
    """Positional head: pattern softmax_j(P[t, j]) and value the position j, so out_t = gamma sum_j A[t, j] j
    depends on t only (uniform attention, P = 0: gamma t / 2).  It never reads x."""
    return HeadSpec(layer, head, "positional", 0.0, gamma, pos_bias, "one", "one", "pos")


def pattern_only(layer, head, beta, gamma=1.0):
    """A head that matters only through its pattern: logits beta * x_j (keys alone), value the position j:
    out_t = gamma sum_j softmax_j(beta x_j) j.  x moves the output only by moving where the head looks."""
    return HeadSpec(layer, head, "pattern_only", float(beta), gamma, None, "one", "x", "pos")


# ----------------------------------------------------------------------------- the circuit
@dataclass
class Circuit:
    """Heads, a read-out and the model's shape; ``model()`` builds the minigpt, ``closed_form`` computes it."""

    heads: list
    n_layers: int
    n_heads: int
    n_ctx: int
    readout: dict  # channel -> weight in the prediction
    bias: float = 0.0

    def __post_init__(self):
        seen = set()
        for s in self.heads:
            if not (0 <= s.layer < self.n_layers and 0 <= s.head < self.n_heads):
                raise ValueError(f"head {s.name} outside a {self.n_layers}-layer, {self.n_heads}-head model")
            if s.name in seen:
                raise ValueError(f"head {s.name} given twice")
            seen.add(s.name)
        earlier = lambda s: {f"L{l}H{h}" for l in range(s.layer) for h in range(self.n_heads)}  # noqa: E731
        for s in self.heads:
            for c in (s.q, s.k, s.v):
                if c not in BASE_CHANNELS and c not in earlier(s):
                    raise ValueError(f"head {s.name} reads channel {c!r}: not one of {BASE_CHANNELS} or an earlier layer's head")
        for c in self.readout:
            if c not in BASE_CHANNELS and c not in {f"L{l}H{h}" for l in range(self.n_layers) for h in range(self.n_heads)}:
                raise ValueError(f"read-out channel {c!r} is not a channel of this circuit")

    def spec(self, name) -> HeadSpec | None:
        return next((s for s in self.heads if s.name == name), None)

    def dim(self, channel) -> int:
        """The residual dimension holding ``channel``."""
        if channel in BASE_CHANNELS:
            return BASE_CHANNELS.index(channel)
        l, h = (int(v) for v in channel[1:].split("H"))
        return 3 + self.n_ctx + l * self.n_heads + h

    def model(self, dtype="float64"):
        """The minigpt ``Transformer`` computing this circuit (weights transplanted from ``head_model``)."""
        T, L, H = self.n_ctx, self.n_layers, self.n_heads
        D, E = 3 + T + L * H, 1 + T
        cfg = minigpt.ModelConfig(n_layers=L, d_model=D, n_heads=H, d_head=E, d_mlp=1, n_ctx=T, attn_only=True,
                                  normalization_type=None, dtype=dtype)
        m = minigpt.Transformer(cfg, seed=0)
        p = {k: np.zeros(v.shape) for k, v in m.params.items()}
        p["embed.W_E"][0, 0] = 1.0  # dim 0 <- x
        p["pos_embed.W_pos"][:, 1] = 1.0  # dim 1 <- 1
        p["pos_embed.W_pos"][:, 2] = np.arange(T)  # dim 2 <- t
        p["pos_embed.W_pos"][np.arange(T), 3 + np.arange(T)] = 1.0  # dims 3.. <- onehot(t)
        onehot = 3 + np.arange(T)
        for s in self.heads:
            kind = {"copy": "copy", "previous": "previous"}.get(s.kind, "similarity")
            small = head_model(kind, T, beta=s.beta, gamma=s.gamma, pos_bias=None if kind != "similarity" else s.bias(T)).params
            pre = f"blocks.{s.layer}.attn."
            for w, src in (("W_Q", s.q), ("W_K", s.k), ("W_V", s.v)):
                big, sm = p[pre + w][s.head], small["blocks.0.attn." + w][0]  # [D, E], [3 + T, E]
                big[self.dim(src)] = sm[0]  # head_model reads x from dim 0: read the chosen channel instead
                big[onehot] = sm[3:]  # onehot(position) rows
            p[pre + "W_O"][s.head][:, self.dim(s.name)] = small["blocks.0.attn.W_O"][0][:, 2]  # head_model writes dim 2
        for c, w in self.readout.items():
            p["unembed.W_U"][self.dim(c), 0] = w
        p["unembed.b_U"][0] = self.bias
        m.params = {k: v.astype(cfg.dtype) for k, v in p.items()}
        return m


def head_output(spec: HeadSpec, q, k, v) -> np.ndarray:
    """(*) on channel values q, k, v [batch, T] -> [batch, T]."""
    A = attention_pattern(spec, q, k)  # [batch, T, T]
    return spec.gamma * np.einsum("btj,bj->bt", A, v)


def attention_pattern(spec: HeadSpec, q, k) -> np.ndarray:
    """softmax_j(beta q_t k_j + P[t, j]) over j <= t: ``[batch, T, T]``."""
    T = q.shape[-1]
    return causal_softmax(spec.beta * q[:, :, None] * k[:, None, :] + spec.bias(T))


def closed_form(circuit: Circuit, x, before_layer=None, head_out=None) -> dict:
    """Every channel of the circuit on inputs x [batch, T], layer by layer, from (*).

    Interventions (to predict what ablation and patching must give):
    ``before_layer(l, channels) -> channels`` edits the residual before block l (l = n_layers: before the
    read-out), e.g. a patched ``resid_pre``; ``head_out(name, out) -> out`` replaces a head's output, e.g.
    an ablated or patched head.  Heads of one layer read the channels as they were before that layer."""
    x = np.asarray(x, float)
    B, T = x.shape
    ch = {"x": x, "one": np.ones((B, T)), "pos": np.broadcast_to(np.arange(T, dtype=float), (B, T))}
    for l in range(circuit.n_layers):
        if before_layer is not None:
            ch = before_layer(l, dict(ch))
        new = {}
        for s in sorted((s for s in circuit.heads if s.layer == l), key=lambda s: s.head):
            out = head_output(s, ch[s.q], ch[s.k], ch[s.v])
            new[s.name] = out if head_out is None else head_out(s.name, out)
        for h in range(circuit.n_heads):  # heads without a spec write 0 (still replaceable, e.g. by patching)
            name = f"L{l}H{h}"
            if name not in new:
                z = np.zeros((B, T))
                new[name] = z if head_out is None else head_out(name, z)
        ch.update(new)
    if before_layer is not None:
        ch = before_layer(circuit.n_layers, dict(ch))
    return ch


def readout(circuit: Circuit, channels: dict, upto_layer=None) -> np.ndarray:
    """pred [batch, T] = sum_c readout[c] channels[c] + bias, over the channels present before block
    ``upto_layer`` (None: all of them; the prediction lens row ``upto_layer`` reads exactly this)."""
    L = circuit.n_layers if upto_layer is None else upto_layer
    out = circuit.bias
    for c, w in circuit.readout.items():
        if c in BASE_CHANNELS or int(c[1:].split("H")[0]) < L:
            out = out + w * channels[c]
    return np.asarray(out + 0.0 * channels["x"])


# ----------------------------------------------------------------------------- the reference circuit
def reference_circuit(n_ctx=8, ns_beta=-4.0, ns_gamma=-0.5, ns_pos_bias=None) -> Circuit:
    """The circuit the tests use: 3 layers x 3 heads, every kind of head, one two-head composition.

        L0H0 previous-token on x           out = x_{t-1}                     read-out weight 0.5
        L0H1 inert (pattern beta = 2)      out = 0                           1.0 (irrelevant)
        L0H2 positional (uniform pattern)  out = 0.3 t / 2                   1.0
        L1H0 previous-token on L0H0        out = x_{t-2} (x_0 at t <= 1)      0.25   (composition)
        L1H1 copying on x                  out = x_t                         0.5
        L1H2 empty (zero weights)          out = 0                           -
        L2H0 pattern only (beta = 3)       out = 0.2 sum_j softmax_j(3 x_j) j 1.0
        L2H1 similarity(ns_beta, ns_gamma, ns_pos_bias)                      1.0
        L2H2 empty                                                           -
        pred_t = x_t + sum of the weighted outputs (bias 0).
    ``ns_pos_bias`` default: +1 on the current key, -0.5 on the previous one.
    """
    T = n_ctx
    if ns_pos_bias is None:
        ns_pos_bias = np.zeros((T, T))
        ns_pos_bias[np.arange(T), np.arange(T)] = 1.0
        ns_pos_bias[np.arange(1, T), np.arange(T - 1)] = -0.5
    heads = [previous_token(0, 0), inert(0, 1), positional(0, 2, gamma=0.3),
             previous_token(1, 0, source="L0H0"), copying(1, 1),
             pattern_only(2, 0, beta=3.0, gamma=0.2), similarity(2, 1, ns_beta, ns_gamma, ns_pos_bias)]
    readout_w = {"x": 1.0, "L0H0": 0.5, "L0H1": 1.0, "L0H2": 1.0, "L1H0": 0.25, "L1H1": 0.5, "L2H0": 1.0, "L2H1": 1.0}
    return Circuit(heads, n_layers=3, n_heads=3, n_ctx=T, readout=readout_w)


def claim_circuit(copy_at=(0, 1), n_ctx=8, ns_beta=-0.1, ns_gamma=0.001) -> Circuit:
    """A circuit for the claim tests (``minigpt.experiments.analysis.claim_tests``), exact on the a = 1 family
    x_{t+1} = 2 x_t - x_{t-1}:

        copying head at ``copy_at`` (layer 0 or 1)    out = x_t        read-out weight 2
        L2H0 previous-token head, gamma = -1          out = -x_{t-1}   1     (writes minus what it reads)
        L2H1 similarity(ns_beta, ns_gamma)            tiny output      1     (a negative similarity pattern
                                                                              that does not matter)
        the other layer-0 heads: L0H0 inert, and L0H1 positional if the copying head is in layer 1.
        pred_t = 2 x_t - x_{t-1} + ns_gamma sum_j softmax_j(ns_beta x_t x_j) x_j   (no direct x read-out)."""
    l, h = copy_at
    heads = [copying(l, h), inert(0, 0), previous_token(2, 0, gamma=-1.0), similarity(2, 1, ns_beta, ns_gamma)]
    if l != 0:
        heads.append(positional(0, 1, gamma=0.3))
    return Circuit(heads, n_layers=3, n_heads=2, n_ctx=n_ctx, readout={f"L{l}H{h}": 2.0, "L2H0": 1.0, "L2H1": 1.0})


def layer_bias_model(n_ctx, n_layers, d_model, seed=0, dtype="float64"):
    """A LayerNorm model whose residual is known in closed form, for the LayerNorm choices of the lens.

    Every ``ln1.w`` is 0, so each head sees the constant ``ln1.b``, attends uniformly and writes the constant value
    ``v_h = ln1.b W_V[h] + b_V[h]``: ``attn_out_l = sum_h v_h W_O[l, h] + b_O[l] =: c_l`` (a fixed vector).  Hence
        resid_pre l = x W_E + W_pos[t] + sum_{l' < l} c_{l'}
    exactly, and the final LayerNorm (random gain and bias) and read-out act on that.  Every other weight is
    random (seeded), so the read-out and the c_l are generic."""
    cfg = minigpt.ModelConfig(n_layers=n_layers, d_model=d_model, n_heads=2, d_head=d_model // 2, d_mlp=1, n_ctx=n_ctx, attn_only=True,
                              normalization_type="LN", dtype=dtype)
    m = minigpt.Transformer(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    for k, v in m.params.items():
        m.params[k] = rng.normal(size=v.shape).astype(v.dtype)
        if k.endswith("ln1.w"):
            m.params[k] = np.zeros_like(v)
    return m


def layer_bias_resid(model, x, layer) -> np.ndarray:
    """The closed-form ``resid_pre layer`` of ``layer_bias_model`` on x [batch, T]: ``[batch, T, d_model]``."""
    P, T = model.params, np.asarray(x).shape[1]
    r = np.asarray(x, float)[:, :, None] * P["embed.W_E"][0] + P["pos_embed.W_pos"][:T]
    for l in range(layer):
        c = np.einsum("he,hed->d", layer_bias_values(model, l), P[f"blocks.{l}.attn.W_O"]) + P[f"blocks.{l}.attn.b_O"]
        r = r + c
    return r


def head_recurrence(x0, n_terms, beta, gamma, pos_bias=None) -> np.ndarray:
    """Sequences whose next term is a copy plus a similarity head: x_{t+1} = x_t + gamma sum_{j<=t}
    softmax_j(beta x_t x_j + P[t, j]) x_j, generated by running ``head_model("similarity", plus_copy=True)``
    on its own output.  x0 [batch] -> x [batch, n_terms]; ``theory.heads.copy_plus_head_fit(x, beta, P)``
    must return this gamma with r2 = 1 (and copy_weight 1, gamma2 = gamma)."""
    x0 = np.asarray(x0, float)
    m = head_model("similarity", n_terms - 1, beta=beta, gamma=gamma, pos_bias=pos_bias, plus_copy=True)
    x = np.zeros((len(x0), n_terms))
    x[:, 0] = x0
    for t in range(n_terms - 1):
        x[:, t + 1] = np.asarray(m(x[:, : t + 1]))[:, t]
    return x


def layer_bias_values(model, layer) -> np.ndarray:
    """``[n_heads, d_head]``: the constant value v_h = ln1.b W_V[h] + b_V[h] of every head of ``layer_bias_model``."""
    P = model.params
    return np.einsum("d,hde->he", P[f"blocks.{layer}.ln1.b"], P[f"blocks.{layer}.attn.W_V"]) + P[f"blocks.{layer}.attn.b_V"]
