"""The (C_b, C_W) phase diagram, vectorised over the whole grid.

For each C_W the fixed-point condition C_b = g(q) = q − C_W⟨σ²⟩_q is explicit in q, so with
⟨σ²⟩_q, ⟨σ'²⟩_q tabulated once on a fine q grid (300-node Gauss–Hermite), the stable fixed point
q*(C_b, C_W) is the root of g on its increasing branch (χ_∥ < 1), found for every cell at once
by a vectorised bisection over the table's index. χ₁ = C_W⟨σ'²⟩_{q*} (linear interpolation in
the table), ordered where χ₁ < 1, chaotic where χ₁ > 1, and "divergent" where q* exceeds the
table (the kernel grows without bound, e.g. ReLU with C_W > 2).

Colour: ξ = 1/|log χ₁|, the depth over which a small perpendicular perturbation shrinks (ordered;
there it equals the correlation depth ξ_c of Schoenholz et al.) or grows (chaotic; ξ_c at the
chaotic fixed point c* < 1 is computed for the current point only, by
:func:`~workbench.labs.criticality.theory.correlation_depth_scale`).
"""

from __future__ import annotations

import functools

import numpy as np
import xarray as xr

from workbench.labs.criticality.activations import SCALE_INVARIANT, check_activation, gauss_moments

#: Fixed points above this are reported as "the kernel diverges".
Q_MAX = 1e3
#: Colour cap on ξ (it diverges on the critical line).
XI_CAP = 1e3
REGIMES = ("ordered (χ₁ < 1)", "chaotic (χ₁ > 1)", "K diverges")


@functools.cache
def _table(activation: str) -> tuple[np.ndarray, ...]:
    """q, ⟨σ²⟩_q, ⟨σ'²⟩_q, d⟨σ²⟩/dq on a fine q grid (computed once per activation)."""
    q = np.concatenate([[0.0], np.geomspace(1e-8, Q_MAX, 3000)])
    m = gauss_moments(activation, q, nodes=301)
    return q, m["s2"], m["d2"], m["dk"]


def phase_diagram(
    activation: str,
    cb_range: tuple[float, float] = (0.0, 0.5),
    cw_range: tuple[float, float] = (0.05, 4.0),
    points: int = 200,
) -> xr.Dataset:
    """q*, χ₁, ξ and the regime on a ``points`` × ``points`` (C_b, C_W) grid, plus the critical line."""
    key = check_activation(activation)
    cb = np.linspace(*cb_range, points)
    cw = np.linspace(*cw_range, points)
    q, s2, d2, _ = _table(key)
    g = q[None, :] - cw[:, None] * s2[None, :]  # (cw, q)
    start = np.argmin(g, axis=1)  # g increases beyond its minimum: the stable branch
    lo = np.broadcast_to(start[:, None], (points, points)).copy()  # (cw, cb)
    hi = np.full((points, points), q.size - 1)
    target = cb[None, :]
    rows = np.arange(points)[:, None]
    diverges = g[rows, hi] < target
    # Bisection on the index: g[row, lo] <= cb < g[row, hi] on the increasing branch.
    for _ in range(int(np.ceil(np.log2(q.size))) + 1):
        mid = (lo + hi) // 2
        below = g[rows, mid] <= target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    g_lo, g_hi = g[rows, lo], g[rows, hi]
    t = np.clip((target - g_lo) / np.where(g_hi > g_lo, g_hi - g_lo, 1.0), 0.0, 1.0)
    qstar = q[lo] + t * (q[hi] - q[lo])
    # C_b = 0 with q = 0 the minimum of g: K* = 0 (the K* = 0 class, e.g. tanh with C_W ≤ 1).
    qstar = np.where((target == 0) & (start[:, None] == 0), 0.0, qstar)
    d2star = d2[lo] + t * (d2[hi] - d2[lo])
    chi1 = cw[:, None] * d2star
    qstar = np.where(diverges, np.inf, qstar)
    chi1 = np.where(diverges, np.nan, chi1)
    with np.errstate(divide="ignore"):
        xi = np.minimum(1.0 / np.abs(np.log(chi1)), XI_CAP)
    regime = np.where(diverges, 2, np.where(chi1 > 1, 1, 0))
    line_cb, line_cw = critical_line_curve(key, cb_range)
    ds = xr.Dataset(
        {
            "q_star": (("cw", "cb"), qstar),
            "chi1": (("cw", "cb"), chi1),
            "xi": (("cw", "cb"), xi),
            "regime": (("cw", "cb"), regime),
            "line_cw": (("line",), line_cw),
            "line_cb": (("line",), line_cb),
        },
        coords={"cb": cb, "cw": cw},
    )
    for name, units, long in (
        ("q_star", "1", "fixed point q* (K* of one input)"),
        ("chi1", "1", "χ₁ = C_W⟨σ'²⟩ at q*"),
        ("xi", "layers", "depth scale ξ = 1/|log χ₁| (capped)"),
        ("regime", "1", "0 ordered, 1 chaotic, 2 K diverges"),
        ("line_cw", "1", "critical line C_W"),
        ("line_cb", "1", "critical line C_b"),
        ("cb", "1", "bias variance C_b"),
        ("cw", "1", "weight variance C_W"),
    ):
        ds[name].attrs.update(units=units, long_name=long)
    ds.attrs.update(activation=key, regimes="; ".join(REGIMES), xi_cap=XI_CAP)
    return ds


def critical_line_curve(activation: str, cb_range=(0.0, 0.5), points: int = 400):
    """(C_b, C_W) along χ₁ = 1: C_W(q) = 1/⟨σ'²⟩_q, C_b(q) = q − C_W⟨σ²⟩_q, kept where C_b is
    in range and the fixed point is stable (χ_∥ < 1)."""
    key = check_activation(activation)
    if key in SCALE_INVARIANT:
        cw = 1.0 / float(gauss_moments(key, 1.0)["d2"])
        return np.array(cb_range, float), np.array([cw, cw])
    q, s2, d2, dk = _table(key)
    cw = 1.0 / d2
    cb = q - cw * s2
    keep = (cb >= cb_range[0] - 1e-12) & (cb <= cb_range[1]) & (cw * dk < 1 + 1e-9)
    return cb[keep], cw[keep]
