"""Bad input everywhere, property-based (hypothesis): every discovered lab's knobs, link text,
the CLI's value lists, sweep grids and the data loader.

The property is the same throughout: a value is either accepted (and then it lies within what the
declaration allows) or refused with a StudyInputError / ValueError whose message names the knob
and the bound, leaving the Study unchanged. No other exception escapes and nothing hangs (each
test runs under a pytest-timeout). ``evaluate`` is never called here: refusals must come first.
"""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import param
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from workbench.data import load_array
from workbench.labs import registry
from workbench.study import StudyInputError, _bounds_text, knob_label

LABS = sorted(registry())
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure here is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
pytestmark = pytest.mark.timeout(60)

MARKUP = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "{{7*7}}", "${jndi:x}"]
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, -0.0, 1e-320, 1e308, -1e308, 2**63, -(2**63), 10**30]),
    st.integers(min_value=-(10**18), max_value=10**18),
)
wild_values = st.one_of(
    numbers,
    st.text(max_size=300),
    st.text(min_size=5000, max_size=6000, alphabet="a<>&;\"'"),  # long strings
    st.sampled_from(MARKUP),
    st.none(),
    st.booleans(),
    st.lists(numbers, max_size=4),
    st.tuples(numbers, numbers, numbers),
    st.dictionaries(st.text(max_size=3), numbers, max_size=2),
)


def _snapshot(study) -> str:
    """The Study's values, compared as text so NaN and arrays compare sanely."""
    return repr(sorted(study.values().items()))


def _out_of_declared_bounds(p: param.Parameter, value) -> bool:
    """True for a real finite number outside a Number/Integer knob's declared bounds."""
    if not isinstance(p, param.Number) or isinstance(value, bool):
        return False
    if not isinstance(value, int | float) or not math.isfinite(value):
        return False
    lo, hi = p.bounds or (None, None)
    inc_lo, inc_hi = p.inclusive_bounds
    below = lo is not None and (value < lo or (value == lo and not inc_lo))
    above = hi is not None and (value > hi or (value == hi and not inc_hi))
    return below or above


def _assert_within_declaration(study, name: str) -> None:
    p, value = study.param[name], getattr(study, name)
    if isinstance(p, param.Number):
        assert isinstance(value, int | float) and math.isfinite(value)
        assert not _out_of_declared_bounds(p, value), (name, value)
        if isinstance(p, param.Integer):
            assert isinstance(value, int)
    elif isinstance(p, param.Selector):
        assert value in p.objects
    elif isinstance(p, param.Boolean):
        assert isinstance(value, bool)


@pytest.mark.parametrize("lab", LABS)
@SETTINGS
@given(data=st.data())
def test_any_value_is_accepted_in_bounds_or_refused_naming_the_bound(lab, data):
    study = registry()[lab].study()
    name = data.draw(st.sampled_from(study.knob_names()), label="knob")
    value = data.draw(wild_values, label="value")
    p, before = study.param[name], _snapshot(study)
    try:
        study.checked_update(**{name: value})
    except StudyInputError as exc:
        message = str(exc)
        assert knob_label(study, name) in message  # says which knob, by what the page shows
        assert len(message) < 400  # echoes no 5,000-character value back
        if _out_of_declared_bounds(p, value):
            assert _bounds_text(p) in message  # ... and the bound it broke
        assert _snapshot(study) == before  # nothing half-applied
        return
    _assert_within_declaration(study, name)


def _in_bounds(p: param.Parameter):
    """Values a knob's declaration allows (None when it cannot be generated here)."""
    if isinstance(p, param.Boolean):
        return st.booleans()
    if isinstance(p, param.Selector):
        return st.sampled_from(list(p.objects)) if p.objects else None
    if isinstance(p, param.Number):
        lo, hi = p.bounds or (None, None)
        if isinstance(p, param.Integer):
            return st.integers(min_value=lo, max_value=hi if hi is not None else (lo or 0) + 10**9)
        if lo is None or hi is None:
            return None
        inc_lo, inc_hi = p.inclusive_bounds
        return st.floats(lo, hi, exclude_min=not inc_lo, exclude_max=not inc_hi)
    return None  # strings, tuples, lists: covered by the wild-value test


