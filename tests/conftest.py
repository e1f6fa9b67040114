"""Hypothesis profiles: ``dev`` (local default, no deadline: numeric tests must not flake on timing);
``ci`` is loaded by hypothesis itself when CI=true (derandomized)."""
import os

import matplotlib

matplotlib.use("Agg")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
if os.environ.get("CI", "").lower() != "true":
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
