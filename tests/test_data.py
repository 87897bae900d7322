"""The loader reads honest files exactly and refuses every dangerous or malformed one with a plain
ValueError, deciding on sizes from the header before it reads the data."""

from __future__ import annotations

import io
import json
import pickle
import struct

import numpy as np
import pytest

from workbench.data import load_array


def _npy(array, **header) -> io.BytesIO:
    buf = io.BytesIO()
    if header:  # a hand-written header (the data that follows may not match it)
        np.lib.format.write_array_header_1_0(buf, header)
        buf.write(np.ascontiguousarray(array).tobytes())
    else:
        np.save(buf, array, allow_pickle=True)
    buf.seek(0)
    return buf


class CountingReader(io.BytesIO):
    """A file object that records how many bytes were asked for and read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n=-1):
        out = super().read(n)
        self.bytes_read += len(out)
        return out


def _safetensors(tensors: dict[str, tuple[str, tuple[int, ...], bytes]], pad: int = 0) -> bytes:
    """A .safetensors file built from the format's specification (not from the loader)."""
    header, offset, blobs = {"__metadata__": {"format": "np"}}, 0, []
    for name, (dtype, shape, blob) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8 + pad)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12.0).reshape(4, 3),
        np.asfortranarray(np.arange(12.0).reshape(4, 3)),
        np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian ints
        np.array([[True, False]]),
        np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
    ],
)
def test_npy_round_trips_exactly_as_float64(tmp_path, array):
    np.save(tmp_path / "x.npy", array)
    loaded = load_array(tmp_path / "x.npy")
    assert loaded.dtype == np.float64 and loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, array.astype(np.float64))


def test_csv_with_a_header_quotes_and_one_column(tmp_path):
    x = np.arange(12.0).reshape(4, 3) / 7
    (tmp_path / "x.csv").write_text(
        "a,b,c\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in x)
    )
    np.testing.assert_array_equal(load_array(tmp_path / "x.csv"), x)  # repr round-trips floats
    (tmp_path / "q.csv").write_text('"x","y"\n"1.5", 2\n\n3,-4e-3\n')
    np.testing.assert_array_equal(load_array(tmp_path / "q.csv"), [[1.5, 2.0], [3.0, -4e-3]])
    one = load_array(io.BytesIO(b"1\n2\n3\n"), name="col.csv")
    assert one.shape == (3, 1)  # a CSV is always samples x columns


def test_a_pickled_npy_is_refused_without_unpickling():
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("the loader unpickled user data",))

    with pytest.raises(ValueError, match="pickle"):
        load_array(_npy(np.array([Boom()], dtype=object)), name="evil.npy")
    with pytest.raises(ValueError, match=".npy, .csv or .safetensors"):
        load_array(io.BytesIO(pickle.dumps([1, 2])), name="x.pkl")


def test_truncated_files_are_refused():
    data = _npy(np.ones((100, 10))).getvalue()
    with pytest.raises(ValueError, match=r"truncated \(7,920 of 8,000 data bytes\)"):
        load_array(io.BytesIO(data[:-80]), name="cut.npy")
    st = _safetensors({"w": ("F32", (4, 4), np.ones(16, "<f4").tobytes())})
    with pytest.raises(ValueError, match="truncated"):
        load_array(io.BytesIO(st[:-3]), name="cut.safetensors")


def test_a_header_claiming_10_gb_is_refused_before_reading_data():
    header = _npy(np.zeros(0), descr="<f8", fortran_order=False, shape=(50_000, 25_000)).getvalue()
    reader = CountingReader(header + b"\0" * 4096)
    with pytest.raises(
        ValueError, match=r"claims 9,536\.7 MiB as float64, over the 256\.0 MiB limit"
    ):
        load_array(reader, name="huge.npy")
    assert reader.bytes_read == len(header)  # the header only, not one byte of data
    st = _safetensors({"w": ("F32", (50_000, 50_000), b"")})
    reader = CountingReader(st)
    with pytest.raises(ValueError, match="over the 1.0 MiB limit"):
        load_array(reader, name="huge.safetensors", max_bytes=2**20)
    assert reader.bytes_read == len(st)
    with pytest.raises(ValueError, match="header claims 1,152,921,504,606,846,976 bytes"):
        load_array(io.BytesIO(struct.pack("<Q", 2**60)), name="x.safetensors")


@pytest.mark.parametrize("shape", [(2**32, 2**32), (2**64,), (-1, 8), (3, -2)])
def test_overflowing_or_negative_header_shapes_are_refused(shape):
    # int64 products of (2**32, 2**32) wrap to 0: a size check in fixed width would pass it.
    with pytest.raises(ValueError, match="huge.npy: the header's shape .* (claims|is not valid)"):
        load_array(
            _npy(np.zeros(8), descr="<f8", fortran_order=False, shape=shape), name="huge.npy"
        )


