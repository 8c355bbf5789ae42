"""Property test (hypothesis) of the node's parameters (issue 17): outside data too.

Every parameter of :data:`dense_ood_ros.ros.node.PARAMETERS` gets, at random, its default,
another value of its type or any value a ROS parameter can hold (not set, bool, int64,
double with NaN and infinities, string with any characters, byte, bool, integer, double and
string arrays, as rclpy hands them over: lists), and ``model_path`` also a file, a folder, a
missing path, an empty or NUL-containing string. The property of
:func:`validate_parameters`: it returns the settings, or raises NodeConfigError naming one of
the parameters that were changed from their defaults; nothing else. The strategy follows
``PARAMETERS``, so a parameter added to the node is fuzzed without changing this file.

Profiles: ``test/fuzz_profiles.py`` (``DENSE_OOD_FUZZ_PROFILE=long``: ``scripts/fuzz.sh``).
"""

import pytest
from fuzz_profiles import fuzz_settings, outcome_counter
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("rclpy", reason="the ROS 2 Python client library (rclpy) is not installed")

from dense_ood_ros.ros.node import PARAMETERS, NodeConfigError, validate_parameters  # noqa: E402

#: The longest file name component most file systems take (NAME_MAX); see the test below.
NAME_MAX = 255
INT64 = st.integers(-2**63, 2**63 - 1)
DOUBLES = st.floats(allow_nan=True, allow_infinity=True)
STRINGS = st.text(max_size=40)
#: Any value of a ROS 2 parameter, as rclpy returns it (None: PARAMETER_NOT_SET).
ROS_VALUES = st.one_of(
    st.none(), st.booleans(), INT64, DOUBLES, STRINGS,
    st.lists(st.binary(min_size=1, max_size=1), max_size=4), st.lists(st.booleans(), max_size=4),
    st.lists(st.one_of(st.integers(-2, 4096), INT64), max_size=4),
    st.lists(DOUBLES, max_size=4), st.lists(STRINGS, max_size=4))
outcomes, print_outcomes = outcome_counter("node parameters")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """Return an existing file for ``model_path`` (validate_parameters checks only that)."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    path.write_bytes(b"checkpoint")
    return path


def _same_type(default):
    """Other values of the default's own type (bool before int: bool is an int)."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.one_of(st.integers(-2, 64), INT64)
    if isinstance(default, float):
        return DOUBLES
    if isinstance(default, str):
        return st.one_of(STRINGS, st.sampled_from(["off", "auto", "torch", "jsd", "camera", ""]))
    if isinstance(default, list):
        return st.lists(st.one_of(st.integers(-2, 600), INT64, st.booleans()), max_size=3)
    return ROS_VALUES


def _model_paths(model_file):
    return st.one_of(st.just(str(model_file)), st.just(str(model_file.parent)),
                     st.just(str(model_file) + ".missing"),
                     st.sampled_from(["", "~", ".", "/", "\x00", f"{model_file}\x00"]),
                     # at most 60 characters of up to 4 bytes: within NAME_MAX bytes
                     st.text(max_size=60).map(lambda name: name.replace("/", "")),
                     st.text(alphabet="ab/", max_size=80))


@st.composite
def parameter_sets(draw, model_file):
    """Return (parameter values, the names changed from the defaults)."""
    values = {name: default for name, (default, _) in PARAMETERS.items()}
    values["model_path"] = str(model_file)
    changed = draw(st.lists(st.sampled_from(sorted(PARAMETERS)), max_size=3, unique=True))
    for name in changed:
        if name == "model_path":
            strategy = st.one_of(_model_paths(model_file), ROS_VALUES)
        else:
            strategy = st.one_of(_same_type(PARAMETERS[name][0]), ROS_VALUES)
        values[name] = draw(strategy)
    return values, changed


def test_the_defaults_are_valid(model_file):
    values = {name: default for name, (default, _) in PARAMETERS.items()}
    validate_parameters({**values, "model_path": str(model_file)})


@given(data=st.data())
@fuzz_settings(ci_examples=200, long_examples=3000)
def test_parameters_give_settings_or_an_error_naming_a_changed_parameter(model_file, data):
    values, changed = data.draw(parameter_sets(model_file), label="parameters")
    try:
        validate_parameters(values)
    except NodeConfigError as exc:
        message = str(exc)
        assert any(f"'{name}'" in message for name in changed), (message, changed)
        outcomes["rejected"] += 1
        return
    outcomes["accepted"] += 1


def test_a_model_path_too_long_for_the_file_system_is_named(model_file):
    values = {name: default for name, (default, _) in PARAMETERS.items()}
    with pytest.raises(NodeConfigError, match="parameter 'model_path'"):
        validate_parameters({**values, "model_path": "m" * (NAME_MAX + 1)})
