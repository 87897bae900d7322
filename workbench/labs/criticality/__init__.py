"""Criticality lab: deep networks at initialization (Roberts, Yaida & Hanin 2022).

Infinite width: the kernel K^(l) and two inputs' correlation ρ^(l) flow layer by layer;
criticality (χ_∥ = χ_⊥ = 1) keeps them from exploding or vanishing; the (C_b, C_W) plane splits
into ordered and chaotic phases (Poole et al. 2016). Finite width: real random networks,
batched, show the excess kurtosis growing with L/n. Public API (issue 9, lab brief
``shared/science/criticality.md``):

* :func:`kernel_flow`, :func:`correlation_flow`, :func:`susceptibilities`, :func:`critical_point`;
* :func:`sample_preactivations` (networks, width) and :func:`excess_kurtosis` (pooled);
* :func:`critical_line`, :func:`fixed_point`, :func:`correlation_depth_scale`, :func:`ntk_flow`,
  :func:`vertex_flow`, :func:`kurtosis_exact_scale_invariant`, :func:`phase_diagram`,
  :func:`sample_second_moments` (the exact O(S n L) sampler);
* :class:`CriticalityStudy`, the lab's Study.

Figures live in :mod:`workbench.labs.criticality.figures` (not imported here: it needs HoloViews).

>>> from workbench.labs import criticality
>>> criticality.critical_point("relu")
(0.0, 2.0)
"""

from workbench.labs.criticality.activations import ACTIVATIONS
from workbench.labs.criticality.montecarlo import (
    excess_kurtosis,
    kurtosis_from_second_moments,
    kurtosis_with_error,
    run_networks,
    sample_preactivations,
    sample_second_moments,
)
from workbench.labs.criticality.phases import critical_line_curve, phase_diagram
from workbench.labs.criticality.study import CriticalityStudy
from workbench.labs.criticality.theory import (
    chi_one,
    correlation_depth_scale,
    correlation_flow,
    critical_line,
    critical_point,
    fixed_point,
    kernel_flow,
    kurtosis_exact_scale_invariant,
    ntk_flow,
    susceptibilities,
    vertex_flow,
)

__all__ = [
    "ACTIVATIONS",
    "CriticalityStudy",
    "chi_one",
    "correlation_depth_scale",
    "correlation_flow",
    "critical_line",
    "critical_line_curve",
    "critical_point",
    "excess_kurtosis",
    "fixed_point",
    "kernel_flow",
    "kurtosis_exact_scale_invariant",
    "kurtosis_from_second_moments",
    "kurtosis_with_error",
    "ntk_flow",
    "phase_diagram",
    "run_networks",
    "sample_preactivations",
    "sample_second_moments",
    "susceptibilities",
    "vertex_flow",
]