@pytest.mark.parametrize("lab", LABS)
@SETTINGS
@given(data=st.data())
def test_in_bounds_combinations_pass_validate_or_are_refused_whole(lab, data):
    """Several knobs at once, each within its bounds: the cross-knob checks (memory and size
    caps in ``validate``) accept the combination or refuse all of it with a message."""
    study = registry()[lab].study()
    strategies = {n: s for n in study.knob_names() if (s := _in_bounds(study.param[n])) is not None}
    names = data.draw(st.lists(st.sampled_from(sorted(strategies)), min_size=1, unique=True))
    values = {n: data.draw(strategies[n], label=n) for n in names}
    before = _snapshot(study)
    try:
        study.checked_update(**values)
    except StudyInputError as exc:
        assert str(exc) and len(str(exc)) < 400
        assert _snapshot(study) == before
        return
    for n in names:
        _assert_within_declaration(study, n)


@pytest.mark.parametrize("lab", LABS)
@settings(SETTINGS, max_examples=25)
@given(data=st.data())
def test_a_sweep_grid_with_one_bad_value_is_refused_before_any_work(lab, data, tmp_path):
    from workbench import sweep

    study = registry()[lab].study()
    name = data.draw(st.sampled_from(study.knob_names()), label="knob")
    bad = data.draw(wild_values, label="value")
    probe = registry()[lab].study()
    try:
        probe.checked_update(**{name: bad})
        assume(False)  # an acceptable value: not this test's business
    except StudyInputError:
        pass

    class NoWork:
        def map_unordered(self, fn, tasks):
            raise AssertionError("the sweep started work on a grid with a bad value")

    with pytest.raises(StudyInputError, match="."):
        sweep.run(study, {name: [getattr(study, name), bad]}, executor=NoWork(), cache_dir=tmp_path)


@settings(SETTINGS, max_examples=60)
@given(lengths=st.lists(st.integers(1, 10**4), min_size=2, max_size=4))
def test_a_grid_is_sized_before_it_is_built(lengths):
    from workbench import sweep

    grid = {f"k{i}": range(n) for i, n in enumerate(lengths)}
    if math.prod(lengths) > sweep.MAX_POINTS:
        with pytest.raises(StudyInputError, match="capped at 100,000 points"):
            sweep._grid_points(grid)
    else:
        assert len(sweep._grid_points(grid)[1]) == math.prod(lengths)


@SETTINGS
@given(values=st.lists(st.tuples(st.integers(), st.integers(), st.integers()), min_size=1))
def test_tuple_valued_knobs_are_swept_whole(values):
    from workbench import sweep

    names, points, shape = sweep._grid_points({"gain": values, "n": 4})
    assert [p["gain"] for p in points] == values and shape == [len(values), 1]


@pytest.mark.parametrize("lab", LABS)
@settings(SETTINGS, max_examples=30)
@given(text=st.one_of(st.text(max_size=300), st.sampled_from(MARKUP), st.text(min_size=201)))
def test_link_text_is_parsed_or_refused_never_evaluated(lab, text):
    from apps.lab_app import MAX_LINK_VALUE, parse_value

    study = registry()[lab].study()
    for name in study.knob_names():
        try:
            parse_value(study, name, text)
        except StudyInputError as exc:
            assert knob_label(study, name) in str(exc)
            if len(text) > MAX_LINK_VALUE:
                assert f"over {MAX_LINK_VALUE} characters" in str(exc)
            assert "<script" not in str(exc) or "<script" in text  # echoes only what was given


@SETTINGS
@given(values=st.lists(st.one_of(st.integers(), st.floats(allow_nan=False)), min_size=1))
def test_cli_numbers_round_trip_through_iter_values(values):
    from workbench.sweep import iter_values

    parsed = list(iter_values(",".join(map(repr, values))))
    assert parsed == values and [type(v) for v in parsed] == [type(v) for v in values]


