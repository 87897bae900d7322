"""Grid sweeps over a Study's parameters -> one labelled :class:`xarray.Dataset`.

``run(study, grid)`` evaluates every point of a Cartesian grid (``{"name": [v1, v2, ...]}``) or
of an explicit list of points (``[{"a": 1, "b": 2}, ...]``). Finished points are cached on disk
under a key of (lab, every parameter value, code version), each written atomically, so an
interrupted sweep resumes where it stopped. Parameters the Study lists in ``vectorized`` are
evaluated in one call per combination of the other parameters (one GEMM for all bandwidths).

Executors are a small interface (``map_unordered(fn, tasks)`` yielding ``(task_index, result)``
pairs as tasks finish): in-process by default, Dask in :mod:`workbench.executors`; anything with
the same method can be passed. Results are cached by this process as they arrive, so an executor
that loses a worker, or a sweep killed outright, loses no finished point.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import xarray as xr

from workbench.study import Study, StudyInputError

ProgressCallback = Callable[[int, int], None]

#: Upper bound on points in one sweep: a user-controlled size, so it is bounded.
MAX_POINTS = 100_000


class Executor(Protocol):
    """Runs sweep tasks. ``map_unordered(fn, tasks)`` yields ``(index, fn(tasks[index]))`` pairs
    as they finish, in any order: results are keyed by task index, never by position."""

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]: ...


class InProcessExecutor:
    """Evaluate tasks one after another in this process (the default)."""

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        for index, task in enumerate(tasks):
            yield index, fn(task)


def default_cache_dir() -> Path:
    """``$WORKBENCH_CACHE`` or ``~/.cache/workbench``."""
    env = os.environ.get("WORKBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "workbench"


def _jsonable(value: Any) -> Any:
    """NumPy scalars as Python numbers, so a key does not depend on where a value came from."""
    return value.item() if isinstance(value, np.generic) else value


def point_key(lab: str, values: Mapping[str, Any], code_version: str) -> str:
    """Stable cache key for one evaluated point."""
    payload = json.dumps(
        {"lab": lab, "code": code_version, "params": {k: _jsonable(v) for k, v in values.items()}},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _write_atomically(ds: xr.Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".nc.part")
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)  # atomic on POSIX: a reader sees the old file or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _axis(values: Any) -> list[Any]:
    """One swept knob's values: a list, tuple, range or 1-D array lists them; anything else
    (a number, a string) is a single value. Elements are kept whole, so a knob whose values are
    tuples is swept over ``[(0, 0, 0), (1, 1, 1)]`` (``np.asarray`` would split them)."""
    if isinstance(values, np.ndarray):
        return list(values) if values.ndim else [values.item()]
    if isinstance(values, list | tuple | range):
        return list(values)
    return [values]


def _grid_points(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]):
    """(swept names, list of point dicts, nested shape or None for an explicit list)."""
    if isinstance(grid, Mapping):
        names = list(grid)
        axes = [_axis(grid[n]) for n in names]
        if any(len(a) == 0 for a in axes):
            raise StudyInputError("every swept parameter needs at least one value")
        size = math.prod(len(a) for a in axes)
        if size > MAX_POINTS:  # refuse before building the product (10^9 dicts would not fit)
            raise StudyInputError(
                f"the grid has {size:,} points ({' × '.join(str(len(a)) for a in axes)}); "
                f"a sweep is capped at {MAX_POINTS:,} points"
            )
        points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
        return names, points, [len(a) for a in axes]
    points = [dict(p) for p in itertools.islice(grid, MAX_POINTS + 1)]
    if len(points) > MAX_POINTS:
        raise StudyInputError(f"more than {MAX_POINTS:,} points given; a sweep is capped there")
    if not points:
        raise StudyInputError("the list of points is empty")
    names = sorted({k for p in points for k in p})
    return names, points, None


def _evaluate_task(task: tuple[type[Study], dict[str, Any], str | None, list[Any]]) -> xr.Dataset:
    """Run one task: a Study class, fixed values, and optionally one vectorized axis."""
    study_cls, fixed, vec_name, vec_values = task
    study = study_cls(**fixed)
    if vec_name is None:
        return study.evaluate()
    return study.evaluate(**{vec_name: vec_values})


def run(
    study: Study,
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    *,
    executor: Executor | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
    show_progress: bool | None = None,
) -> xr.Dataset:
    """Evaluate ``study`` over ``grid`` and return one Dataset with a dim per swept parameter.

    Parameters
    ----------
    study
        Supplies the lab and the values of every parameter that is not swept.
    grid
        ``{"bandwidth": [0.5, 1.0]}`` (Cartesian product over keys, dims in key order) or a list
        of point dicts (then the result has a ``point`` dim with each parameter as a coordinate).
    executor
        Anything with ``map_unordered(fn, tasks)`` (see :class:`Executor`); defaults to
        :class:`InProcessExecutor`; :class:`workbench.executors.DaskExecutor` runs on Dask.
    cache_dir, use_cache
        Where finished points are stored (default :func:`default_cache_dir`).
    progress
        ``progress(done, total)`` after every finished point (apps drive a progress bar with it).
    show_progress
        tqdm bar; default: only when stderr is a terminal.
    """
    names, points, shape = _grid_points(grid)  # refuses more than MAX_POINTS points
    base = study.values()
    full_points = []
    for p in points:
        # validate on a copy so ``study`` itself is left untouched
        candidate = type(study)(**base)
        candidate.checked_update(**p)  # bounds/type checks with a user-facing message
        full_points.append(candidate.values())

    lab, version = study.lab, type(study).code_version()
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    keys = [point_key(lab, v, version) for v in full_points]
    paths = [cache_root / lab / f"{k}.nc" for k in keys]
    results: list[xr.Dataset | None] = [None] * len(points)
    if use_cache:
        for i, path in enumerate(paths):
            if path.exists():
                try:
                    results[i] = xr.load_dataset(path, engine="h5netcdf")
                except (OSError, ValueError, KeyError):
                    # A corrupt or truncated file is recomputed. Anything else (a missing
                    # engine, a bug) propagates: it must not silently wipe the cache.
                    path.unlink(missing_ok=True)

    # Group the missing points into tasks; a vectorized swept parameter becomes one task per
    # combination of the others.
    vec_name = next((n for n in names if n in type(study).vectorized), None)
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for i, values in enumerate(full_points):
        if results[i] is not None:
            continue
        fixed = {k: v for k, v in values.items() if k != vec_name}
        gkey = json.dumps({k: _jsonable(v) for k, v in fixed.items()}, sort_keys=True, default=str)
        groups.setdefault(gkey if vec_name else str(i), (fixed, []))[1].append(i)
    tasks, task_members = [], []
    for fixed, members in groups.values():
        vec_values = [full_points[i][vec_name] for i in members] if vec_name else []
        tasks.append(
            (type(study), fixed if vec_name else full_points[members[0]], vec_name, vec_values)
        )
        task_members.append(members)

    total = len(points)
    done = total - sum(len(m) for m in task_members)
    bar = None
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=done, desc=f"sweep {lab}", unit="pt")
    if progress:
        progress(done, total)
    executor = executor or InProcessExecutor()
    finished = executor.map_unordered(_evaluate_task, tasks)
    try:
        for index, ds in finished:
            members = task_members[index]
            for j, i in enumerate(members):
                point_ds = ds.isel({vec_name: j}) if vec_name else ds
                if use_cache:
                    _write_atomically(point_ds, paths[i])
                results[i] = point_ds
            done += len(members)
            if bar is not None:
                bar.update(len(members))
            if progress:
                progress(done, total)
    finally:
        # Close the executor's stream now, not when the garbage collector gets to it: on Ctrl-C
        # or an error a Dask executor cancels the work still queued on the cluster.
        close = getattr(finished, "close", None)
        if close is not None:
            close()
        if bar is not None:
            bar.close()
    return _assemble(results, points, names, shape, lab, version)


def _assemble(results, points, names, shape, lab, version) -> xr.Dataset:
    stamped = []
    for ds, p in zip(results, points, strict=True):
        ds = ds.drop_vars([n for n in names if n in ds.variables])
        stamped.append(ds.assign_coords({n: p[n] for n in names}))
    if shape is None:
        out = xr.concat(stamped, dim="point", coords="different", compat="equals", join="outer")
    else:
        nested: Any = np.empty(shape, dtype=object)
        for idx, ds in zip(np.ndindex(*shape), stamped, strict=True):
            nested[idx] = ds
        # join="outer": points may differ in ragged dims (PI iterations, samples); pad with NaN.
        out = xr.combine_nested(
            nested.tolist(), concat_dim=names, coords="different", compat="equals", join="outer"
        )
        out = out.transpose(*names, ...)
    out.attrs.update({"lab": lab, "code_version": version, "swept": ",".join(names)})
    return out


def to_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to NetCDF atomically and return the path."""
    path = Path(path)
    _write_atomically(ds, path)
    return path


