"""pytest plugin loaded into every run of ``run.py`` (``-p mutation_plugin``): the hypothesis profile
``mutation``: the same examples for the baseline and every mutant (derandomize, so a verdict does not
depend on the luck of the draw) and no shrinking (a mutant only has to fail, not to fail minimally;
shrinking a failing numeric test can take minutes)."""
from hypothesis import HealthCheck, Phase, settings

settings.register_profile("mutation", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow],
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile("mutation")
