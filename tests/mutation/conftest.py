"""tests/mutation holds the mutation runner and its bug lists, not tests: pytest never collects them
(they take minutes and run the other tests themselves; see README.md)."""
collect_ignore_glob = ["*.py"]