def to_csv(
    ds: xr.Dataset, path: str | os.PathLike | None = None, *, header: dict | None = None
) -> str | None:
    """Write ``ds`` as CSV (returns the text if ``path`` is None).

    ``header``: settings written first as ``# name = value`` comment lines (a page export puts
    the knob values there, so the file says what it was computed for); read it back with
    ``pandas.read_csv(path, comment="#")``.

    When every variable has the same dims, one wide table: a row per coordinate tuple, a column
    per variable. When dims differ (a per-iteration error beside a per-sample trajectory), a
    wide table would be the Cartesian product of all dims, so the table is long instead: one
    row per value, with ``variable``, each dim's coordinate (empty where it does not apply) and
    ``value``; its size is the number of values, never more.
    """
    import pandas as pd

    if header:
        lines = "".join(f"# {name} = {_one_line(value)}\n" for name, value in header.items())
        text = to_csv(ds)
        if path is None:
            return lines + text
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(lines + text)
        return None
    swept = [d for d in ds.attrs.get("swept", "").split(",") if d in ds.dims]
    dim_order = swept + [d for d in ds.dims if d not in swept]
    if len({frozenset(ds[v].dims) for v in ds.data_vars}) <= 1:
        table = ds.to_dataframe(dim_order=[d for d in dim_order if d in ds.dims])
        return table.to_csv(path) if path is not None else table.to_csv()
    frames = []
    for name in ds.data_vars:
        var = ds[name]
        order = [d for d in dim_order if d in var.dims]
        frame = (
            var.transpose(*order).to_series().rename("value").reset_index()
            if order
            else (pd.DataFrame({"value": [var.values.item()]}))
        )
        # object columns: integer coordinates stay integers beside the blanks of other variables
        frames.append(frame.astype({d: object for d in order}).assign(variable=name))
    table = pd.concat(frames, ignore_index=True)
    table = table[["variable", *[d for d in dim_order if d in table.columns], "value"]]
    return table.to_csv(path, index=False) if path is not None else table.to_csv(index=False)


def iter_values(text: str) -> Iterable[Any]:
    """Parse ``"0.5,1,2"`` from the CLI into numbers (ints stay ints), strings otherwise."""
    for token in text.split(","):
        token = token.strip()
        if not token:
            continue
        try:
            yield int(token)
        except ValueError:
            try:
                yield float(token)
            except ValueError:
                yield token


def _one_line(value: object) -> str:
    """A header value on one line (a newline in a value would end the comment)."""
    return " ".join(str(value).split())
