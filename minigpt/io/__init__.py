"""Files: the checkpoint format (bounded, verified loading; atomic writes; one writer per run folder)."""