def test_a_large_csv_is_bounded_before_parsing():
    text = b"1,2,3,4\n" * 20_000  # 80,000 values = 640,000 bytes as float64
    with pytest.raises(ValueError, match="80,000 fields .* over the 0.5 MiB limit"):
        load_array(io.BytesIO(text), name="big.csv", max_bytes=2**19)
    assert load_array(io.BytesIO(text), name="big.csv", max_bytes=2**20).shape == (20_000, 4)


def test_wrong_shape_nan_inf_and_non_numeric_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"1 or 2 or 3 dimension\(s\), got shape \(2, 2, 2, 2\)"):
        load_array(_npy(np.ones((2, 2, 2, 2))), name="x.npy")
    with pytest.raises(ValueError, match=r"expected shape \(any, 64\), got \(5, 3\)"):
        load_array(_npy(np.ones((5, 3))), name="x.npy", shape=(None, 64))
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="NaN or infinite"):
            load_array(_npy(np.array([1.0, bad])), name="x.npy")
    with pytest.raises(ValueError, match="not a real number type"):
        load_array(_npy(np.array([1 + 2j])), name="x.npy")
    with pytest.raises(ValueError, match="not a real number type"):
        load_array(_npy(np.array(["a"])), name="x.npy")
    with pytest.raises(ValueError, match="empty"):
        load_array(_npy(np.zeros((0, 3))), name="x.npy")
    (tmp_path / "bad.csv").write_text("1,2\n3,hello\n")
    with pytest.raises(ValueError, match="every value must be a number .*'hello' at data row 2"):
        load_array(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(ValueError, match=r"different numbers of columns \(2 then 1"):
        load_array(tmp_path / "ragged.csv")
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_array(io.BytesIO(b"1,1e999\n"), name="x.csv")
    with pytest.raises(ValueError, match="not a UTF-8"):
        load_array(io.BytesIO(b"\xff\xfe\x00"), name="x.csv")
    with pytest.raises(ValueError, match="not a valid .npy"):
        load_array(io.BytesIO(b"garbage"), name="x.npy")
    with pytest.raises(ValueError, match="no such file"):
        load_array(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="no such file"):
        load_array(tmp_path, name="dir.npy")
    # the loader keeps working after every refusal
    np.testing.assert_array_equal(load_array(_npy(np.eye(3)), name="ok.npy"), np.eye(3))


def test_safetensors_read_from_the_specification():
    k = np.arange(24, dtype="<f4").reshape(2, 3, 4)
    v = -np.arange(6, dtype="<i8").reshape(6)
    # bfloat16 is the top 16 bits of a float32: 1.5 = 0x3FC00000 -> 0x3FC0, -2 -> 0xC000
    bf16 = np.array([0x3FC0, 0xC000], dtype="<u2")
    data = _safetensors(
        {
            "k": ("F32", k.shape, k.tobytes()),
            "v": ("I64", v.shape, v.tobytes()),
            "h": ("BF16", (2,), bf16.tobytes()),
        }
    )
    np.testing.assert_array_equal(load_array(io.BytesIO(data), name="kv.safetensors", key="k"), k)
    np.testing.assert_array_equal(load_array(io.BytesIO(data), name="kv.safetensors", key="v"), v)
    np.testing.assert_array_equal(
        load_array(io.BytesIO(data), name="kv.safetensors", key="h"), [1.5, -2.0]
    )
    with pytest.raises(ValueError, match=r"holds 3 tensors \(h, k, v\); say which one"):
        load_array(io.BytesIO(data), name="kv.safetensors")
    with pytest.raises(ValueError, match="no tensor named q"):
        load_array(io.BytesIO(data), name="kv.safetensors", key="q")
    lying = _safetensors({"w": ("F32", (4, 4), np.ones(8, "<f4").tobytes())})
    with pytest.raises(ValueError, match="offsets do not match"):
        load_array(io.BytesIO(lying), name="w.safetensors")
    with pytest.raises(ValueError, match="dtype C64 is not a real number type"):
        load_array(io.BytesIO(_safetensors({"w": ("C64", (1,), b"\0" * 8)})), name="w.safetensors")
    with pytest.raises(ValueError, match="bad JSON header"):
        load_array(io.BytesIO(struct.pack("<Q", 4) + b"{{{{"), name="w.safetensors")


def test_safetensors_agrees_with_the_safetensors_package(tmp_path):
    numpy_io = pytest.importorskip("safetensors.numpy")
    k = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    numpy_io.save_file({"k": k, "v": k[::-1].copy()}, tmp_path / "kv.safetensors")
    np.testing.assert_array_equal(load_array(tmp_path / "kv.safetensors", key="v"), k[::-1])


def test_max_bytes_itself_is_checked():
    for bad in (0, -1, 1.5, True, "1e9"):
        with pytest.raises(ValueError, match="max_bytes must be a positive whole number"):
            load_array(_npy(np.eye(2)), name="x.npy", max_bytes=bad)
