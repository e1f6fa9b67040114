"""Entry point of a shard helper process: ``python -m minigpt._shard_helper FD`` (see ``minigpt.shardpool``)."""
import sys

from minigpt.shardpool import helper_main

if __name__ == "__main__":
    helper_main(int(sys.argv[1]))
