"""The benchmark compares like with like: the PyTorch model that ``minigpt bench`` builds
(``minigpt.bench.build_torch``) computes the same losses as minigpt from the same weights, training step
after training step (forward, backward, gradient clipping, AdamW).  Needs the ``bench`` extra (torch):

    pip install -e ".[bench]"
    python benchmarks/check_torch_twin.py      # exit 0: every loss agrees within 1e-4 relative; 1: one does not

Run it after changing ``minigpt/bench.py``.  It is not a test: torch is in no extra that the README's test
command installs.  minigpt's own numbers are pinned without torch by the tests: the forward pass and every
activation by tests/nn/test_forward_oracle.py (float64, 1e-9), gradients by tests/nn/test_model.py (finite
differences) and the oracle's directional derivatives, AdamW and clipping by tests/nn/test_optim.py.
"""
import itertools
import sys

import numpy as np

import minigpt
from minigpt import bench
from minigpt.nn.optim import AdamW

CONFIGS = [
    dict(attn_only=a, normalization_type=n, act_fn=f)
    for a, n, f in itertools.product((False, True), ("LN", None), ("gelu_new", "gelu", "relu"))
    if not (a and f != "gelu_new")
]
STEPS = 4
RTOL = 1e-4  # float32 in both frameworks, summed in different orders


def compare(kw, seed=0) -> float:
    """Largest relative difference between minigpt's and the PyTorch twin's losses over STEPS steps."""
    import torch

    cfg = minigpt.ModelConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, **kw)
    model = minigpt.Transformer(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    for p in model.params.values():  # non-trivial biases and gains, so a mis-copied one shows
        p += 0.05 * rng.standard_normal(p.shape).astype(p.dtype)
    opt = AdamW(model.params, lr=1e-3, weight_decay=0.01)
    net, topt = bench.build_torch(model, opt)
    x = rng.uniform(-1, 1, (8, 7)).astype(np.float32)
    y = rng.uniform(-1, 1, (8, 7)).astype(np.float32)
    xt, yt = torch.from_numpy(x[..., None]), torch.from_numpy(y[..., None])
    worst = 0.0
    for _ in range(STEPS):
        a = bench.minigpt_step(model, opt, x, y)
        b = bench.torch_step(net, topt, xt, yt)
        worst = max(worst, abs(a - b) / abs(b))
    return worst


def main() -> int:
    try:
        import torch
    except ImportError:
        print('check_torch_twin: torch is not installed; pip install -e ".[bench]"', file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    bad = 0
    for kw in CONFIGS:
        worst = compare(kw)
        ok = worst <= RTOL
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {kw}: largest relative loss difference over {STEPS} steps {worst:.1e}")
    print(f"{len(CONFIGS) - bad}/{len(CONFIGS)} configurations agree within {RTOL:g}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
