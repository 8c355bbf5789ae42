"""Hypothesis settings shared by the fuzz tests of files and parameters (issue 17).

``ci`` (the default): a fixed, small number of examples per property, derandomised, so
every run tries the same cases and the whole set costs seconds. ``long``
(``DENSE_OOD_FUZZ_PROFILE=long``, as ``scripts/fuzz.sh`` sets it): thousands of examples per
property, a new random seed each run. Each module counts its outcomes and prints them at
its end, so a run states how many cases were tried and how they ended.
"""

import os
from collections import Counter
from typing import Sequence, Tuple

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

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


def outcome_counter(title: str):
    """Return a module's outcome Counter and an autouse fixture that prints it at the end.

    Use as ``outcomes, print_outcomes = outcome_counter("...")`` at module level.
    """
    outcomes: Counter = Counter()

    @pytest.fixture(scope="module", autouse=True)
    def print_outcomes():
        yield
        print("\n" + report(title, outcomes))

    return outcomes, print_outcomes


def yaml_strategies(words: Sequence[str], max_int: int, max_text: int,
                    key_ints: Tuple[int, int], max_list: int, max_leaves: int):
    """Return (scalars, keys, values) strategies for what a YAML document may hold.

    Scalars: None, booleans, small integers up to ``max_int``, huge integers, any float, text
    and the module's own ``words``; values nest them in lists and mappings.
    """
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-3, max_int), st.integers(-2**70, 2**70),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=max_text),
        st.sampled_from(list(words)))
    keys = st.one_of(st.text(max_size=8), st.integers(*key_ints), st.none(), st.booleans())
    values = st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=max_list),
                                   st.dictionaries(keys, children, max_size=3)),
        max_leaves=max_leaves)
    return scalars, keys, values
