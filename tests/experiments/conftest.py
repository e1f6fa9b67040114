"""Fixtures shared by the tests of minigpt.experiments."""
from tests.interp.helpers import checked  # noqa: F401  (the fixture: each figure checked as it is saved)
