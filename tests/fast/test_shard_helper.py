"""minigpt.fast.shard_helper, the entry point of a helper process (started as ``shardpool.HELPER_CODE``, as the pool
starts it): a helper never prints to the terminal.  A caller that goes away ends it quietly (status 0); a malformed
first message is reported to the caller, not the terminal (status 1).  (The shards it computes: tests/fast/test_sharded.py;
dead helpers and Ctrl-C: tests/fast/test_shardpool.py.)"""
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

from minigpt.fast import shardpool


def start_helper():
    """A helper process and the caller's end of its socket."""
    ours, theirs = socket.socketpair()
    with theirs:
        proc = subprocess.Popen([sys.executable, "-c", shardpool.HELPER_CODE, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, Connection(ours.detach())


def test_a_helper_whose_caller_is_gone_exits_quietly():
    proc, conn = start_helper()
    conn.close()
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (0, b"", b"")


def test_a_malformed_start_is_reported_to_the_caller_not_the_terminal():
    proc, conn = start_helper()
    conn.send("not a (config, size) pair")
    assert conn.poll(60), "no answer from the helper"
    status, error = conn.recv()
    out, err = proc.communicate(timeout=60)
    assert status == "error" and "shard helper failed: ValueError" in str(error)
    assert (proc.returncode, out, err) == (1, b"", b"")
    conn.close()
