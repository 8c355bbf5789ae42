"""Hypothesis settings shared by the fuzz tests of files and parameters (issue 17).

``ci`` (the default): a fixed, small number of examples per property, derandomised, so
every run tries the same cases and the whole set costs seconds. ``long``
(``DENSE_OOD_FUZZ_PROFILE=long``, as ``scripts/fuzz.sh`` sets it): thousands of examples per
property, a new random seed each run. Each module counts its outcomes and prints them at
its end, so a run states how many cases were tried and how they ended.
"""

import os
from collections import Counter

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("DENSE_OOD_FUZZ_PROFILE", "ci")
LONG = PROFILE == "long"


def fuzz_settings(ci_examples: int, long_examples: int) -> settings:
    """Return the settings of one property: ``ci_examples`` or ``long_examples`` examples."""
    return settings(max_examples=long_examples if LONG else ci_examples, derandomize=not LONG,
                    deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def report(title: str, outcomes: Counter) -> str:
    """One line: the profile, the number of cases and their outcomes."""
    summary = ", ".join(f"{key}: {count}" for key, count in sorted(outcomes.items()))
    return f"fuzz profile {PROFILE}, {title}: {sum(outcomes.values())} cases ({summary})"
