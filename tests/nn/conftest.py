"""Fixtures shared by the tests of minigpt.nn."""
from tests.nn.helpers import model  # noqa: F401  (the fixture: three small models with non-trivial parameters)
