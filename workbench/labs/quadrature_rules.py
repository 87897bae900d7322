"""Old import path of the quadrature rules: ``workbench.labs.quadrature.rules`` (kept for links
and scripts written before the lab became a package)."""

from workbench.labs.quadrature.rules import *  # noqa: F403
from workbench.labs.quadrature.rules import (  # noqa: F401 - private helpers some scripts used
    MATERN_COEFFICIENTS,
    kernel_matrices,
    matern_double_mean,
    matern_kernel,
    matern_kernel_mean,
    nodes,
    wiener_double_mean,
    wiener_kernel,
    wiener_kernel_mean,
)
