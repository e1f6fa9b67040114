"""``python -m minigpt ...``: the same command line as the ``minigpt`` console script."""
from .cli import entry_point

if __name__ == "__main__":
    entry_point()
