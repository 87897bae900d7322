"""One module per lab: a param ``Study`` plus its compute functions.

``LAB_INFO`` describes every lab without importing it (the landing page and the CLI read it);
:func:`study_class` imports a lab on demand.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class LabInfo:
    name: str
    title: str
    paper: str
    summary: str
    study: str  # class name inside workbench.labs.<name>


LAB_INFO: dict[str, LabInfo] = {
    "kde": LabInfo(
        name="kde",
        title="Kernel density estimation in large dimensions",
        paper="Biroli & Mézard, Kernel Density Estimators in Large Dimensions (arXiv 2408.05807)",
        summary=(
            "With n = e^{αd} Gaussian points in d dimensions, lowering the bandwidth h takes the "
            "estimator from the central-limit regime through a heavy-tailed (α-stable) regime into "
            "a condensed regime where a few nearest points dominate. Sweep h and watch KL/d, the "
            "participation ratio and the distribution of log ρ̂ change; the KL-optimal bandwidth "
            "sits below the CLT threshold, outside classical bandwidth theory."
        ),
        study="KDEStudy",
    ),
    "quadrature": LabInfo(
        name="quadrature",
        title="Computation inside integral reinforcement learning",
        paper="Cao & Pan, Impact of Computation in Integral RL for Continuous-Time Control (ICLR 2024)",
        summary=(
            "Policy iteration is Newton's method on the HJB equation, but each step integrates the "
            "running cost from N samples per interval. Watch Newton's quadratic convergence hit a "
            "floor set by the quadrature rule: O(N^-2) for the trapezoid rule, O(N^-b) for Bayesian "
            "quadrature with a Matérn kernel of Sobolev order b, and a plateau from GP jitter."
        ),
        study="QuadratureStudy",
    ),
}


def study_class(lab: str):
    """Import ``workbench.labs.<lab>`` and return its Study class."""
    if lab not in LAB_INFO:
        raise KeyError(f"unknown lab {lab!r}; choose one of {', '.join(LAB_INFO)}")
    module = importlib.import_module(f"workbench.labs.{lab}")
    return getattr(module, LAB_INFO[lab].study)
