"""The tasks: affine, vector and polynomial recurrences with their priors (data.py), the baselines that
solve them without a transformer (baselines.py, baselines_ext.py), and the named settings (presets.py)."""
