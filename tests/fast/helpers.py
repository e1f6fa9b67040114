"""The model the tests of minigpt.fast's sharded steps share."""
import numpy as np

from minigpt import ModelConfig, Transformer


def shard_model(**kw):
    """A float64 model with non-trivial parameters; the same few configurations throughout, so the helper
    processes started for one test are reused by the next (``shardpool.get_pool``)."""
    cfg = dict(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, dtype="float64")
    cfg.update(kw)
    model = Transformer(ModelConfig(**cfg), seed=3)
    rng = np.random.default_rng(7)
    for v in model.params.values():  # non-trivial parameters: biases != 0, LayerNorm gains != 1
        v += 0.1 * rng.standard_normal(v.shape)
    return model
