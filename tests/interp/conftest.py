"""Fixtures shared by the tests of minigpt.interp."""
from tests.interp.helpers import checked  # noqa: F401  (the fixture: each figure checked as it is saved)
from tests.nn.helpers import model  # noqa: F401  (the fixture: three small models with non-trivial parameters)
