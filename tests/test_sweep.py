"""Sweeps: grid -> labelled Dataset, vectorized axes, cache, resume after interruption."""

import numpy as np
import param
import pytest
import xarray as xr

from workbench import sweep
from workbench.study import Study, StudyInputError


class Counting(Study):
    """A toy lab: y = a * b, vectorized over ``a``; counts evaluate() calls."""

    lab = "toy"
    vectorized = ("a",)
    a = param.Number(1.0, bounds=(0, 10))
    b = param.Integer(2, bounds=(1, 5))
    calls = []  # class-level log shared by the instances sweep creates

    def evaluate(self, a=None):
        values = np.atleast_1d(self.a if a is None else a).astype(float)
        Counting.calls.append((self.b, tuple(values)))
        return xr.Dataset(
            {"y": (("a",), values * self.b), "z": ((), float(self.b))}, coords={"a": values}
        )


@pytest.fixture(autouse=True)
def _reset_calls():
    Counting.calls.clear()


def test_cartesian_grid_gives_labelled_dims(tmp_path):
    ds = sweep.run(Counting(), {"a": [1.0, 2.0, 3.0], "b": [1, 2]}, cache_dir=tmp_path)
    assert list(ds.y.dims) == ["a", "b"]
    np.testing.assert_array_equal(ds.a, [1, 2, 3])
    np.testing.assert_array_equal(ds.b, [1, 2])
    np.testing.assert_allclose(ds.y, np.outer([1, 2, 3], [1, 2]))
    assert ds.attrs["lab"] == "toy"


def test_vectorized_axis_is_one_call_per_other_combination(tmp_path):
    sweep.run(Counting(), {"a": [1.0, 2.0, 3.0], "b": [1, 2]}, cache_dir=tmp_path)
    assert sorted(Counting.calls) == [(1, (1.0, 2.0, 3.0)), (2, (1.0, 2.0, 3.0))]


def test_explicit_points_give_point_dim(tmp_path):
    ds = sweep.run(Counting(), [{"a": 1.0, "b": 2}, {"a": 3.0, "b": 1}], cache_dir=tmp_path)
    assert ds.sizes["point"] == 2
    np.testing.assert_allclose(ds.y, [2.0, 3.0])
    np.testing.assert_array_equal(ds.b, [2, 1])


def test_cache_hit_recomputes_nothing(tmp_path):
    first = sweep.run(Counting(), {"a": [1.0, 2.0], "b": [3]}, cache_dir=tmp_path)
    Counting.calls.clear()
    second = sweep.run(Counting(), {"a": [1.0, 2.0], "b": [3]}, cache_dir=tmp_path)
    assert Counting.calls == []
    xr.testing.assert_identical(first, second)


def test_resume_after_interruption_gives_the_same_dataset(tmp_path):
    grid = {"a": [1.0, 2.0], "b": [1, 2, 3, 4]}
    reference = sweep.run(Counting(), grid, cache_dir=tmp_path / "ref", use_cache=False)

    class Interrupting:
        """Executor that dies after two tasks, as a killed process would."""

        def map_unordered(self, fn, tasks):
            for k, task in enumerate(tasks):
                if k == 2:
                    raise KeyboardInterrupt
                yield k, fn(task)

    with pytest.raises(KeyboardInterrupt):
        sweep.run(Counting(), grid, cache_dir=tmp_path / "c", executor=Interrupting())
    assert len(list((tmp_path / "c" / "toy").glob("*.nc"))) == 4  # two tasks x two a-values
    Counting.calls.clear()
    resumed = sweep.run(Counting(), grid, cache_dir=tmp_path / "c")
    assert sorted(b for b, _ in Counting.calls) == [3, 4]  # only the missing points ran
    xr.testing.assert_allclose(resumed, reference)
    assert not list((tmp_path / "c" / "toy").glob("*.part"))  # no half-written files remain


def test_code_change_invalidates_cache():
    values = {"a": 1.0, "b": 2}
    assert sweep.point_key("toy", values, "0.1+aaa") != sweep.point_key("toy", values, "0.1+bbb")
    assert sweep.point_key("toy", values, "v") == sweep.point_key("toy", dict(values), "v")


def test_code_version_covers_helper_modules_core_and_numpy(monkeypatch):
    """A change in a lab's helper module, in study.py/sweep.py, or in the NumPy version must
    change the key (it used to hash only the Study's own module)."""
    import importlib.metadata

    from workbench import study as study_module
    from workbench.labs import kde

    files = [p.name for p in study_module._source_files(kde.KDEStudy)]
    assert {"study.py", "sweep.py", "backend.py"} <= set(files)
    package_files = {p.name for p in (study_module.Path(kde.__file__).parent).glob("*.py")}
    assert package_files <= set(files)  # every helper module of the lab package
    before = kde.KDEStudy.code_version()
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda d: "0.0-test" if d == "numpy" else real(d)
    )
    assert kde.KDEStudy.code_version() != before


