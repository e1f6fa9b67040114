"""Golden loss trajectory: 10 seeded training steps of a tiny float64 model must reproduce the stored
numbers (``tests/training/golden/loss_trajectory.json``, written by ``tests/training/golden/make_golden.py``) to 1e-9.
A failure means the numbers of the model, the optimizer, the schedule, the clipping or the data
stream changed; regenerate only if that was intended."""
import json

import numpy as np

from tests.training.golden import make_golden


def test_golden_loss_trajectory():
    with open(make_golden.PATH) as f:
        golden = json.load(f)
    assert golden["spec"] == json.loads(json.dumps(make_golden.SPEC))  # the script and the file agree
    got = make_golden.trajectory()
    for key in make_golden.KEYS:
        assert len(got[key]) == 10
        np.testing.assert_allclose(got[key], golden["trajectory"][key], rtol=1e-9, atol=0, err_msg=key)


def test_golden_trajectory_is_seeded():
    """Same seed: identical; another seed: different (the test above is not vacuous)."""
    a, b = make_golden.trajectory(), make_golden.trajectory()
    assert a == b
    spec = json.loads(json.dumps(make_golden.SPEC))
    spec["train"]["seed"] = 4321
    for k in ("a", "b", "x0"):
        spec["data"][k] = tuple(spec["data"][k])
    assert make_golden.trajectory(spec)["train_loss"] != a["train_loss"]
