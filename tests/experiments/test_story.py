"""minigpt.experiments.story: the story's measurements, lines and figures on a tiny model."""
import pytest

from minigpt.experiments import story
from minigpt.fast.model import Transformer
from minigpt.tasks import presets


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
