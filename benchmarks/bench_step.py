"""One minigpt training step against the same model in PyTorch (needs the ``bench`` extra:
``pip install -e ".[bench]"``, i.e. torch==2.13.0).

    python benchmarks/bench_step.py                      # paper, attn, wide; 1 and 2 threads
    python benchmarks/bench_step.py --config paper --threads 2 --steps 30 --json bench.json

The same as ``minigpt bench``; see ``minigpt/bench.py`` for what is measured and how.
"""
import argparse
import sys

from minigpt.bench import CONFIGS, main

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="all", choices=[*CONFIGS, "all"])
    p.add_argument("--steps", type=int, default=20, help="rounds per configuration (after 3 warm-up rounds), each 3 steps per framework of which 2 are timed")
    p.add_argument("--threads", type=int, default=None, help="BLAS/torch threads (default: 1 and 2)")
    p.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    sys.exit(main(p.parse_args()))
