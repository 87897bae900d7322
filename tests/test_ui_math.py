"""The lab pages' explanations are typeset math (KaTeX), offline, on the page and in the export.

Server-side: every formula of every explanation is left whole for KaTeX (no ``$`` or TeX
command outside math), parses with the KaTeX that Panel bundles (run under Node when present),
and the symbols the plots show are defined in the text. In a real browser (marker ``ui``), with
every request that leaves 127.0.0.1 aborted: a lab page and an exported HTML file show ``.katex``
elements and no raw ``$`` or ``\\frac`` text.
"""

from __future__ import annotations

import html
import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("panel")

import panel as pn  # noqa: E402

from apps import shell  # noqa: E402
from apps.lab_app import LabDashboard  # noqa: E402

LABS = ("kde", "criticality", "fractional", "quadrature", "kvcache")
MATH = re.compile(
    r'<span class="math inline">(.*?)</span>|<div class="math block">(.*?)</div>', re.S
)

#: Symbols each lab's plots show (axis labels, legends, titles), as the TeX that defines them.
ON_PLOTS = {
    "kde": [
        r"h_G",
        r"u^*",
        r"s^*",
        r"\mu",
        r"\chi^2",
        r"h_{\mathrm{CLT}}",
        r"h_{\mathrm{KL}}",
        r"h_{G,\mathrm{eff}}",
        r"Y_2",
        r"\hat\rho_h",
        "REM",
    ],
    "criticality": [
        r"K^*",
        r"c^*",
        r"\xi_c",
        r"\chi_1",
        r"\chi_\parallel",
        r"\chi_\perp",
        r"\Theta^{(l)}",
        r"\kappa",
        r"3V/(nK^2)",
        r"L_{\mathrm{mc}}",
        r"\rho^{(l)}",
    ],
    "fractional": [
        r"f_{\alpha,p}(\theta)",
        r"\mathrm{cond}_2(A_n)",
        r"\lVert u_h - u\rVert_\infty",
        r"\tau",
        r"\lVert b - A x_k\rVert",
    ],
    "quadrature": [r"\omega^*", r"e(w)", r"w_n", r"\nu", r"K^*", r"K_i", r"\hat\Xi", "RKHS"],
    "kvcache": [
        r"\sigma_i/\sigma_1",
        r"r_K",
        r"r_V",
        r"\mathrm{KL}(p \,\|\, \hat p)",
        "SQNR",
        r"2^b - 1",
    ],
}


def _dashboard(lab: str) -> type[LabDashboard]:
    module = importlib.import_module(f"apps.{lab}")
    found = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, LabDashboard) and v.__module__ == module.__name__
    ]
    assert len(found) == 1, lab
    return found[0]


def _formulas(markdown: str) -> tuple[list[str], str]:
    """(the TeX of every formula, the HTML with the formulas cut out)."""
    rendered = shell.math_html(markdown)
    tex = [html.unescape(a or b).strip()[2:-2] for a, b in MATH.findall(rendered)]
    return tex, MATH.sub("", rendered)


@pytest.mark.parametrize("lab", LABS)
def test_explanation_formulas_are_left_whole_for_katex(lab):
    tex, prose = _formulas(_dashboard(lab).explanation)
    assert len(tex) >= 20  # the explanation is written in math, not Unicode look-alikes
    assert "$" not in prose and "\\" not in prose  # no formula was cut or left raw
    for symbol in ON_PLOTS[lab]:
        assert symbol in _dashboard(lab).explanation, symbol


def test_math_html_escapes_markup_and_keeps_tex_out_of_markdown():
    out = shell.math_html(r"a <b>bold</b> $x_i * y_j < 3$ and $a_1$ costs 5$ *em*")
    assert "<b>" not in out and "&lt;b&gt;" in out  # raw HTML never becomes markup
    assert r"\(x_i * y_j &lt; 3\)" in out  # "_" and "*" stay TeX, not emphasis
    assert "costs 5$" in out and "<em>em</em>" in out


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js not installed")
def test_every_formula_parses_with_the_bundled_katex():
    katex = Path(pn.__file__).parent / "dist/bundled/katex/katex@0.16.22/dist/katex.min.js"
    assert katex.exists()
    formulas = [t for lab in LABS for t in _formulas(_dashboard(lab).explanation)[0]]
    script = (
        f"const k = require({json.dumps(str(katex))});"
        "const all = JSON.parse(require('fs').readFileSync(0, 'utf8')); const bad = [];"
        "for (const t of all) { try { k.renderToString(t, {throwOnError: true}); }"
        " catch (e) { bad.push(t + ': ' + e.message); } }"
        "console.log(JSON.stringify(bad));"
    )
    run = subprocess.run(
        ["node", "-e", script], input=json.dumps(formulas), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == []
    assert len(formulas) > 150


# --- in the browser, offline ------------------------------------------------------------------

#: Text and ``.katex`` count of every shadow root holding typeset math (KaTeX's hidden HTML
#: copy and its TeX annotation are not part of innerText, so raw text left over would show).
TYPESET = """() => {
  const roots = []; const walk = (r) => { for (const e of r.querySelectorAll('*')) {
    if (e.shadowRoot) { roots.push(e.shadowRoot); walk(e.shadowRoot); } } };
  walk(document);
  const out = {katex: 0, text: ''};
  for (const r of [document, ...roots]) {
    const n = r.querySelectorAll('.katex').length;
    if (!n) continue;
    out.katex += n;
    for (const el of r.children) out.text += (el.innerText || '') + '\\n';
  }
  return out;
}"""


def _offline_context(browser, blocked: list[str]):
    def route(route, request):
        url = request.url
        host = url.split("/")[2].split(":")[0] if "://" in url else ""
        if url.startswith(("data:", "blob:", "file:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()  # no network: a CDN resource fails as it would offline

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route("**/*", route)
    return context


def _assert_typeset(page, least: int) -> None:
    page.wait_for_function(f"({TYPESET})().katex >= {least}", timeout=60_000)
    found = page.evaluate(TYPESET)
    assert found["katex"] >= least
    text = found["text"]
    assert "What you see" in text
    assert "$" not in text and "\\frac" not in text and "\\hat" not in text, text[:400]


@pytest.mark.ui
def test_lab_page_explanation_is_typeset_offline(browser, server_url):
    blocked: list[str] = []
    context = _offline_context(browser, blocked)
    try:
        page = context.new_page()
        page.goto(server_url + "/criticality", timeout=120_000)
        tex, _ = _formulas(_dashboard("criticality").explanation)
        _assert_typeset(page, least=len(tex))  # every formula typeset
        assert not [u for u in blocked if "katex" in u.lower()]  # KaTeX came from the server
    finally:
        context.close()


@pytest.mark.ui
def test_exported_html_typesets_its_explanation_offline(browser, tmp_path):
    import holoviews as hv

    shell.load_extensions()
    text = _dashboard("fractional").explanation
    path = tmp_path / "figure.html"
    path.write_text(shell.figure_html(hv.Curve([(0, 1), (1, 2)]), "fractional", text))
    blocked: list[str] = []
    context = _offline_context(browser, blocked)
    try:
        page = context.new_page()
        page.goto(path.as_uri(), timeout=60_000)
        tex, _ = _formulas(text)
        _assert_typeset(page, least=len(tex))
        # KaTeX, BokehJS, Panel and Panel's stylesheets are all in the file; only icons are not.
        assert all(re.search(r"\.(png|ico)$", url) for url in blocked), blocked
    finally:
        context.close()
