"""The command line: sweep writes valid NetCDF/CSV, bad input is a message and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import xarray as xr

from workbench.cli import main


def test_sweep_kde_writes_netcdf_with_bandwidth_dim(tmp_path, cache_dir):
    out = tmp_path / "s.nc"
    code = main(
        [
            "sweep",
            "kde",
            "--set",
            "bandwidth=0.5,1.0,2.0",
            "--set",
            "dim=8",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    ds = xr.load_dataset(out)
    np.testing.assert_allclose(ds["bandwidth"], [0.5, 1.0, 2.0])
    kl = ds["kl_per_dim"].squeeze()
    assert kl.dims == ("bandwidth",) and np.all(np.isfinite(kl))
    assert ds.attrs["lab"] == "kde"


def test_sweep_resumes_from_cache(tmp_path, cache_dir):
    args = ["sweep", "kde", "--set", "bandwidth=0.7,1.4", "--set", "dim=6", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a.nc")]) == 0
    cached = sorted((cache_dir / "kde").glob("*.nc"))
    assert len(cached) == 2
    mtimes = [p.stat().st_mtime_ns for p in cached]
    assert main([*args, "--out", str(tmp_path / "b.csv")]) == 0
    assert [p.stat().st_mtime_ns for p in cached] == mtimes  # nothing recomputed or rewritten
    header = (tmp_path / "b.csv").read_text().splitlines()[0]
    assert header.startswith("bandwidth,dim")


def test_bad_input_is_a_message_not_a_traceback(tmp_path, capsys, cache_dir):
    assert main(["sweep", "kde", "--set", "bandwidth=-1", "--out", str(tmp_path / "x.nc")]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "between 0.001 and 100" in err and "Traceback" not in err
    assert "bandwidth" in err.lower()
    assert main(["sweep", "nolab", "--set", "a=1", "--out", str(tmp_path / "x.nc")]) == 2
    assert "unknown lab" in capsys.readouterr().err
    assert main(["sweep", "kde", "--set", "bandwidth=1", "--out", str(tmp_path / "x.txt")]) == 2
    assert not (tmp_path / "x.nc").exists()


def test_info_names_backend_and_labs():
    result = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "info"], capture_output=True, text=True, check=True
    )
    assert "backend: numpy" in result.stdout or "backend: cupy" in result.stdout
    assert "kde" in result.stdout and "quadrature" in result.stdout


def test_import_workbench_stays_light():
    code = "import sys, workbench, workbench.sweep, workbench.cli; print(sorted(m for m in ('panel','cupy','dask','holoviews') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
