"""The benchmark compares like with like: the PyTorch model built by ``minigpt.bench`` computes the same
losses as minigpt from the same weights, step after step.  (No timings: those live in the benchmark.)"""
import numpy as np
import pytest

import minigpt
from minigpt import bench
from minigpt.optim import AdamW


@pytest.mark.parametrize("kw", [{}, {"attn_only": True}, {"normalization_type": None}])
def test_torch_twin_matches_minigpt_step_by_step(kw):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cfg = minigpt.ModelConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, **kw)
    model = minigpt.Transformer(cfg, seed=0)
    rng = np.random.default_rng(0)
    for p in model.params.values():  # non-trivial biases and gains, so a mis-copied one shows
        p += 0.05 * rng.standard_normal(p.shape).astype(p.dtype)
    opt = AdamW(model.params, lr=1e-3, weight_decay=0.01)
    net, topt = bench.build_torch(model, opt)
    x = rng.uniform(-1, 1, (8, 7)).astype(np.float32)
    y = rng.uniform(-1, 1, (8, 7)).astype(np.float32)
    xt, yt = torch.from_numpy(x[..., None]), torch.from_numpy(y[..., None])
    for _ in range(4):
        a = bench.minigpt_step(model, opt, x, y)
        b = bench.torch_step(net, topt, xt, yt)
        assert a == pytest.approx(b, rel=1e-4)


def test_flop_count_of_the_paper_step():
    cfg = minigpt.ModelConfig()  # the paper shapes
    per_layer = 2 * 64 * 192 + 4 * 19 * 64 + 2 * 64 * 64 + 4 * 64 * 256
    expected = 3 * 256 * 19 * (2 * 64 + 2 * 64 + 3 * per_layer)
    assert bench.step_matmul_flops(cfg, 256, 19) == expected


def test_table_formats_a_result_without_torch():
    r = {"config": "paper", "threads": 1, "minigpt": {"tokens_per_s": 1000.0, "wall_ms": 5.0, "cpu_ms": 5.0, "gflops": 1.0},
         "matmul_peak_gflops": 50.0, "load_before": 0.1, "load_after": 0.2, "mem_minigpt_mb": 10.0}
    table = bench.format_table([r])
    assert "paper" in table and "1,000" in table
