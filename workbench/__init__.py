"""workbench: interactive labs that reproduce results from computational-science papers.

Importing the package is deliberately light: no Panel, CuPy, HoloViews or Dask is imported here.
The array backend is chosen lazily by :mod:`workbench.backend` on first use.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
