"""Every line on a histogram has a legend entry (Bokeh Spans have none, so markers are curves)."""

from __future__ import annotations

import numpy as np
import pytest

from workbench import plots

hv = pytest.importorskip("holoviews")


def test_histogram_markers_have_legend_entries_and_span_the_bars():
    from workbench import plots

    hv.extension("bokeh", logo=False)
    samples = np.random.default_rng(0).standard_normal(500)
    fig = plots.distribution(samples, xlabel="x", markers={"theory": 0.1, "sample mean": -0.05})
    rendered = hv.render(fig)
    labels = [item.label["value"] for item in rendered.legend[0].items]
    assert labels == ["theory", "sample mean"]
    density, _ = np.histogram(samples, bins=40, density=True)
    for curve in list(fig)[1:]:
        xs, ys = curve.dframe().iloc[:, 0], curve.dframe().iloc[:, 1]
        assert xs.nunique() == 1 and ys.min() == 0 and ys.max() >= density.max()


# --- every lab's figures at its Study's defaults, as a 1400 px page shows them -------------------
# What is checked (tests/legend_audit.py): a legend never lies over data (it sits outside the
# plot, or in a corner no line, point, bar or mesh reaches); every line of a plot with more than
# one has a legend entry (a Span counts when a legend line in its exact style stands for it);
# in a family of curves each dashed theory/target line has the colour of a curve; titles fit.
pytest.importorskip("panel")


def _render(element):
    return hv.renderer("bokeh").get_plot(element).state


def _criticality():
    from apps.criticality import CriticalityDashboard
    from workbench.labs.criticality import figures

    d = CriticalityDashboard()
    r, a, s = d.result, d.result["flows"].attrs, d.study
    crit = (a["critical_cb"], a["critical_cw"])
    return {
        "kernel": figures.kernel_flow(r["flows"]),
        "correlation": figures.correlation_flow(r["flows"]),
        "gradients": figures.gradients(r["flows"]),
        "phase": figures.phase_diagram(r["phase"], current=(s.cb, s.cw), critical=crit),
        "histogram": figures.preactivation_histogram(r["mc"]),
        "kurtosis": figures.kurtosis_vs_aspect(r["mc"]),
    }


def _fractional():
    from apps.fractional import FractionalDashboard
    from workbench.labs.fractional import figures

    d = FractionalDashboard()
    r, s = d.result, d.study
    return {
        "symbol": figures.symbol_with_eigenvalues(r["spectrum"]),
        "symbol_pi": figures.symbol_at_pi(r["symbol_pi"], current=(s.alpha, s.degree)),
        "cond": figures.condition_numbers(r["cond"]),
        "errors": figures.errors(r["errors"]),
        "counts": figures.iteration_counts(r["counts"]),
        "residual": figures.residual_histories({s.preconditioner: d.history}, "GMRES live"),
        "solution": figures.solution(d.solved),
        "error": figures.pointwise_error(d.solved),
    }


def _kvcache():
    from apps.kvcache import KVCacheDashboard
    from workbench.labs.kvcache import figures, pareto_points

    d = KVCacheDashboard()
    r, s = d.result, d.study
    here = r["here"].isel(bits=0, rank_k=0, rank_v=0)
    spectra = (r["spectra"], s.spectrum_layer, s.spectrum_head, s.centered)
    return {
        "spectrum": figures.spectrum_figure(*spectra),
        "energy": figures.energy_figure(*spectra),
        "rank": figures.rank_error_figure(r["ranks"], int(s.bits), (s.rank_k, s.rank_v)),
        "bits": figures.bits_error_figure(r["point"]),
        "pareto": figures.pareto_figure(
            r["grid"],
            pareto_points(r["grid"]),
            current=(float(here.memory_ratio), float(here.output_rel_error)),
        ),
        "sqnr": figures.sqnr_figure(r["sqnr"]),
    }


def _quadrature():
    from apps.quadrature import QuadratureDashboard

    names = ("pi", "error_vs_n", "weights", "worst_case", "trajectory", "gains")
    return dict(zip(names, QuadratureDashboard().figure(), strict=True))  # what the export holds


