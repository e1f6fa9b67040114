"""minigpt.tasks.presets: presets are copies and build a model that fits their task; ``--set`` values are parsed,
applied and checked; a task must fit the model's context; data records read back from JSON give the same task
(overflowing priors: tests/training/test_reliability_numerics.py)."""
import json

import pytest

from minigpt.tasks import presets
from minigpt.tasks.data import AffineRecurrence, task_d_in


def test_get_preset_hands_out_a_copy():
    spec = presets.get_preset("tiny")
    spec["model"]["d_model"] = 999
    spec["data"]["a"] = ("uniform", 0.0, 0.5)
    assert presets.get_preset("tiny") == presets.PRESETS["tiny"] and presets.PRESETS["tiny"]["model"]["d_model"] == 16
    with pytest.raises(ValueError, match="unknown preset 'tinny'; known presets: paper, first, tiny"):
        presets.get_preset("tinny")


@pytest.mark.parametrize("text, value", [("32", 32), ("1e-3", 1e-3), ("true", True), ("null", None), ("None", None),
                                         ('["uniform", -1, 1]', ["uniform", -1, 1]), ("gelu", "gelu"), ("", "")])
def test_parse_value_reads_json_else_a_string(text, value):
    assert presets.parse_value(text) == value and type(presets.parse_value(text)) is type(value)


def test_apply_overrides_sets_fields_and_leaves_the_spec_alone():
    base = presets.get_preset("tiny")
    spec = presets.apply_overrides(base, ["model.d_model=32", 'data.a=["uniform", 0, 0.5]', "train.lr=1e-2", "model.normalization_type=null"])
    assert spec["model"]["d_model"] == 32 and spec["train"]["lr"] == 0.01 and spec["model"]["normalization_type"] is None
    assert spec["data"]["a"] == ("uniform", 0, 0.5)  # a list becomes a prior tuple
    assert base == presets.PRESETS["tiny"]  # the input spec is not modified
    for bad, msg in [("model.d_mdoel=3", r"unknown field 'model.d_mdoel'; did you mean model.d_model\?"),
                     ("optim.lr=1", "unknown override section 'optim'"), ("d_model=3", "must be section.field"),
                     ("model.d_model", "must look like section.field=value")]:
        with pytest.raises(ValueError, match=msg):
            presets.apply_overrides(base, [bad])
    with pytest.raises(ValueError, match="a list of section.field=value strings"):
        presets.apply_overrides(base, "model.d_model=32")


def test_a_task_must_fit_the_models_context():
    spec = presets.apply_overrides(presets.get_preset("tiny"), ["data.length=17"])  # 16 positions: n_ctx = 16
    assert presets.build(spec)[2].length == 17
    with pytest.raises(ValueError, match="data.length - 1 = 17 positions exceed model.n_ctx = 16"):
        presets.build(presets.apply_overrides(spec, ["data.length=18"]))
    with pytest.raises(ValueError, match="unknown field data.lenght; did you mean data.length"):
        presets.build_task({"lenght": 5})


def test_a_data_record_read_back_from_json_builds_the_same_task():
    task = AffineRecurrence(a=("normal", 0.5, 0.1), x0=("uniform", 2, 3), length=7, noise=0.01)
    record = json.loads(json.dumps(task.spec()))  # as a checkpoint stores it: tuples become lists
    back = presets.data_from_record(record)
    assert back["a"] == ("normal", 0.5, 0.1) and back["x0"] == ("uniform", 2.0, 3.0) and back["length"] == 7
    assert presets.build_task(presets.data_from_record(record)) == task


@pytest.mark.parametrize("name", ["linear2", "poly2"])
def test_presets_build_and_fit_the_model(name):
    mcfg, _, task = presets.build(presets.get_preset(name))
    assert mcfg.d_in == mcfg.d_out == task_d_in(task)
    bad = presets.apply_overrides(presets.get_preset(name), [f"model.d_in={task_d_in(task) + 1}"])
    with pytest.raises(ValueError, match="d_in"):
        presets.build(bad)
