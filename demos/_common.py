"""Shared bits of the demos: where figures go, and a small trained model to look at."""
import glob
import os
import sys

import matplotlib

matplotlib.use("Agg")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
OUT = os.environ.get("DEMO_OUT", os.path.join(HERE, "figures"))


def out(name):
    os.makedirs(OUT, exist_ok=True)
    return os.path.join(OUT, name)


def load_model():
    """(model, task): the first checkpoint shipped in report/checkpoints, or a tiny model trained now (seconds)."""
    from minigpt.checkpoint import load_checkpoint
    from minigpt.data import AffineRecurrence
    from minigpt.model import Transformer

    ckpts = sorted(glob.glob(os.path.join(ROOT, "report", "checkpoints", "*.npz")))
    if ckpts:
        _, meta = load_checkpoint(ckpts[-1])
        task = AffineRecurrence(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["data"].items() if k in ("a", "b", "x0", "length", "noise")})
        print(f"using {os.path.relpath(ckpts[-1], ROOT)}")
        return Transformer.load(ckpts[-1]), task
    from minigpt import presets
    from minigpt.training import train

    spec = presets.apply_overrides(presets.get_preset("tiny"), ["train.steps=300"])
    mcfg, tcfg, task = presets.build(spec)
    print("no shipped checkpoint: training the tiny preset for 300 steps")
    return train(mcfg, tcfg, task, progress=False).model, task
