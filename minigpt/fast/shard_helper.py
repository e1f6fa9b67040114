"""Entry point of a shard helper process (see ``minigpt.shardpool``): started as ``python -c
shardpool.HELPER_CODE FD``, which ignores Ctrl-C/SIGTERM before importing anything (the caller handles
them) and calls ``main()``.  A helper never prints a traceback."""
import os
import sys


def main():  # pragma: no cover - runs in the helper process
    try:
        from .shardpool import helper_main
    except BaseException:  # interrupted or broken while importing: nobody is waiting for a traceback
        os._exit(1)
    helper_main(int(sys.argv[1]))