def _kde():
    from apps.kde import KDEDashboard
    from workbench.labs.kde import figures

    d = KDEDashboard()
    r, t = d.result, d.result["thresholds"]
    log_hat, log_true = r["samples"]
    kl = float(r["current"]["kl_per_dim_finite"][0])
    return {
        "kl": figures.kl_figure(r["sweep"], t),
        "participation": figures.participation_figure(r["sweep"], t),
        "regime": figures.regime_figure(r["regimes"]),
        "heavy_tail": figures.heavy_tail_figure(r["heavy"], t),
        "distribution": figures.distribution_figure(log_hat, log_true, d.study.dim, kl, r["h"]),
        "slice": figures.slice_figure(r["slice"]),
    }


LABS = {
    "criticality": _criticality,
    "fractional": _fractional,
    "kvcache": _kvcache,
    "quadrature": _quadrature,
    "kde": _kde,
}


@pytest.mark.parametrize("lab", list(LABS))
def test_every_figure_keeps_its_legend_off_the_data_and_its_title_in_view(lab):
    from apps import shell
    from tests import legend_audit

    shell.load_extensions()
    figures = LABS[lab]()
    assert len(figures) >= 6
    found = {}
    for name, element in figures.items():
        fig = _render(element)
        problems = legend_audit.legend_problems(fig) + legend_audit.theory_colour_problems(fig)
        if problems:
            found[name] = problems
        frame = legend_audit.frame_width(fig)
        assert frame >= 0.4 * legend_audit.PLOT_WIDTH, (name, frame)  # a legend beside leaves room
    assert not found, found


def test_the_audit_sees_a_covering_legend_a_lost_label_and_a_long_title():
    """The checks can fail: a legend in a corner the data reach, a Span without an entry, a
    mismatched theory colour and an over-long title are each reported."""
    from tests import legend_audit

    hv.extension("bokeh", logo=False)
    x = np.linspace(1, 10, 50)
    covering = (hv.Curve((x, x), label="rises") * hv.Curve((x, 11 - x), label="falls")).opts(
        legend_position="top_right", title="t"
    )
    assert any("covers" in p for p in legend_audit.legend_problems(_render(covering)))
    lost = hv.Curve((x, x), label="a") * hv.Curve((x, x**2), label="b") * hv.VLine(3.0)
    lost = lost.opts(legend_position="right")
    assert any("Span" in p for p in legend_audit.legend_problems(_render(lost)))
    colours = plots.curve_family(
        x, {"a": x, "b": 2 * x}, xlabel="x", ylabel="y", theory={"t": (x, x)}
    )
    assert legend_audit.theory_colour_problems(_render(colours))  # t took a third colour
    paired = plots.curve_family(
        x, {"a": x, "b": 2 * x}, xlabel="x", ylabel="y", theory={"t": (x, x)}, pair={"t": "a"}
    )
    assert not legend_audit.theory_colour_problems(_render(paired))
    long = hv.Curve((x, x)).opts(title="a title far too long for half a 1400 px page " * 2)
    assert any("title" in p for p in legend_audit.legend_problems(_render(long)))


def test_compose_keeps_log_axes_title_and_legend_position():
    """``a * b`` drops ``a``'s options; :func:`plots.compose` keeps them (the quadrature N plots
    turned linear and untitled on the page when their marker was composed on)."""
    hv.extension("bokeh", logo=False)
    x = np.geomspace(1, 100, 20)
    fig = plots.curve_family(
        x, {"a": x**-2, "b": x**-1}, xlabel="N", ylabel="e", logx=True, logy=True, title="T"
    )
    marker = hv.DynamicMap(lambda n: hv.VLine(n), streams=[hv.streams.Stream.define("N", n=3)()])
    plain = _render(fig * marker)
    assert type(plain.y_scale).__name__ == "LinearScale"  # the bug compose exists for
    kept = _render(plots.compose(fig, marker))
    assert type(kept.x_scale).__name__ == type(kept.y_scale).__name__ == "LogScale"
    assert kept.title.text == "T" and all(lg in kept.right for lg in kept.legend)


def test_quadrature_page_n_plots_stay_log_log_with_their_marker():
    from apps.quadrature import QuadratureDashboard

    d = QuadratureDashboard()
    d.page()
    for name in ("sweep", "wce"):
        fig = _render(d.panes[name].object)
        assert type(fig.x_scale).__name__ == type(fig.y_scale).__name__ == "LogScale", name
        assert fig.title.text and "your N" in [i.label.value for i in fig.legend[0].items]
