"""KV-cache lab dashboard (CSKV channel shrinking + quantization), on :class:`LabDashboard`.

Layout and bindings only; every number comes from :mod:`workbench.labs.kvcache`. Ranks, bits and
the spectrum view are cheap (one layer, one point: a few ms, updated in place on the event
loop); every other knob recomputes the spectra, the rank curves and the Pareto grid off the loop.

Your own keys/values or attention inputs: an upload (:mod:`apps.uploads`) is read by
:func:`workbench.labs.kvcache.activations_from_file` on the worker pool and kept in this
session's Study only (``source`` = "upload"); text then does not apply, nor layer for a cache
file (attention inputs go through the chosen layer's weights). Disabled knobs follow
``KVCacheStudy.unused_knobs``.
"""

from __future__ import annotations

import html

import panel as pn

from apps import shell
from apps.lab_app import LabDashboard
from apps.live import LiveFigures
from apps.uploads import UploadBox
from workbench.labs import kvcache as kv
from workbench.labs.kvcache import figures, userdata
from workbench.plots import HERE_COLOUR

#: Ranks of the Pareto grid (r_K = r_V = r); with the 9 bit-widths: 90 points × 4 layers.
PARETO_RANKS = (1, 2, 4, 8, 13, 16, 24, 32, 48, 64)
#: Longest text the text box accepts (the model reads at most 128 tokens anyway).
MAX_TEXT_CHARS = 2000
#: The figure panes, in the order the layout and the full redraw use.
PANES = ("spectrum", "energy", "rank", "bits", "pareto", "sqnr")

EXPLANATION = r"""
**What you see.** Keys $K = X W_K$ and values $V = X W_V$ of one layer of a small trained
transformer (glassllm: 2 KV heads $\times$ 32 channels, 128-token context) reading your text, $X$
the layer's input after its RMSNorm. CSKV factors $W \approx A B$, caches the rank-$r$ latents
$X A$ and rebuilds $\hat K = (X A) B$ (RoPE, the rotary position encoding, applied after), then
quantizes the latents to $b$ bits: $\hat x = \alpha + S \cdot \operatorname{round}((x - \alpha)/S)$,
$S = (\beta - \alpha)/(2^b - 1)$, $[\alpha, \beta]$ the range of the values quantized.

* **Spectra**: the singular values $\sigma_i/\sigma_1$ and cumulative energy
  $\sum_{j \le r}\sigma_j^2/\sum_j \sigma_j^2$ of $K$ before and after RoPE and of $V$; rank@90 %
  (the rank holding 90 % of the energy), effective rank $\exp H(\sigma/\textstyle\sum\sigma)$
  ($H$ the entropy) and stable rank $\sum\sigma^2/\sigma_1^2$ in the legend.
* **Error vs rank**: $\lVert K - \hat K\rVert/\lVert K\rVert$ (and $V$) at the chosen bits,
  ranks $r_K$, $r_V$; dashed: the Eckart–Young optimum $\sqrt{1 - \text{energy}_r}$ of PCA on
  the cache itself.
* **Errors vs bits** at your ranks: $K$ and $V$ errors, the attention distributions'
  $\mathrm{KL}(p \,\|\, \hat p)$ and the attention-output error.
* **Pareto front**: attention-output error (mean over layers) vs memory with metadata for every
  $(r, b)$; dotted: CSKV's 80 % (rank 20 %, 16 bits) and 95 % (4 bits) points.
* **SQNR** (signal-to-quantization-noise ratio): the min–max quantizer on $U(-1, 1)$ against
  $20 \log_{10}(2^b - 1)$ and the $6.02\, b$ dB line.

The next-token loss change is noisy on this tiny model: read the layer-local errors first.

**Your own K/V** (upload below): one array (tokens $\times$ head_dim or heads $\times$ tokens
$\times$ head_dim) is analysed as the cache on both sides (keys = values, queries = keys), or a
.safetensors file with tensors named keys and values (optionally queries). No weights come with a
file: PCA or ThinK. **Attention inputs** instead: hidden states (tokens $\times$ 128, the
residual stream entering a block; a .npy, or a .safetensors tensor named inputs or
hidden_states) go through the chosen layer's RMSNorm, $W_K$, $W_V$, $W_Q$ and RoPE, so every
factorisation applies; there is no loss (hidden states carry no token ids).
"""
UPLOAD_CAPS = (
    f"A .npy or .safetensors file: at most {userdata.USER_MAX_BYTES // 2**20} MiB per tensor as "
    f"float64, {userdata.MAX_TOKENS} tokens, {userdata.MAX_HEADS} heads and "
    f"{userdata.MAX_HEAD_DIM} channels per head (an even number). Pickled files are refused "
    "unread. The arrays stay in this page's session only (never saved). Attention inputs: "
    "tokens × 128 (glassllm's d_model), 2 to 128 tokens (its context)."
)
#: What an uploaded file holds (the box's choice; a .safetensors tensor named inputs or
#: hidden_states is read as attention inputs either way).
UPLOAD_KINDS = {"keys / values": "auto", "attention inputs X": "inputs"}


