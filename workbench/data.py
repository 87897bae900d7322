"""One loader for every user-supplied array (uploads in a page, paths in the CLI and notebooks).

:func:`load_array` reads ``.npy`` and ``.csv`` (and ``.safetensors`` when the ``safetensors``
package is installed) into a finite, numeric NumPy array, and refuses anything else with a
plain :class:`ValueError`: pickled objects (``allow_pickle=False``: loading a pickle runs code),
truncated files, headers that claim more than ``max_bytes`` (checked *before* any data is read),
non-numeric or ragged CSV, the wrong number of dimensions, NaN or infinity.

>>> import io, numpy as np
>>> buf = io.BytesIO(); np.save(buf, np.eye(2)); _ = buf.seek(0)
>>> load_array(buf, name="eye.npy").tolist()
[[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import IO, Any

import numpy as np

#: Default cap on the bytes of one array (512 MiB).
MAX_BYTES = 512 * 2**20
SUFFIXES = (".npy", ".csv", ".safetensors")


def load_array(
    source: str | os.PathLike | IO[bytes],
    *,
    max_bytes: int = MAX_BYTES,
    ndim: int | tuple[int, ...] = (1, 2, 3),
    name: str | None = None,
) -> np.ndarray:
    """Load a numeric array from a path or a binary file object (``name`` gives its type).

    Returns a float64 array (C order). Raises ``ValueError`` with a message for a person.
    """
    label = name or (str(source) if isinstance(source, str | os.PathLike) else "upload")
    suffix = Path(label).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{Path(label).name}: use a .npy, .csv or .safetensors file")
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{label}: no such file")
        if path.stat().st_size > max_bytes + 4096:
            raise ValueError(f"{path.name}: the file is over the {_mib(max_bytes)} limit")
        with open(path, "rb") as fh:
            array = _read(fh, suffix, max_bytes, label)
    else:
        array = _read(source, suffix, max_bytes, label)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if array.ndim not in allowed:
        raise ValueError(
            f"{label}: expected an array with {' or '.join(map(str, allowed))} dimensions, "
            f"got shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"{label}: the array is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{label}: the array contains NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float64)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _read(fh: IO[bytes], suffix: str, max_bytes: int, label: str) -> np.ndarray:
    if suffix == ".npy":
        return _read_npy(fh, max_bytes, label)
    if suffix == ".csv":
        return _read_csv(fh, max_bytes, label)
    return _read_safetensors(fh, max_bytes, label)


def _read_npy(fh: IO[bytes], max_bytes: int, label: str) -> np.ndarray:
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(fh)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
    except (ValueError, OSError, SyntaxError) as exc:
        raise ValueError(f"{label}: not a valid .npy file ({exc})") from None
    if dtype.hasobject:
        raise ValueError(f"{label}: holds Python objects (a pickle); only numeric arrays are read")
    if dtype.kind not in "biuf":
        raise ValueError(f"{label}: dtype {dtype} is not numeric")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes > max_bytes:
        raise ValueError(
            f"{label}: the header claims {nbytes / 2**20:,.0f} MiB of data, over the "
            f"{_mib(max_bytes)} limit"
        )
    data = fh.read(nbytes + 1)
    if len(data) < nbytes:
        raise ValueError(f"{label}: the file is truncated ({len(data)} of {nbytes} data bytes)")
    array = np.frombuffer(data[:nbytes], dtype=dtype)
    return array.reshape(shape, order="F" if fortran else "C")


def _read_csv(fh: IO[bytes], max_bytes: int, label: str) -> np.ndarray:
    raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ValueError(f"{label}: the file is over the {_mib(max_bytes)} limit")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{label}: not a UTF-8 text file") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header line
    width = {len(r) for r in rows}
    if len(width) > 1:
        raise ValueError(f"{label}: rows have different numbers of columns ({sorted(width)})")
    try:
        values = [[float(c) for c in r] for r in rows]
    except ValueError:
        raise ValueError(f"{label}: every value must be a number (samples × dims)") from None
    return np.array(values, dtype=np.float64)


def _numeric(row: list[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


def _read_safetensors(fh: IO[bytes], max_bytes: int, label: str) -> Any:
    try:
        from safetensors.numpy import load  # noqa: PLC0415 - optional
    except ImportError:
        raise ValueError(f"{label}: .safetensors needs the safetensors package") from None
    raw = fh.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ValueError(f"{label}: the file is over the {_mib(max_bytes)} limit")
    try:
        tensors = load(raw)
    except Exception as exc:  # the parser's own errors vary by version
        raise ValueError(f"{label}: not a valid .safetensors file ({exc})") from None
    if len(tensors) != 1:
        raise ValueError(f"{label}: expected one tensor, found {len(tensors)}: {sorted(tensors)}")
    return next(iter(tensors.values()))
