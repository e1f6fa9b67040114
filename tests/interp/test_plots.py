"""Every figure renders on a tiny model with labelled axes, a title, colorbars labelled, readable annotations, and
something drawn (pixel variance)."""
import matplotlib.image as mpimg
import numpy as np
import pytest

from minigpt.tasks import presets
from minigpt.interp import plots
from minigpt.experiments import story
from minigpt.fast.model import Transformer


def _is_twin(ax, fig):
    return any(o is not ax and (ax.get_shared_x_axes().joined(ax, o) or ax.get_shared_y_axes().joined(ax, o))
               and ax.get_position().bounds == o.get_position().bounds for o in fig.axes)


def check_figure(fig):
    """Every visible axes has x and y labels (a twin: its own y label; a colorbar: its label); the figure has a title."""
    titles = [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]
    assert any(t.strip() for t in titles), "no title"
    for ax in fig.axes:
        if not ax.axison:
            continue
        if ax.get_label() == "<colorbar>":
            assert (ax.get_ylabel() or ax.get_xlabel()).strip(), "colorbar without a label"
        elif _is_twin(ax, fig):
            assert ax.get_ylabel().strip() or ax.get_xlabel().strip(), "twin axes without a label"
        else:
            assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), f"axes {ax.get_title()!r} lacks an axis label"
    for ax in fig.axes:  # annotations on images: dark on pale cells, white on dark ones
        for im in ax.get_images():
            for t in ax.texts:
                x, y = t.get_position()
                r, g, b, _ = im.cmap(im.norm(im.get_array()[int(round(y)), int(round(x))]))
                lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
                assert (t.get_color() == "black") == (lum > 0.5), (t.get_text(), t.get_color(), lum)


@pytest.fixture
def checked(monkeypatch):
    """Wrap plots._save: check each figure before saving it; after saving, check the PNG is not blank."""
    seen = []
    real = plots._save

    def save(fig, path):
        check_figure(fig)
        out = real(fig, path)
        img = mpimg.imread(out)[..., :3]
        assert img.std() > 0.05, f"{path} looks blank (pixel sd {img.std():.3f})"
        seen.append(out)
        return out

    monkeypatch.setattr(plots, "_save", save)
    return seen


@pytest.fixture(scope="module")
def tiny():
    spec = presets.apply_overrides(presets.get_preset("tiny"), ["data.length=12"])
    mcfg, _, task = presets.build(spec)
    return Transformer(mcfg, seed=1), task


def test_story_figures(tmp_path, tiny, checked):
    model, task = tiny
    phases = []
    s = story.measure(model, task, n=64, n_scores=32, n_abl=32, n_patch=16, progress=phases.append)
    assert phases == list(story.PHASES)
    figs = story.render(s, str(tmp_path), progress=phases.append)
    assert len(checked) == story.N_FIGURES == len(phases) - len(story.PHASES)
    md = open(figs["markdown"]).read()
    for k in ("copy_head", "refine_head", "lens", "circuit", "late_positions"):
        assert f"(figures/{k}.png)" in md
    assert "The MSE at late positions" in md and ("Where the diagonal breaks" in md or "diagonal does not break" in md)
    assert len(story.story_lines(s)) >= 3


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
