"""The loader refuses every dangerous or malformed file with a plain ValueError."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from workbench.data import load_array


def _npy(array) -> io.BytesIO:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    buf.seek(0)
    return buf


def test_npy_and_csv_round_trip(tmp_path):
    x = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(load_array(tmp_path / "x.npy"), x)
    (tmp_path / "x.csv").write_text("a,b,c\n" + "\n".join(",".join(map(str, r)) for r in x))
    np.testing.assert_array_equal(load_array(tmp_path / "x.csv"), x)


def test_a_pickled_npy_is_refused_without_unpickling():
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("the loader unpickled user data",))

    buf = _npy(np.array([Boom()], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        load_array(buf, name="evil.npy")


def test_truncated_file_is_refused():
    data = _npy(np.ones((100, 10))).getvalue()
    with pytest.raises(ValueError, match="truncated"):
        load_array(io.BytesIO(data[:-80]), name="cut.npy")


def test_a_header_claiming_10_gb_is_refused_before_reading():
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (50_000, 25_000)}
    )
    header.seek(0)
    with pytest.raises(ValueError, match=r"claims 9,537 MiB.*limit"):
        load_array(header, name="huge.npy")


def test_wrong_shape_nan_non_numeric_and_bad_type_are_refused(tmp_path):
    with pytest.raises(ValueError, match="dimensions"):
        load_array(_npy(np.ones((2, 2, 2, 2))), name="x.npy")
    with pytest.raises(ValueError, match="NaN"):
        load_array(_npy(np.array([1.0, np.nan])), name="x.npy")
    (tmp_path / "bad.csv").write_text("1,2\n3,hello\n")
    with pytest.raises(ValueError, match="number"):
        load_array(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(ValueError, match="columns"):
        load_array(tmp_path / "ragged.csv")
    (tmp_path / "x.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match=".npy, .csv"):
        load_array(tmp_path / "x.pkl")
    with pytest.raises(ValueError, match="not a valid"):
        load_array(io.BytesIO(b"garbage"), name="x.npy")
