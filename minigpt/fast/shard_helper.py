"""Entry point of a shard helper process (see ``minigpt.fast.shardpool``): started as ``python -c
shardpool.HELPER_CODE FD``, which ignores Ctrl-C/SIGTERM before importing anything (the caller handles
them) and calls ``main()``.  A helper never prints a traceback."""
import sys

from .shardpool import (
    helper_main,  # imported inside HELPER_CODE's try: a helper interrupted while importing exits quietly
)


def main():  # pragma: no cover - runs in the helper process
    helper_main(int(sys.argv[1]))
