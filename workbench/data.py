"""One loader for every user-supplied array (uploads in a page, paths in the CLI and notebooks).

:func:`load_array` reads ``.npy``, ``.csv`` and ``.safetensors`` into a finite float64 NumPy
array and refuses anything else with a plain :class:`ValueError`:

* pickled objects: ``.npy`` object arrays are refused from the header, never unpickled
  (loading a pickle runs code);
* sizes: every format states its size before the data (the ``.npy`` header's shape × item size,
  the ``.safetensors`` JSON header's shapes, a CSV's count of fields), and that size is checked
  against ``max_bytes`` *before* the data is read, so a 40-byte file claiming 10 GB costs nothing;
* truncated files, impossible shapes (negative, overflowing), non-numeric dtypes (complex,
  strings, structured), ragged or non-numeric CSV, the wrong number of dimensions or the wrong
  size of an axis, empty arrays, NaN and infinity.

``.safetensors`` is parsed here from its specification (an 8-byte little-endian header length,
a JSON header of ``{name: {dtype, shape, data_offsets}}``, then the raw little-endian data), so
it needs no extra package and its header is checked before any tensor data is read.

>>> import io, numpy as np
>>> buf = io.BytesIO(); np.save(buf, np.eye(2)); _ = buf.seek(0)
>>> load_array(buf, name="eye.npy").tolist()
[[1.0, 0.0], [0.0, 1.0]]
>>> load_array(io.BytesIO(b"x,y\\n1,2\\n3,nan\\n"), name="points.csv")
Traceback (most recent call last):
...
ValueError: points.csv: the array contains NaN or infinite values; remove or replace them
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

#: Default cap on the bytes of one loaded array (256 MiB of float64 = 32 million values).
MAX_BYTES = 256 * 2**20
#: Largest header a ``.npy`` or ``.safetensors`` file may have (the JSON/dict text).
MAX_HEADER_BYTES = 100_000
SUFFIXES = (".npy", ".csv", ".safetensors")
#: Item size and NumPy dtype of the safetensors dtypes read (BF16 is widened through float32).
SAFETENSORS_DTYPES = {
    "F64": (8, "<f8"),
    "F32": (4, "<f4"),
    "F16": (2, "<f2"),
    "BF16": (2, "<u2"),
    "I64": (8, "<i8"),
    "I32": (4, "<i4"),
    "I16": (2, "<i2"),
    "I8": (1, "i1"),
    "U64": (8, "<u8"),
    "U32": (4, "<u4"),
    "U16": (2, "<u2"),
    "U8": (1, "u1"),
    "BOOL": (1, "?"),
}


def load_array(
    source: str | os.PathLike | IO[bytes],
    *,
    max_bytes: int = MAX_BYTES,
    ndim: int | Sequence[int] = (1, 2, 3),
    shape: Sequence[int | None] | None = None,
    name: str | None = None,
    key: str | None = None,
) -> np.ndarray:
    """Load a finite numeric array from a path or a binary file object.

    Parameters
    ----------
    source
        A path, or a binary file object (an upload); then ``name`` gives its file type.
    max_bytes
        The most bytes the array may take in memory as float64, checked from the file's own
        header before its data is read (and the most bytes a CSV file may have).
    ndim
        Allowed numbers of dimensions.
    shape
        Required axis sizes, ``None`` for any, e.g. ``(None, 64)`` for samples × 64 dims.
    name
        The file name shown in messages (and its suffix picks the format for file objects).
    key
        Which tensor of a ``.safetensors`` file (needed when it holds several).

    Returns
    -------
    numpy.ndarray
        float64, C order, every value finite.

    Raises
    ------
    ValueError
        With a message for a person, naming the file and the limit it broke.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive whole number of bytes, got {max_bytes!r}")
    label = Path(name or (os.fspath(source) if isinstance(source, str | os.PathLike) else "upload"))
    label_text = _shown(label.name)
    suffix = label.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{label_text}: use a .npy, .csv or .safetensors file")
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{label_text}: no such file")
        with open(path, "rb") as fh:
            array = _READERS[suffix](fh, max_bytes, label_text, key)
    else:
        array = _READERS[suffix](source, max_bytes, label_text, key)
    return _checked(array, ndim, shape, label_text)


