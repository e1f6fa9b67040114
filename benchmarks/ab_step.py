"""A/B timing of minigpt's training step between two checkouts (e.g. before and after a refactor).

    python benchmarks/ab_step.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 4] [--configs paper attn wide] [--threads 1 2]

Each measurement is a fresh interpreter with that checkout first on PYTHONPATH and OPENBLAS_NUM_THREADS set: 25
steps of ``loss_and_grad`` + gradient clipping + AdamW on one batch of 256 ``paper`` sequences (float32), the
median of the last 20 in milliseconds.  Old and new alternate, ``--rounds`` times each, so drift in the machine's
speed hits both; the table gives every round and the medians.  Needs no torch (``bench_step.py`` compares with it).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, sys, time
import numpy as np
import minigpt
from minigpt import presets
from minigpt.optim import AdamW, clip_grad_norm
threads, name = int(sys.argv[1]), sys.argv[2]
over = {"paper": [], "attn": ["model.attn_only=true"], "wide": ["model.d_model=256", "model.n_heads=8", "model.d_mlp=1024"]}[name]
mcfg, tcfg, task = presets.build(presets.apply_overrides(presets.get_preset("paper"), over))
model = minigpt.Transformer(mcfg, seed=0)
opt = AdamW(model.params, lr=1e-3)
b = task.sample(256, np.random.default_rng(0))
x, y = b.inputs.astype("float32"), b.targets.astype("float32")
ts = []
for _ in range(25):
    t0 = time.perf_counter()
    loss, g = model.loss_and_grad(x, y, threads=threads)
    clip_grad_norm(g, 1.0)
    opt.step(g)
    ts.append(time.perf_counter() - t0)
print(json.dumps(float(np.median(ts[5:]) * 1000)))
"""


def one(checkout: str, threads: int, config: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout), "OPENBLAS_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), config], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--configs", nargs="+", default=["paper", "attn", "wide"], choices=["paper", "attn", "wide"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    args = ap.parse_args(argv)
    print("| config | threads | old ms (rounds) | new ms (rounds) | old median | new median | new / old |")
    print("|---|---|---|---|---|---|---|")
    for config in args.configs:
        for threads in args.threads:
            old, new = [], []
            for _ in range(args.rounds):
                old.append(one(args.old, threads, config))
                new.append(one(args.new, threads, config))
            mo, mn = float(np.median(old)), float(np.median(new))
            fmt = lambda v: " ".join(f"{t:.1f}" for t in v)  # noqa: E731
            print(f"| {config} | {threads} | {fmt(old)} | {fmt(new)} | {mo:.1f} | {mn:.1f} | {mn / mo:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
