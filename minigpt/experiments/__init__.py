"""The studies built on the toolkit: the claims analysis (analysis.py, claims.py), its reports (report.py,
story.py, refinement.py), the paper reproduction (reproduce.py), seed sweeps (sweep.py), emergence during
training (emergence.py), the vector/polynomial extensions (extensions.py), and the worker pool (pool.py)."""
