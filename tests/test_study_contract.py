"""Checks every lab's Study must pass (in the spirit of scikit-learn's ``check_estimator``).

They run over every discovered lab, so a new lab gets them for free: the defaults evaluate to a
labelled Dataset with units that survives NetCDF; every bound is enforced with a message that
names it and leaves the knobs as they were; a seed makes ``evaluate`` deterministic; and every
dashboard widget offers only values its Study accepts.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import param
import pytest
import xarray as xr

from workbench.labs import registry
from workbench.study import Study, StudyInputError

LABS = sorted(registry())


def _study(lab: str) -> Study:
    return registry()[lab].study()


@pytest.fixture(scope="module")
def default_results() -> dict[str, xr.Dataset]:
    return {}


def _default(lab: str, cache: dict) -> xr.Dataset:
    if lab not in cache:
        cache[lab] = _study(lab).evaluate()
    return cache[lab]


def test_every_lab_is_discovered_with_its_metadata():
    assert {"kde", "quadrature"} <= set(LABS)
    for lab in LABS:
        info = registry()[lab]
        assert info.title and info.summary and info.paper
        assert info.paper_url.startswith("https://"), lab


@pytest.mark.parametrize("lab", LABS)
def test_defaults_evaluate_to_a_labelled_dataset_with_units(lab, default_results):
    ds = _default(lab, default_results)
    assert isinstance(ds, xr.Dataset) and ds.data_vars
    for name, var in ds.data_vars.items():
        assert "units" in var.attrs, f"{lab}: variable {name} has no units attribute"
        for dim in var.dims:
            assert not dim.startswith("dim_"), f"{lab}: {name} has an unnamed dim {dim}"
    assert ds.attrs, f"{lab}: the Dataset carries no attrs (provenance, knob values)"


@pytest.mark.parametrize("lab", LABS)
def test_result_round_trips_through_netcdf(lab, default_results, tmp_path):
    ds = _default(lab, default_results)
    path = tmp_path / f"{lab}.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    back = xr.load_dataset(path, engine="h5netcdf")
    xr.testing.assert_allclose(back, ds)
    assert set(back.attrs) == set(ds.attrs)


def _out_of_bounds(p: param.Parameter) -> list[tuple[float, str]]:
    """Values just outside each finite bound, with the bound's text the message must name."""
    out = []
    lo, hi = p.bounds or (None, None)
    step = 1 if isinstance(p, param.Integer) else None
    if lo is not None:
        below = lo - (step or max(abs(lo) * 0.5, 1e-3))
        out.append((below, f"{lo:g}"))
    if hi is not None:
        above = hi + (step or max(abs(hi) * 0.5, 1e-3))
        out.append((above, f"{hi:g}"))
    return out


@pytest.mark.parametrize("lab", LABS)
def test_out_of_bounds_values_are_refused_naming_the_bound(lab):
    study = _study(lab)
    checked = 0
    for name in study.knob_names():
        p = study.param[name]
        before = study.values()
        if isinstance(p, param.Number) and not isinstance(p, param.Boolean):
            for value, bound in _out_of_bounds(p):
                with pytest.raises(StudyInputError) as info:
                    study.checked_update(**{name: value})
                message = str(info.value)
                assert bound in message, f"{lab}.{name}: {message!r} does not name {bound}"
                assert (p.label or name) in message, f"{lab}.{name}: label missing: {message!r}"
                assert study.values() == before  # nothing half-applied
                checked += 1
            with pytest.raises(StudyInputError, match="finite"):
                study.checked_update(**{name: math.nan})
        elif isinstance(p, param.Selector):
            with pytest.raises(StudyInputError):
                study.checked_update(**{name: "no-such-choice"})
            assert study.values() == before
            checked += 1
    assert checked, f"{lab}: no bounded knob was checked"


@pytest.mark.parametrize("lab", [lab for lab in LABS if "seed" in registry()[lab].study.param])
def test_a_seed_makes_evaluate_deterministic(lab, default_results):
    again = _study(lab).evaluate()
    xr.testing.assert_identical(again, _default(lab, default_results))


def _dashboard_labs() -> list[str]:
    return [lab for lab in LABS if importlib.util.find_spec(f"apps.{lab}") is not None]


@pytest.mark.parametrize("lab", _dashboard_labs())
def test_dashboard_widgets_offer_only_accepted_values(lab, cache_dir):
    import importlib

    from apps.lab_app import LabDashboard, widget_range

    module = importlib.import_module(f"apps.{lab}")
    classes = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, LabDashboard) and obj is not LabDashboard
    ]
    if not classes:
        pytest.skip(f"apps/{lab}.py is not on the LabDashboard base yet")
    dashboard = classes[0]()
    study = dashboard.study
    for name, widget in dashboard.widgets.items():
        p = study.param[name]
        span = widget_range(widget)
        if span is None or p.bounds is None:
            continue
        lo, hi = p.bounds
        assert lo is None or span[0] is None or span[0] >= lo, f"{lab}.{name}: {span} vs {p.bounds}"
        assert hi is None or span[1] is None or span[1] <= hi, f"{lab}.{name}: {span} vs {p.bounds}"
        if hasattr(widget, "options") and isinstance(widget.options, list):
            assert all(np.isfinite(v) for v in widget.options)