class OutOfOrder:
    """Returns results in reverse order of submission, as Dask's as_completed may."""

    def map_unordered(self, fn, tasks):
        results = [(k, fn(task)) for k, task in enumerate(tasks)]
        yield from reversed(results)


def test_results_are_keyed_by_task_not_by_arrival_order(tmp_path):
    grid = {"a": [1.0, 2.0], "b": [1, 2, 3]}
    reference = sweep.run(Counting(), grid, cache_dir=tmp_path / "ref", use_cache=False)
    shuffled = sweep.run(Counting(), grid, cache_dir=tmp_path / "c", executor=OutOfOrder())
    xr.testing.assert_identical(shuffled, reference)
    # and what went to the disk cache is right too: a cached re-run gives the same values
    again = sweep.run(Counting(), grid, cache_dir=tmp_path / "c")
    xr.testing.assert_identical(again, reference)


def test_corrupt_cache_file_is_recomputed_but_a_missing_engine_is_not_swallowed(
    tmp_path, monkeypatch
):
    grid = {"a": [1.0], "b": [1]}
    sweep.run(Counting(), grid, cache_dir=tmp_path)
    (path,) = (tmp_path / "toy").glob("*.nc")
    path.write_bytes(b"not a netcdf file")
    Counting.calls.clear()
    sweep.run(Counting(), grid, cache_dir=tmp_path)
    assert Counting.calls  # recomputed
    assert path.exists()  # and rewritten

    def no_engine(*_a, **_k):
        raise ModuleNotFoundError("No module named 'h5netcdf'")

    monkeypatch.setattr(xr, "load_dataset", no_engine)
    with pytest.raises(ModuleNotFoundError):
        sweep.run(Counting(), grid, cache_dir=tmp_path)
    assert path.exists()  # the cache was not wiped


def test_out_of_bounds_value_is_a_clear_error(tmp_path):
    with pytest.raises(StudyInputError, match="between 0 and 10"):
        sweep.run(Counting(), {"a": [11.0]}, cache_dir=tmp_path)
    with pytest.raises(StudyInputError, match="unknown setting"):
        sweep.run(Counting(), {"c": [1]}, cache_dir=tmp_path)


def test_progress_callback_reaches_total(tmp_path):
    seen = []
    sweep.run(
        Counting(),
        {"a": [1.0], "b": [1, 2, 3]},
        cache_dir=tmp_path,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)


def test_netcdf_and_csv_export_round_trip(tmp_path):
    ds = sweep.run(Counting(), {"a": [1.0, 2.0], "b": [1, 2]}, cache_dir=tmp_path)
    path = sweep.to_netcdf(ds, tmp_path / "out.nc")
    back = xr.load_dataset(path)
    xr.testing.assert_allclose(back, ds)
    text = sweep.to_csv(ds)
    assert text.splitlines()[0].split(",")[:3] == ["a", "b", "y"]
    assert len(text.splitlines()) == 1 + 4


def test_csv_of_mixed_dims_is_long_not_a_cartesian_blowup():
    ds = xr.Dataset(
        {
            "error": (("iteration",), [1.0, 0.1, 0.01]),
            "trajectory": (("sample", "state"), np.arange(8.0).reshape(4, 2)),
            "final": ((), 0.01),
        },
        coords={"iteration": [1, 2, 3], "sample": [0, 1, 2, 3], "state": ["x1", "x2"]},
    )
    lines = sweep.to_csv(ds).splitlines()
    assert lines[0] == "variable,iteration,sample,state,value"
    assert len(lines) == 1 + 3 + 8 + 1  # one row per value, not 3 x 4 x 2 rows per variable
    assert "trajectory,,3,x2,7.0" in lines


def test_nan_is_named_as_not_finite(tmp_path):
    with pytest.raises(StudyInputError, match="finite"):
        sweep.run(Counting(), {"a": [float("nan")]}, cache_dir=tmp_path)


def test_csv_header_carries_the_settings_and_reads_back(tmp_path):
    import pandas as pd

    ds = xr.Dataset({"y": (("a",), [1.0, 2.0])}, coords={"a": [0.5, 1.5]})
    text = sweep.to_csv(ds, header={"dim": 20, "note": "two\nlines"})
    assert text.splitlines()[:2] == ["# dim = 20", "# note = two lines"]  # one line per setting
    path = tmp_path / "h.csv"
    sweep.to_csv(ds, path, header={"dim": 20})
    back = pd.read_csv(path, comment="#")
    assert list(back.columns) == ["a", "y"] and back["y"].tolist() == [1.0, 2.0]