@settings(SETTINGS, max_examples=100)
@given(spec=st.one_of(st.text(max_size=400), st.text(alphabet="0123456789,.=-e", max_size=4000)))
def test_cli_value_lists_are_parsed_or_refused(spec):
    from workbench.cli import MAX_VALUES_PER_KNOB, _parse_sets

    try:
        grid = _parse_sets([spec])
    except StudyInputError as exc:
        assert str(exc).startswith("--set")
        return
    ((name, values),) = grid.items()
    assert name == spec.partition("=")[0].strip() and 1 <= len(values) <= MAX_VALUES_PER_KNOB


# --- the data loader -------------------------------------------------------------------------

SUFFIXES = [".npy", ".csv", ".safetensors"]


def _valid_npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _load_or_refuse(data: bytes, name: str, **kwargs):
    """The only outcomes allowed: a finite float64 array, or a ValueError naming the file."""
    try:
        out = load_array(io.BytesIO(data), name=name, **kwargs)
    except ValueError as exc:
        assert str(exc).startswith(name.split("/")[-1]) and len(str(exc)) < 400
        return None
    assert out.dtype == np.float64 and np.isfinite(out).all() and out.size > 0
    return out


@settings(SETTINGS, max_examples=150)
@given(data=st.binary(max_size=2000), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_are_loaded_or_refused(data, suffix):
    _load_or_refuse(data, "upload" + suffix)


@settings(SETTINGS, max_examples=100)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(["<f8", ">f4", "<i2", "u1", "?", "<f2"]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
    ),
    cut=st.integers(0, 400),
    flip=st.integers(0, 200),
)
def test_npy_files_round_trip_and_damaged_ones_are_refused(array, cut, flip):
    data = _valid_npy(array)
    finite = np.isfinite(array.astype(np.float64)).all()
    out = _load_or_refuse(data, "x.npy")
    assert (out is not None) == bool(finite)
    if out is not None:
        np.testing.assert_array_equal(out, array.astype(np.float64))
    _load_or_refuse(data[: len(data) - cut], "x.npy")  # truncated anywhere
    damaged = bytearray(data)
    damaged[flip % len(damaged)] ^= 0xFF  # one corrupted byte, header or data
    _load_or_refuse(bytes(damaged), "x.npy")


@settings(SETTINGS, max_examples=100)
@given(
    shape=st.lists(st.integers(0, 2**40), min_size=1, max_size=4),
    max_bytes=st.integers(1, 2**30),
)
def test_a_header_size_over_max_bytes_is_refused_whatever_it_claims(shape, max_bytes):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": tuple(shape)}
    )
    out = _load_or_refuse(header.getvalue() + b"\0" * 64, "claim.npy", max_bytes=max_bytes)
    claimed = math.prod(shape) * 8
    if claimed > max_bytes or claimed > 64:  # over the cap, or more data than the file has
        assert out is None


@settings(SETTINGS, max_examples=100)
@given(
    rows=st.lists(
        st.lists(
            st.one_of(st.floats(width=32), st.text(max_size=6), st.sampled_from(MARKUP)),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_csv_text_is_loaded_or_refused(rows):
    text = "\n".join(",".join(map(str, row)) for row in rows)
    out = _load_or_refuse(text.encode(), "rows.csv")
    if out is not None:
        assert out.ndim == 2 and out.shape[0] <= len(rows)


@settings(SETTINGS, max_examples=100)
@given(
    header=st.dictionaries(
        st.text(max_size=4),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "F64", "I8", "BF16", "C64", "X"]),
                "shape": st.lists(st.integers(-2, 2**33), max_size=3),
                "data_offsets": st.lists(st.integers(-2, 2**34), max_size=3),
            }
        ),
        max_size=3,
    ),
    tail=st.binary(max_size=200),
)
def test_safetensors_headers_are_checked_before_data(header, tail):
    import json

    text = json.dumps(header).encode()
    data = struct.pack("<Q", len(text)) + text + tail
    for key in [None, *header]:
        _load_or_refuse(data, "t.safetensors", key=key, max_bytes=2**20)
