"""Command line: ``workbench serve | sweep | info``.

``serve`` starts the Panel server with the landing page at ``/`` and each lab at ``/<lab>``;
``sweep`` runs a lab over a grid and writes NetCDF or CSV; ``info`` prints versions and device.
Panel is imported only inside ``serve`` so the other commands stay fast.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.labs import registry, study_class
from workbench.study import StudyInputError

#: The most values one ``--set`` may list (a user-controlled size).
MAX_VALUES_PER_KNOB = 1000


def _parse_sets(items: list[str]) -> dict[str, list]:
    from workbench.sweep import iter_values

    grid: dict[str, list] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise StudyInputError(f"--set expects name=v1,v2,...; got {item!r}")
        values = list(iter_values(text))
        if not values:
            raise StudyInputError(f"--set {name}: no values given")
        if len(values) > MAX_VALUES_PER_KNOB:
            raise StudyInputError(f"--set {name}: at most {MAX_VALUES_PER_KNOB} values")
        grid[name.strip()] = values
    return grid


@contextmanager
def _ctrl_c_stops_the_sweep() -> Iterator[tuple[Callable[[int, int], None], threading.Event]]:
    """Make Ctrl-C stop a sweep even when Python swallows the KeyboardInterrupt.

    Python raises KeyboardInterrupt wherever the main thread happens to be; inside a weakref
    callback or a ``__del__`` (xarray, h5py and Dask all run some) it is printed as "Exception
    ignored" and lost, and the sweep would run to its end. The handler also records the signal
    in an event: the Dask executor polls it while it waits (so it stops within 50 ms), and the
    progress callback yielded here raises KeyboardInterrupt again from the sweep's own loop at
    the next finished point (in-process sweeps).
    """
    interrupted = threading.Event()

    def on_sigint(_signum, _frame):
        interrupted.set()
        raise KeyboardInterrupt

    def progress(_done: int, _total: int) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield progress, interrupted  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield progress, interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_sweep(args: argparse.Namespace) -> int:
    from workbench import sweep

    if args.lab not in registry():
        raise StudyInputError(f"unknown lab {args.lab!r}; choose one of {', '.join(registry())}")
    grid = _parse_sets(args.set)
    if not grid:
        raise StudyInputError("give at least one --set name=v1,v2,... to sweep")
    study = study_class(args.lab)()
    out = Path(args.out)
    if out.suffix.lower() not in {".nc", ".csv"}:
        raise StudyInputError(f"--out must end in .nc or .csv, got {out.name!r}")
    from workbench.executors import resolve_scheduler

    scheduler = resolve_scheduler(args.scheduler)  # --scheduler, else $DASK_SCHEDULER_ADDRESS
    with _ctrl_c_stops_the_sweep() as (progress, interrupted):
        kwargs = dict(
            cache_dir=args.cache_dir,
            use_cache=not args.no_cache,
            show_progress=None if not args.quiet else False,
            progress=progress,
        )
        if scheduler:
            from workbench.executors import DaskExecutor

            if not args.quiet:
                print(f"workbench: sweeping on Dask ({scheduler})", file=sys.stderr)
            # The with-block closes the client (the scheduler drops its queued work) and stops
            # a LocalCluster it started, on Ctrl-C as on success.
            with DaskExecutor(scheduler, interrupt=interrupted) as executor:
                ds = sweep.run(study, grid, executor=executor, **kwargs)
        else:
            ds = sweep.run(study, grid, **kwargs)
    if out.suffix.lower() == ".nc":
        sweep.to_netcdf(ds, out)
    else:
        sweep.to_csv(ds, out)
    dims = ", ".join(f"{k}={v}" for k, v in ds.sizes.items())
    print(f"wrote {out} ({dims}; variables: {', '.join(ds.data_vars)})")
    return 0


def cmd_info(_args: argparse.Namespace) -> int:
    from importlib.metadata import PackageNotFoundError, version

    import workbench
    from workbench.backend import device_description

    print(f"workbench {workbench.__version__}")
    for key, value in device_description().items():
        print(f"{key:>10}: {value}")
    for pkg in ("scipy", "xarray", "param", "panel", "holoviews", "bokeh"):
        try:
            print(f"{pkg:>10}: {version(pkg)}")
        except PackageNotFoundError:
            print(f"{pkg:>10}: not installed")
    for name, info in registry().items():
        print(f"{'lab':>10}: {name}: {info.title} ({info.paper_url or info.paper})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from apps.server import serve  # noqa: PLC0415 - Panel only when serving

    serve(port=args.port, address=args.address, show=args.show, procs=args.procs)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the dashboards (landing page at /, labs at /<lab>)")
    serve.add_argument("--port", type=int, default=5006, help="port (default 5006; 0 picks one)")
    serve.add_argument(
        "--address", default="127.0.0.1", help="interface to bind (default 127.0.0.1: local only)"
    )
    serve.add_argument("--show", action="store_true", help="open a browser tab")
    serve.add_argument(
        "--procs",
        type=int,
        default=1,
        help="worker processes sharing the port (default 1; 0: one per core). For a class, "
        "use 2 or more: each process serves its own sessions with its own event loop (30 "
        "sessions on 2 cores: p50 1.1-1.9 s with 2, 3.1-5.4 s with 1; README)",
    )
    serve.set_defaults(func=cmd_serve)

    sw = sub.add_parser("sweep", help="run a lab over a grid of parameter values")
    sw.add_argument("lab", help=f"one of: {', '.join(registry())}")
    sw.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="values of one parameter; several --set give a Cartesian grid",
    )
    sw.add_argument("--out", required=True, help="output file, .nc (NetCDF) or .csv")
    sw.add_argument("--cache-dir", default=None, help="point cache (default ~/.cache/workbench)")
    sw.add_argument("--no-cache", action="store_true", help="recompute every point")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.add_argument(
        "--scheduler",
        default=None,
        metavar="tcp://HOST:PORT|local",
        help="run on Dask: tcp://host:8786 uses a running scheduler, 'local' starts a "
        "LocalCluster of 2 worker processes (default: $DASK_SCHEDULER_ADDRESS if set, "
        "else in this process)",
    )
    sw.set_defaults(func=cmd_sweep)

    info = sub.add_parser("info", help="versions, backend and device")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StudyInputError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted (finished sweep points are cached)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
