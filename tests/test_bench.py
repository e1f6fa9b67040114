"""The benchmark's bookkeeping without torch: the matmul FLOP count of a step and the results table.
(No timings: those live in the benchmark.)  That its PyTorch twin computes minigpt's losses step after
step is checked by ``benchmarks/check_torch_twin.py`` (needs the ``bench`` extra, torch); minigpt's own
numbers are pinned by tests/nn/test_forward_oracle.py, tests/nn/test_model.py and tests/nn/test_optim.py."""
import minigpt
from minigpt import bench


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
