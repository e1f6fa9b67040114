"""Training: the loop with held-out evaluation, checkpoints and exact resume (loop.py), and ``load_run``
(run.py), the one way to load a trained run's model, task and configs.

``from minigpt.training import train`` (the module path of the old ``minigpt/training/loop.py``) keeps working.
"""
from .loop import (  # noqa: F401
    CHECKPOINT,
    CONFIG,
    HINT,
    METRICS,
    RUN_FILES,
    NonFiniteError,
    TrainingError,
    TrainingInterrupted,
    TrainResult,
    data_rngs,
    evaluate,
    first_nonfinite,
    load_run_spec,
    mse_by_position,
    predict,
    prepare_run_dir,
    train,
    write_json,
)
from .run import Run, load_run  # noqa: F401
