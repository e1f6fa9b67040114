"""minigpt's tests, one folder per package (tests/nn/ tests minigpt/nn/, ...). A package, so that files in two
folders may share a name (tests/nn/test_model.py, tests/fast/test_model.py) and import each other as ``tests.<folder>.<file>``."""
