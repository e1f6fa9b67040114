"""minigpt.emergence: the probe callback, onsets and jumps on made-up records, plots."""
import os

import numpy as np
import pytest

from minigpt.experiments import emergence
from minigpt.tasks import presets
from minigpt.fast.model import Transformer


@pytest.fixture(scope="module")
def tiny():
    spec = presets.apply_overrides(presets.get_preset("tiny"), ["data.length=8", "model.n_ctx=8"])
    mcfg, tcfg, task = presets.build(spec)
    return Transformer(mcfg, seed=3), task


def test_probe_record(tiny):
    model, task = tiny
    x, y = emergence.probe_batch(task, 32, seed=0)
    rec = emergence.probe(model, x, y, step=7)
    L, H, T = model.cfg.n_layers, model.cfg.n_heads, x.shape[1]
    assert rec["step"] == 7 and len(rec["mse_by_pos"]) == T
    assert set(rec["flags"]) == set(emergence.MECHANISMS) and set(rec["strength"]) == set(emergence.STRENGTH)
    assert np.array(rec["scores"]["copy"]).shape == (L, H)
    # the last lens row is the model's output, under both LayerNorm choices
    for ln in ("recompute", "frozen"):
        assert len(rec["lens_t2"][ln]) == L + 1
        assert rec["lens_t2"][ln][-1] == pytest.approx(rec["mse_t2"], rel=1e-9)
    assert rec["strength"]["copy_l0"] == max(rec["scores"]["copy"][0])
    assert rec["strength"]["ns_ov_last"] == min(rec["scores"]["ov_gain"][L - 1])
    # the probe batch is fixed per seed and differs between seeds
    assert np.array_equal(emergence.probe_batch(task, 32, 0)[0], x) and not np.array_equal(emergence.probe_batch(task, 32, 1)[0], x)


def test_callback_every_k_and_resume(tmp_path, tiny):
    model, task = tiny
    path = str(tmp_path / "e.json")
    p = emergence.EmergenceProbe(task, seed=0, every=4, final_step=10, n=16, path=path)
    for step in range(1, 11):
        p(step, model, {})
    assert [r["step"] for r in p.records] == [4, 8, 10]
    assert [r["step"] for r in emergence.load(path)] == [4, 8, 10]
    # a resumed run keeps the records up to its checkpoint and re-measures the rest
    q = emergence.EmergenceProbe(task, seed=0, every=4, final_step=10, n=16, path=path, keep_until=4)
    assert [r["step"] for r in q.records] == [4]
    q(8, model, {})
    assert [r["step"] for r in q.records] == [4, 8] and q.has(8) and not q.has(10)
    with pytest.raises(ValueError):
        emergence.EmergenceProbe(task, seed=0, every=0)


def _recs(flags, strength):
    return [{"step": 10 * i, "flags": {m: f for m in emergence.MECHANISMS}, "strength": {m: s for m in emergence.STRENGTH}}
            for i, (f, s) in enumerate(zip(flags, strength))]


def test_onset_and_jump():
    recs = _recs([False, True, False, True, True], [0.0, 0.1, 0.2, 0.9, 1.0])
    assert emergence.onset(recs, "copy_l0") == 30  # on from step 30 to the end (the blip at 10 does not count)
    assert emergence.largest_jump(recs, "copy_l0") == pytest.approx(0.7)  # phase-change-like
    gradual = _recs([False] * 5 + [True] * 6, np.linspace(0, 1, 11))
    assert emergence.largest_jump(gradual, "copy_l0") == pytest.approx(0.1)
    assert emergence.onset(_recs([True, False], [0, 1]), "copy_l0") is None
    assert emergence.largest_jump(_recs([True] * 3, [1, 1, 1]), "copy_l0") is None  # flat
    # a negative-similarity strength falls as the mechanism forms: a drop is a jump too
    falling = _recs([False, False, True, True], [0.0, -0.1, -0.9, -1.0])
    assert emergence.largest_jump(falling, "ns_ov_last") == pytest.approx(0.8)
    s = emergence.summary(recs)
    assert s["copy_l0"] == {"final": True, "onset": 30, "jump": pytest.approx(0.7)} and s["ns_any_last"]["jump"] is None


def test_plots_write_png(tmp_path, tiny):
    model, task = tiny
    p = emergence.EmergenceProbe(task, seed=0, every=1, n=16)
    for step in (0, 1, 2):
        p.measure(step, model)
    a = emergence.plot_run(p.records, str(tmp_path / "run.png"), title="t")
    b = emergence.plot_setting([p.records, p.records], str(tmp_path / "sub" / "setting.png"), title="t")
    for f in (a, b):
        assert os.path.getsize(f) > 1000 and open(f, "rb").read(4) == b"\x89PNG"