class KVCacheDashboard(LabDashboard):
    study_class = kv.KVCacheStudy
    cheap = ("rank_k", "rank_v", "bits", "spectrum_head", "centered")
    main_knob = "rank_k"
    link_limits = {"text": MAX_TEXT_CHARS}  # a user's own text round-trips through the link
    explanation = EXPLANATION
    widget_overrides = {
        "text": {"widget": pn.widgets.TextAreaInput, "max_length": MAX_TEXT_CHARS, "height": 120},
        "symmetric": {"widget": pn.widgets.Checkbox},
    }

    def __init__(self, query=None):
        self.here = shell.LiveMarker(
            "point",
            marker="x",
            size=12,
            line_width=3,
            color=HERE_COLOUR,
            legend_label="you are here",
        )
        self._good_user = None  # the arrays of the last good view (restored after a failure)
        super().__init__(query)
        self.upload = UploadBox(
            title="Your keys and values",
            caps=UPLOAD_CAPS,
            suffixes=userdata.SUFFIXES,
            max_bytes=userdata.USER_MAX_BYTES * len(userdata.NAMES),
            parse=self._read_file,
            apply=self._use_data,
            choices=UPLOAD_KINDS,
            status=self.status,
        )

    # --- heavy work (worker thread, on a snapshot) -------------------------------------------
    def compute(self, study):
        ranks = [r for r in PARETO_RANKS if r <= study.max_rank]
        return {
            "spectra": study.spectra(),
            "ranks": study.reconstruction_errors(),
            "grid": study.grid(ranks=ranks),
            "point": self._point(study),
            "here": study.evaluate(),
            "sqnr": _sqnr(),
            "note": study.data_note,
        }

    @staticmethod
    def _point(study):
        """The current (r_K, r_V) over every bit-width (no loss replay: the bits figure)."""
        return study.session_copy(loss=False).evaluate(bits=list(kv.study.DEFAULT_BITS))

    # --- drawing (event loop) -----------------------------------------------------------------
    def render(self, result):
        self.result = result
        self._good_user = self.study.user_arrays
        for name in ("text", "layer"):  # uploads: no text; a cache file is one layer
            self.widgets[name].disabled = name in self.study.unused_knobs
        self.front = kv.pareto_points(result["grid"])
        self._move_here()
        if hasattr(self, "live"):
            self._draw(PANES)

    def update_cheap(self, changed):
        """Only what the change touches: ranks → one point over the bits plus the current
        view (87–122 ms measured, 2026-11-28); bits → the current view; spectrum view → the
        two spectrum figures."""
        if changed & {"rank_k", "rank_v"}:
            self.result["point"] = self._point(self.study)
        if changed & {"rank_k", "rank_v", "bits"}:
            self.result["here"] = self.study.evaluate()
            self._move_here()
            self._draw({"rank", "bits"})
        if changed & {"spectrum_head", "centered"}:
            self._draw({"spectrum", "energy"})

    def _figure(self, name):
        if name == "pareto":
            # Drawn without "you are here": that point is a marker moved in place, so a rank
            # or bit move does not redraw this figure's ~15 layers.
            fig = figures.pareto_figure(self.result["grid"], self.front)
            return fig.opts(hooks=[self.here.hook])
        return self._figures([name])[name]

    def _move_here(self):
        p = self.result["here"].isel(bits=0, rank_k=0, rank_v=0)
        self.here.move(float(p.memory_ratio), float(p.output_rel_error))

    def _figures(self, names=None):
        r, s = self.result, self.study
        b = int(s.bits)
        here = r["here"].isel(bits=0, rank_k=0, rank_v=0)
        build = {
            "spectrum": lambda: figures.spectrum_figure(
                r["spectra"], s.spectrum_layer, s.spectrum_head, s.centered
            ),
            "energy": lambda: figures.energy_figure(
                r["spectra"], s.spectrum_layer, s.spectrum_head, s.centered
            ),
            "rank": lambda: figures.rank_error_figure(r["ranks"], b, (s.rank_k, s.rank_v)),
            "bits": lambda: figures.bits_error_figure(r["point"]),
            "pareto": lambda: figures.pareto_figure(
                r["grid"],
                self.front,
                current=(float(here.memory_ratio), float(here.output_rel_error)),
            ),
            "sqnr": lambda: figures.sqnr_figure(r["sqnr"]),
        }
        return {k: f() for k, f in build.items() if names is None or k in names}

    def _numbers(self) -> str:
        p = self.result["here"].isel(bits=0, rank_k=0, rank_v=0)
        rows = [
            ("key error ‖K − K̂‖/‖K‖", p.key_rel_error),
            ("value error ‖V − V̂‖/‖V‖", p.value_rel_error),
            ("attention KL(p‖p̂) (nats)", p.attention_kl),
            ("attention-output error", p.output_rel_error),
            ("output error after W_O", p.output_wo_rel_error),
            ("next-token loss change (noisy)", p.loss_change),
            ("memory ratio (metadata + window)", p.memory_ratio),
            ("memory ratio (no metadata)", p.memory_ratio_no_metadata),
            ("memory ratio (papers: neither)", p.memory_ratio_bare),
        ]
        lines = ["| measure | value |", "|---|---|"]
        lines += [f"| {name} | {float(v):.4g} |" for name, v in rows]
        note = self.result.get("note") or ""
        head = f"**Data: {html.escape(note)}**\n\n" if note else ""
        return head + "\n".join(lines)

    def _draw(self, names):
        self.live.refresh(*names)  # in place where the figure's structure allows
        self.numbers.object = self._numbers()

    def plots(self):
        opts = {"sizing_mode": "stretch_width", "min_height": 320}
        self.live = LiveFigures(self._figure, PANES, opts)
        self.panes = self.live.panes
        self.numbers = pn.pane.Markdown(self._numbers(), sizing_mode="stretch_width")
        p = self.panes
        return pn.Column(
            shell.row(self.numbers, p["pareto"]),
            shell.row(p["spectrum"], p["energy"]),
            shell.row(p["rank"], p["bits"]),
            shell.row(p["sqnr"]),
            sizing_mode="stretch_width",
        )

    # --- your own arrays ----------------------------------------------------------------------
    def sidebar_extras(self):
        return [self.upload.view]

    def _read_file(self, path, name, kind):
        """Read an upload (worker thread; ValueError refuses it). Attention inputs go through
        the page's model (English unless Portuguese is shown) at the current layer."""
        study = self.study
        model = study.source if study.source in kv.data.MODELS else "en"
        if study.user_arrays is not None and "hidden_states" in study.user_arrays:
            model = study.user_arrays.attrs["model"]  # the inputs shown now
        return kv.activations_from_file(
            path, name=name, kind=kind or "auto", model=model, layer=int(study.layer)
        )

    def _use_data(self, ds, name):
        """Analyse a read upload (event loop); the previous data stayed until now."""
        self.study.use_arrays(ds)  # source "upload"; PCA without weights; ranks within width
        self.status.clear()
        self.sync_widgets()
        self.write_link()
        self.recompute()

    def on_restored(self):
        """A failed view: back to the arrays of the last good view (if any)."""
        if self.study.user_arrays is not self._good_user:
            self.study.attach_arrays(self._good_user)

    # --- exports and links --------------------------------------------------------------------
    def dataset(self):
        return self.result["here"]

    def figure(self):
        f = self._figures()
        return (f["pareto"] + f["spectrum"] + f["rank"] + f["bits"]).cols(2)

    def close(self):
        self.result = None
        if hasattr(self, "live"):
            self.live.close()


def _sqnr():
    return kv.sqnr_curve(samples=2**16)


create_app = KVCacheDashboard.create_app
warm_cache = KVCacheDashboard.warm_cache
