"""minigpt.tasks.presets: presets build a model that fits their task; overrides are parsed, applied and checked."""
import pytest

from minigpt.tasks import presets
from minigpt.tasks.data import task_d_in


@pytest.mark.parametrize("name", ["linear2", "poly2"])
def test_presets_build_and_fit_the_model(name):
    mcfg, _, task = presets.build(presets.get_preset(name))
    assert mcfg.d_in == mcfg.d_out == task_d_in(task)
    bad = presets.apply_overrides(presets.get_preset(name), [f"model.d_in={task_d_in(task) + 1}"])
    with pytest.raises(ValueError, match="d_in"):
        presets.build(bad)
