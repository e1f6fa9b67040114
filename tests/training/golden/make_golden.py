"""Regenerate ``loss_trajectory.json``: 10 seeded training steps of a tiny float64 model.

    python tests/training/golden/make_golden.py

Only run this when a change to the numbers is intended (a new initialisation, a fixed bug in an op);
the test ``tests/training/test_golden.py`` then pins the new trajectory.  Record why in the commit.
"""
import json
import os

from minigpt.tasks import presets
from minigpt.training.loop import train

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = os.path.join(HERE, "loss_trajectory.json")
SPEC = {
    "model": dict(n_layers=2, d_model=8, n_heads=2, d_mlp=16, n_ctx=8, dtype="float64"),
    "train": dict(steps=10, batch_size=16, lr=3e-3, warmup_steps=3, weight_decay=0.01, grad_clip=1.0,
                  eval_every=1, eval_size=32, checkpoint_every=10, seed=1234),
    "data": dict(a=("uniform", -1.0, 1.0), b=("uniform", -1.0, 1.0), x0=("uniform", -1.0, 1.0), length=8),
}
KEYS = ("train_loss", "lr", "grad_norm", "eval_mse")


def trajectory(spec=SPEC):
    mcfg, tcfg, task = presets.build(spec)
    result = train(mcfg, tcfg, task, progress=False)
    return {k: [rec[k] for rec in result.history] for k in KEYS}


if __name__ == "__main__":
    spec = {s: {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()} for s, d in SPEC.items()}
    with open(PATH, "w") as f:
        json.dump({"spec": spec, "trajectory": trajectory()}, f, indent=1)
        f.write("\n")
    print(f"wrote {PATH}")
