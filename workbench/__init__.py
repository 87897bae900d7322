"""workbench: interactive labs that reproduce results from computational-science papers.

Importing the package is deliberately light: no Panel, CuPy, HoloViews or Dask is imported here.
The array backend is chosen lazily by :mod:`workbench.backend` on first use.
"""

__version__ = "0.1.0"

#: Labs in the order the landing page lists them; each is ``workbench.labs.<name>``.
LABS = ("kde", "quadrature")  # mirrors workbench.labs.LAB_INFO

__all__ = ["LABS", "__version__"]