def _shown(text: str, limit: int = 60) -> str:
    """A file name as shown in a message: printable and at most ``limit`` characters."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _over(label: str, what: str, nbytes: int, max_bytes: int) -> ValueError:
    return ValueError(
        f"{label}: {what} {_mib(nbytes)} as float64, over the {_mib(max_bytes)} limit; "
        "use a smaller sample"
    )


def _checked(array: np.ndarray, ndim, shape, label: str) -> np.ndarray:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if array.ndim not in allowed:
        raise ValueError(
            f"{label}: expected an array with {' or '.join(map(str, allowed))} dimension(s), "
            f"got shape {array.shape}"
        )
    if shape is not None:
        wanted = tuple(shape)
        if len(wanted) != array.ndim or any(
            w is not None and w != n for w, n in zip(wanted, array.shape, strict=False)
        ):
            shown = "(" + ", ".join("any" if w is None else str(w) for w in wanted) + ")"
            raise ValueError(f"{label}: expected shape {shown}, got {array.shape}")
    if array.size == 0:
        raise ValueError(f"{label}: the array is empty")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{label}: dtype {array.dtype} is not a real number type")
    out = np.ascontiguousarray(array, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ValueError(
            f"{label}: the array contains NaN or infinite values; remove or replace them"
        )
    return out


def _checked_shape(shape, label: str) -> tuple[int, ...]:
    """A header's shape as non-negative Python ints (Python ints cannot overflow)."""
    if not isinstance(shape, list | tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise ValueError(f"{label}: the header's shape {_shown(str(shape))} is not valid")
    return tuple(shape)


def _read_exactly(fh: IO[bytes], nbytes: int, label: str) -> bytes:
    data = fh.read(nbytes)
    if data is None or len(data) < nbytes:
        got = 0 if data is None else len(data)
        raise ValueError(f"{label}: the file is truncated ({got:,} of {nbytes:,} data bytes)")
    return data


def _read_npy(fh: IO[bytes], max_bytes: int, label: str, _key) -> np.ndarray:
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(fh)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unknown version {version}")
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read(fh, max_header_size=MAX_HEADER_BYTES)
    except Exception as exc:  # NumPy parses the header with ast/tokenize: their errors vary
        # (found by tests/test_properties.py: one flipped byte raises tokenize.TokenError)
        raise ValueError(f"{label}: not a valid .npy file ({_shown(str(exc), 120)})") from None
    if dtype.hasobject:
        raise ValueError(
            f"{label}: holds Python objects (a pickle), which are never loaded; "
            "save a numeric array instead"
        )
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(f"{label}: dtype {dtype} is not a real number type")
    shape = _checked_shape(shape, label)
    count = math.prod(shape)
    if count * 8 > max_bytes:  # the float64 array this becomes; checked before any data read
        raise _over(label, f"the header's shape {shape} claims", count * 8, max_bytes)
    data = _read_exactly(fh, count * dtype.itemsize, label)
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


_NUMBER = re.compile(
    r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*|\s*[-+]?(nan|inf|infinity)\s*", re.I
)


def _read_csv(fh: IO[bytes], max_bytes: int, label: str, _key) -> np.ndarray:
    raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ValueError(f"{label}: the file is over the {_mib(max_bytes)} limit")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{label}: not a UTF-8 text file") from None
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise ValueError(f"{label}: the file has no rows")
    cells = [c.strip().strip('"') for c in lines[first].split(",")]
    if not all(_NUMBER.fullmatch(c) for c in cells):
        first += 1  # a header line (column names)
    body = "\n".join(lines[first:])
    if not body.strip():
        raise ValueError(f"{label}: the file has a header but no rows of numbers")
    # At most one value per field: the float64 array is bounded before parsing starts.
    fields = body.count(",") + body.count("\n") + 1
    if fields * 8 > max_bytes:
        raise _over(label, f"its {fields:,} fields would take up to", fields * 8, max_bytes)
    try:
        array = np.loadtxt(
            io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2, quotechar='"', comments="#"
        )
    except ValueError as exc:
        message = str(exc)
        ragged = re.search(r"number of columns changed from (\d+) to (\d+) at row (\d+)", message)
        if ragged:
            was, now, row = ragged.groups()
            raise ValueError(
                f"{label}: rows have different numbers of columns ({was} then {now} at data row "
                f"{row}); every row is one sample with the same number of dims"
            ) from None
        bad = re.search(
            r"could not convert string (.*) to float64 at row (\d+), column (\d+)", message
        )
        # NumPy counts these rows from 0 (ragged rows from 1): say data row 1, 2, ...
        where = (
            f" ({_shown(bad.group(1), 30)} at data row {int(bad.group(2)) + 1}, "
            f"column {bad.group(3)})"
            if bad
            else ""
        )
        raise ValueError(
            f"{label}: every value must be a number{where}; rows are samples, columns dims"
        ) from None
    return array  # always samples × columns, one column included


def _read_safetensors(fh: IO[bytes], max_bytes: int, label: str, key: str | None) -> np.ndarray:
    head = fh.read(8)
    if head is None or len(head) < 8:
        raise ValueError(f"{label}: not a valid .safetensors file (no header)")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > MAX_HEADER_BYTES:
        raise ValueError(
            f"{label}: the header claims {header_len:,} bytes, over the {MAX_HEADER_BYTES:,} "
            "byte limit for a header"
        )
    try:
        header = json.loads(_read_exactly(fh, header_len, label).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError(f"{label}: not a valid .safetensors file (bad JSON header)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{label}: not a valid .safetensors file (bad JSON header)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if key is None:
        if len(tensors) != 1:
            names = ", ".join(_shown(k, 30) for k in sorted(tensors)[:10])
            raise ValueError(
                f"{label}: holds {len(tensors)} tensors ({names}); say which one to load"
            )
        key = next(iter(tensors))
    entry = tensors.get(key)
    if not isinstance(entry, dict):
        raise ValueError(f"{label}: no tensor named {_shown(str(key), 40)}")
    kind = entry.get("dtype")
    if kind not in SAFETENSORS_DTYPES:
        raise ValueError(f"{label}: dtype {_shown(str(kind), 20)} is not a real number type")
    itemsize, np_dtype = SAFETENSORS_DTYPES[kind]
    shape = _checked_shape(entry.get("shape"), label)
    offsets = entry.get("data_offsets")
    count = math.prod(shape)
    if count * 8 > max_bytes:  # checked from the header, before any tensor data is read
        raise _over(label, f"the header's shape {shape} claims", count * 8, max_bytes)
    if (
        not isinstance(offsets, list | tuple)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
        or offsets[1] - offsets[0] != count * itemsize
    ):
        raise ValueError(f"{label}: the tensor's data offsets do not match its shape and dtype")
    start = 8 + header_len + offsets[0]
    try:
        fh.seek(start)
    except (OSError, AttributeError, io.UnsupportedOperation):
        _read_exactly(fh, offsets[0], label)  # a stream: skip forward by reading
    data = _read_exactly(fh, count * itemsize, label)
    array = np.frombuffer(data, dtype=np_dtype, count=count)
    if kind == "BF16":  # bfloat16 is the top half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.reshape(shape)


_READERS = {".npy": _read_npy, ".csv": _read_csv, ".safetensors": _read_safetensors}
