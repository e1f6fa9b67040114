"""Speed, checked against the textbook core (``minigpt.nn``).

    ops.py          the ops of minigpt.nn.ops rewritten for speed: 2-D matmuls, gemv row sums, blocked GELU,
                    fused QKV, result arrays reused from step to step (Workspace)
    step.py         one step's loss and gradients on the fast ops, in the model's workspace
    threads.py      BLAS thread limits, how many cores a step may use
    shardpool.py    helper processes and the shared memory they compute shards in
    sharded.py      ShardedStep(model, threads): a step cut into shards computed side by side
    model.py        Transformer: minigpt.nn's model on the fast ops, with save/load (= minigpt.Transformer)
"""
from .model import Transformer  # noqa: F401
from .sharded import ShardedStep  # noqa: F401
