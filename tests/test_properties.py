"""Property-based bad input (hypothesis) over every discovered lab's knobs, the link parser and
the CLI's value parser: any value is either accepted within the declared bounds or refused with
a StudyInputError that leaves the Study unchanged; nothing else escapes and nothing hangs."""

from __future__ import annotations

import math

import param
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.labs import registry
from workbench.study import StudyInputError

LABS = sorted(registry())
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

wild_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.text(max_size=300),
    st.just("<script>alert(1)</script>"),
    st.none(),
    st.lists(st.floats(), max_size=4),
)


def _accepts(p: param.Parameter, value) -> bool:
    lo, hi = getattr(p, "bounds", None) or (None, None)
    return (lo is None or value >= lo) and (hi is None or value <= hi)


@pytest.mark.parametrize("lab", LABS)
@SETTINGS
@given(data=st.data())
def test_any_value_is_accepted_in_bounds_or_refused_cleanly(lab, data):
    study = registry()[lab].study()
    names = [n for n in study.knob_names() if not isinstance(study.param[n], param.String)]
    name = data.draw(st.sampled_from(names))
    value = data.draw(wild_values)
    before = study.values()
    try:
        study.checked_update(**{name: value})
    except StudyInputError as exc:
        assert str(exc)  # a message for a person
        assert study.values() == before  # nothing half-applied
        return
    p = study.param[name]
    accepted = getattr(study, name)
    if isinstance(p, param.Number) and not isinstance(p, param.Boolean):
        assert isinstance(accepted, int | float) and math.isfinite(accepted)
        assert _accepts(p, accepted)


@pytest.mark.parametrize("lab", LABS)
@SETTINGS
@given(text=st.text(max_size=5000))
def test_link_text_is_parsed_or_refused_never_evaluated(lab, text):
    from apps.lab_app import parse_value

    study = registry()[lab].study()
    for name in study.knob_names():
        try:
            parse_value(study, name, text)
        except StudyInputError as exc:
            assert "<" not in str(exc) or "<" in text  # echoes only what was given
            if len(text) > 200:
                assert "over 200 characters" in str(exc)


@SETTINGS
@given(spec=st.text(max_size=400))
def test_cli_value_lists_are_parsed_or_refused(spec):
    from workbench.cli import _parse_sets

    try:
        _parse_sets([spec])
    except StudyInputError as exc:
        assert str(exc)
