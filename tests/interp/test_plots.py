"""minigpt.interp.plots: every figure renders with labelled axes, a title, colorbars labelled, readable annotations,
and something drawn (pixel variance); the checker itself can fail."""
import numpy as np
import pytest

from minigpt.interp import plots
from tests.interp.helpers import check_figure


def test_report_figures(tmp_path, checked):
    rng = np.random.default_rng(0)
    T = 8
    att = rng.dirichlet(np.ones(T), (3, T)) * np.tril(np.ones((T, T)))
    plots.attention_patterns(att, tmp_path / "att.png", tokens=[f"x{t}" for t in range(T)], head_names=["L0H0", "L0H1", "L1H0"], title="attention")
    sq = {"model": rng.exponential(1e-2, (50, T)), "copy": rng.exponential(1e-1, (50, T))}
    plots.mse_by_position(sq, tmp_path / "mse.png", floor=np.zeros(T))
    plots.mse_by_position(sq, tmp_path / "mse_theory.png", closed={"copy": [0.1] * T}, floor=np.zeros(T))
    plots.lens_by_layer({"recompute": rng.uniform(0.01, 5, (3, T)), "frozen": rng.uniform(0.01, 1, (3, T))}, ["0_pre", "1_pre", "final_post"],
                        tmp_path / "lens.png", reference={"copy baseline": sq["copy"].mean(0)}, notes={"recompute": "a note"})
    plots.heatmap(np.linspace(-1, 2, 12).reshape(3, 4), tmp_path / "hm.png", ["L0", "L1", "L2"], ["H0", "H1", "H2", "H3"], "ablation", "log10 ratio",
                  xlabel="head", ylabel="layer")
    plots.heatmap(np.linspace(-1, 1, 12).reshape(3, 4), tmp_path / "hm_c.png", title="patching", cbar_label="restored", center=0.0,
                  xlabel="position", ylabel="layer")
    plots.logit_vs_similarity([("L2H0", rng.normal(size=100), rng.normal(size=100)), ("L2H1", rng.normal(size=100), rng.normal(size=100))],
                              tmp_path / "lvs.png")
    hist = {f"{st} s{k}": [dict(step=i * 10, eval_mse=1.0 / (i + 1 + k), train_loss=1.2 / (i + 1)) for i in range(5)]
            for st in ("paper", "short") for k in range(5)}
    plots.training_curves(hist, tmp_path / "tc.png")
    assert len(checked) == 8


def test_training_curves_distinguish_runs(tmp_path, monkeypatch):
    """11 runs: no two share colour, line style and marker (the old plot cycled 10 colours)."""
    got = {}
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (got.setdefault("fig", fig), real(fig, path))[1])
    hist = {f"{st} s{k}": [dict(step=1, eval_mse=1.0, train_loss=1.0), dict(step=2, eval_mse=0.5, train_loss=0.5)]
            for st, n in (("paper", 5), ("attn_only", 2), ("a_negative", 2), ("short", 2)) for k in range(n)}
    plots.training_curves(hist, tmp_path / "tc.png")
    lines = got["fig"].axes[0].get_lines()
    keys = {(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in lines}
    assert len(lines) == 11 and len(keys) == 11


def test_check_figure_catches_missing_labels():
    """The checker itself fails on an unlabelled axes and on white text over a pale cell."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    ax.set_title("t")
    with pytest.raises(AssertionError, match="axis label"):
        check_figure(fig)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    check_figure(fig)
    im = ax.imshow(np.array([[0.0, 1.0]]), cmap=plots.SEQ_CMAP)
    ax.text(1, 0, "1", color="white")  # the palest cell
    with pytest.raises(AssertionError):
        check_figure(fig)
    plt.close(fig)
    del im
