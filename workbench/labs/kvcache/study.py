"""KVCacheStudy: the lab's knobs, cached layer data, and the (r_K, r_V, b) measurements."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import param
import xarray as xr

from workbench.study import Study, StudyInputError, knob_label

from . import data as kvdata
from .compress import LayerCompressor, QuantSettings, single_blas_thread
from .lowrank import eckart_young_error
from .memory import memory_ratio
from .model import baseline_loss, loss_with_mix
from .pareto import pareto_front, pareto_points  # noqa: F401 - re-exported
from .quant import sqnr_curve
from .spectra import spectra
from .userdata import UserArrays

PROVENANCE = (
    "CSKV: Wang et al., arXiv 2409.10593 (channel shrinking); Gholami et al., arXiv 2103.13630 "
    "(uniform quantization); lab brief shared/science/kvcache.md; model glassllm==0.1.0"
)
DEFAULT_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 16)
#: Memory cap of one vectorised evaluate: (rank_k·rank_v pairs) × bits attention evaluations.
MAX_ATTENTION_EVALS = 64 * 64 * 9


@functools.lru_cache(maxsize=32)
def _layer_data(source: str, text: str | None, layer: int, seed: int) -> xr.Dataset:
    if source == "synthetic":
        return kvdata.synthetic_activations(128, seed=seed, layer=layer)
    return kvdata.load_activations(source, text, layer)


@functools.lru_cache(maxsize=16)
def _compressor(source, text, layer, seed, method, exponent) -> LayerCompressor:
    with single_blas_thread():
        return LayerCompressor(_layer_data(source, text, layer, seed), method, exponent)


def _optimal_errors(cache: np.ndarray) -> np.ndarray:
    """Eckart–Young error at every rank 1..width (0 beyond the number of tokens)."""
    sigma = np.linalg.svd(cache, compute_uv=False)
    return eckart_young_error(np.pad(sigma, (0, cache.shape[1] - sigma.size)))


def _threads() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def clear_caches() -> None:
    _layer_data.cache_clear()
    _compressor.cache_clear()


class KVCacheStudy(UserArrays, Study):
    """Compress one layer's KV cache of a trained transformer by rank and bits; measure attention.

    ``evaluate(rank_k=[...], rank_v=[...], bits=[...])`` reuses one factorisation per method
    (every rank is a slice) and quantizes every bit-width in one pass.
    """

    lab = "kvcache"
    title = "KV-cache compression by rank and bit-width"
    paper = (
        "Wang et al., CSKV: Training-efficient channel shrinking for KV cache in long-context "
        "scenarios (2024); Gholami et al., A Survey of Quantization Methods (2021)"
    )
    paper_url = "https://arxiv.org/abs/2409.10593"
    summary = (
        "A transformer caches a key and a value vector per token; the cache, not the weights, "
        "fills memory at long context. Their channels are redundant: factor W_K ≈ A B, cache the "
        "rank-r latents X A and rebuild K = (X A) B, then quantize the latents to b bits. On a "
        "small trained transformer (glassllm), see the singular-value spectra of keys (before and "
        "after RoPE) and values, and watch the key/value errors, the attention divergence and "
        "output error, and the memory saved as r and b move: the error-vs-bytes Pareto front."
    )
    vectorized = ("rank_k", "rank_v", "bits")

    source = param.Selector(
        default="en",
        objects={
            "glassllm English": "en",
            "glassllm Portuguese": "pt",
            "synthetic": "synthetic",
            "your arrays (upload)": "upload",
        },
        label="activations",
        doc="Where K, V come from: a trained glassllm model (falls back to synthetic data, with "
        "a note, when the package is missing), the synthetic generator of the brief, or your own "
        "keys/values (a .npy or .safetensors file; then text and layer do not apply).",
    )
    text = param.String(
        default=kvdata.ALICE_OPENING,
        label="text",
        doc="Text the model reads (up to its 128-token context). The default is the opening of "
        "Alice's Adventures in Wonderland (first 128 tokens).",
    )
    layer = param.Integer(1, bounds=(0, 3), label="layer", doc="Transformer layer (0..3).")
    rank_k = param.Integer(
        32, bounds=(1, 64), label="key rank r_K", doc="Latent width cached for keys (64 = full)."
    )
    rank_v = param.Integer(
        32, bounds=(1, 64), label="value rank r_V", doc="Latent width cached for values."
    )
    bits = param.Integer(
        4, bounds=(1, 16), label="bits b", doc="Bits per cached latent value; 16 = off (fp16)."
    )
    method = param.Selector(
        default="svd",
        objects={
            "weight SVD": "svd",
            "activation-aware SVD": "asvd",
            "PCA of cached K/V": "pca",
            "key-channel pruning (ThinK)": "think",
        },
        label="factorisation",
        doc="How A, B are found: SVD of W, SVD of diag(mean|x|^a) W (ASVD), PCA of the cache "
        "itself (Eckart-Young optimal), or keeping the r largest |Q||K| channels (ThinK).",
    )
    exponent = param.Number(
        0.5,
        bounds=(0.0, 2.0),
        step=0.05,
        label="ASVD exponent a",
        doc="Row scaling s = mean|x|^a of activation-aware SVD (CSKV: 0.5; 0 = weight SVD).",
    )
    granularity = param.Selector(
        default="kivi",
        objects={
            "KIVI (K per channel, V per token)": "kivi",
            "per tensor": "tensor",
            "per token": "token",
            "per channel": "channel",
            "per group": "group",
        },
        label="granularity",
        doc="Which latent values share a scale: KIVI pairs keys per channel (groups of g tokens) "
        "with values per token per head; 'per group' = groups of g channels per token.",
    )
    group_size = param.Integer(
        32,
        bounds=(1, 128),
        label="group size g",
        doc="Tokens per key group (KIVI) or channels per group ('per group').",
    )
    window = param.Integer(
        0,
        bounds=(0, 64),
        label="full-precision window",
        doc="Most recent tokens kept exact (CSKV: 32); each query sees its last W keys exact.",
    )
    clip = param.Selector(
        default="minmax",
        objects={"min-max": "minmax", "percentile": "percentile", "MSE-optimal": "mse"},
        label="clipping",
        doc="How each group's range [alpha, beta] is chosen.",
    )
    percentile = param.Number(
        99.0,
        bounds=(90.0, 100.0),
        step=0.1,
        label="clip percentile",
        doc="Upper percentile kept by percentile clipping (lower = 100 - p).",
    )
    symmetric = param.Boolean(False, label="symmetric", doc="Range [-a, a] instead of [min, max].")
    rounding = param.Selector(
        default="nearest",
        objects={"nearest": "nearest", "stochastic": "stochastic"},
        label="rounding",
        doc="Round to nearest, or stochastically (unbiased, ~3 dB noisier).",
    )
    zero_point = param.Selector(
        default="float",
        objects={"float offset": "float", "integer, clamped (CSKV code)": "integer"},
        label="zero point",
        doc="Float offset represents any range; CSKV's clamped integer zero point clips groups "
        "that do not contain 0.",
    )
    loss = param.Boolean(
        True,
        label="next-token loss",
        doc="Also replay the later layers for the loss change (noisy on this tiny model).",
    )
    seed = param.Integer(
        0,
        bounds=(0, 2**31 - 1),
        label="seed",
        doc="Seed of synthetic data and stochastic rounding.",
    )
    spectrum_head = param.Selector(
        default="joint",
        objects={"both KV heads (joint)": "joint", "head 0": "0", "head 1": "1"},
        label="spectrum of",
        doc="Which matrix the spectrum shows (CSKV factors the joint one).",
    )
    centered = param.Boolean(
        False, label="centred spectra", doc="Subtract the mean over tokens before the SVD."
    )

    # --- data -----------------------------------------------------------------------------------
    @property
    def data_source(self) -> str:
        """The source actually used: "en", "pt", "synthetic" or "user"."""
        if self._using_user():
            return "user"
        if self.source in kvdata.MODELS and not kvdata.glassllm_status()[0]:
            return "synthetic"
        return self.source

    @property
    def data_note(self) -> str:
        """What the page should say about the data ("" when it is what the user asked for)."""
        if self._using_inputs():
            return (
                f"your attention inputs ({self._user.attrs['file']}) through glassllm "
                f"{self._user.attrs['model']} layer {int(self.layer)}'s W_K, W_V, W_Q: every "
                "factorisation applies; no next-token loss (hidden states carry no token ids)"
            )
        if self._using_user():
            name = self._user.attrs.get("file", "arrays")
            return (
                f"your arrays ({name}; {self._user.attrs.get('layout', 'keys and values')}): "
                "only PCA and ThinK apply (no weights); loss not available"
            )
        ok, message = kvdata.glassllm_status()
        if self.source in kvdata.MODELS and not ok:
            return message
        return ""

    @property
    def fallback(self) -> bool:
        """True when glassllm was asked for but synthetic data is shown."""
        return self.source in kvdata.MODELS and self.data_source == "synthetic"

    def _text_key(self) -> str | None:
        return None if self.text == kvdata.ALICE_OPENING else self.text

    def layer_data(self, layer: int | None = None) -> xr.Dataset:
        self._require_data()
        if self._using_user():
            return self.user_layer(layer)
        layer = self.layer if layer is None else layer
        return _layer_data(self.data_source, self._text_key(), int(layer), int(self.seed))

    def compressor(self, layer: int | None = None) -> LayerCompressor:
        self._require_data()
        if self._using_user():
            ds = self.user_layer(layer)
            key = (int(ds.attrs.get("layer", 0)), self.method, float(self.exponent))
            if key not in self._user_compressors:
                with single_blas_thread():
                    self._user_compressors[key] = LayerCompressor(ds, *key[1:])
            return self._user_compressors[key]
        layer = self.layer if layer is None else layer
        return _compressor(
            self.data_source,
            self._text_key(),
            int(layer),
            int(self.seed),
            self.method,
            float(self.exponent),
        )

    def quant_settings(self) -> QuantSettings:
        return QuantSettings(
            self.granularity,
            int(self.group_size),
            bool(self.symmetric),
            self.clip,
            self.rounding,
            float(self.percentile),
            self.zero_point,
            int(self.seed),
        )

    def validate(self) -> None:
        self._require_data()
        if self.data_source in kvdata.MODELS:
            try:
                kvdata.tokenize(self._text_key(), self.data_source)
            except StudyInputError as exc:
                raise StudyInputError(f"{knob_label(self, 'text')}: {exc}") from None
        self.validate_user()

    def estimated_seconds(self) -> float:
        """About 1.4 s whatever the knobs: the page's work has fixed sizes (at most 128 tokens,
        4 layers, the Pareto grid of 10 ranks × 9 bit-widths, one loss replay).

        Measured on the serving machine (2 cores, load ~1.5, NumPy, 2026-11-28): 1.2–1.5 s for
        layers 0–3, PCA or SVD, with or without the loss (3.3 s on a cold first call, which
        loads the model once per server).
        """
        return 1.4

    # --- the main result ------------------------------------------------------------------------
    def _values(self, name: str, given: Any) -> np.ndarray:
        p = self.param[name]
        v = np.atleast_1d(np.asarray(getattr(self, name) if given is None else given))
        if v.ndim != 1 or v.size == 0 or not np.issubdtype(v.dtype, np.number):
            raise StudyInputError(f"{knob_label(self, name)}: give a number or a 1-D list")
        lo, hi = p.bounds
        if name != "bits":
            hi = min(hi, self.max_rank)
        bad = v[(v < lo) | (v > hi) | (v != np.round(v))]
        if bad.size:
            raise StudyInputError(
                f"{knob_label(self, name)}: {bad[0]:g} is not allowed; it must be a whole number "
                f"between {lo} and {hi}"
            )
        return v.astype(int)

    def evaluate(self, rank_k: Any = None, rank_v: Any = None, bits: Any = None) -> xr.Dataset:
        """Errors, attention divergence, loss change and memory over (rank_k, rank_v, bits).

        Every dim is present (length 1 for a scalar knob). Variables: ``key_rel_error``
        (rank_k, bits), ``value_rel_error`` (rank_v, bits), ``key_optimal_error`` /
        ``value_optimal_error`` (Eckart–Young, data PCA at that rank, 16 bits), and on all three
        dims ``score_rel_error``, ``attention_kl``, ``output_rel_error``, ``output_wo_rel_error``,
        ``loss_change`` (NaN when off or without a model), ``memory_ratio`` (with metadata and
        window), ``memory_ratio_no_metadata`` and ``memory_ratio_bare`` (neither; papers' number).
        """
        self.validate()
        rk, rv, b = (
            self._values(n, v) for n, v in (("rank_k", rank_k), ("rank_v", rank_v), ("bits", bits))
        )
        if rk.size * rv.size * b.size > MAX_ATTENTION_EVALS:
            raise StudyInputError(
                f"{rk.size} × {rv.size} × {b.size} points exceed the cap of {MAX_ATTENTION_EVALS} "
                "attention evaluations: sweep fewer values"
            )
        with single_blas_thread():
            return self._evaluate(rk, rv, b)

    def _evaluate(self, rk, rv, b) -> xr.Dataset:
        comp = self.compressor()
        q, w = self.quant_settings(), int(self.window)
        keys = {r: comp.rebuild("keys", int(r), b, q, w) for r in dict.fromkeys(rk)}
        vals = {r: comp.rebuild("values", int(r), b, q, w) for r in dict.fromkeys(rv)}
        names = [
            "score_rel_error",
            "attention_kl",
            "output_rel_error",
            "output_wo_rel_error",
            "loss_change",
        ]
        cube = {n: np.full((rk.size, rv.size, b.size), np.nan) for n in names}
        want_loss = bool(self.loss) and self.data_source in kvdata.MODELS
        ids = kvdata.tokenize(self._text_key(), self.data_source) if want_loss else None
        base = baseline_loss(self.data_source, ids, int(self.layer)) if want_loss else np.nan
        for i, r_k in enumerate(rk):
            for j, r_v in enumerate(rv):
                metrics, mix_hat = comp.attention_metrics(keys[r_k][0], vals[r_v][0], w)
                for n, v in metrics.items():
                    cube[n][i, j] = v
                if want_loss:
                    cube["loss_change"][i, j] = [
                        loss_with_mix(self.data_source, ids, int(self.layer), m) - base
                        for m in mix_hat
                    ]
        opt_k = _optimal_errors(comp.keys)
        opt_v = _optimal_errors(comp.values)
        mem = self._memory(rk[:, None, None], rv[None, :, None], b[None, None, :], comp.tokens)
        three = ("rank_k", "rank_v", "bits")
        variables = {n: (three, v) for n, v in cube.items()}
        variables.update(
            key_rel_error=(("rank_k", "bits"), np.array([keys[r][1] for r in rk])),
            value_rel_error=(("rank_v", "bits"), np.array([vals[r][1] for r in rv])),
            key_optimal_error=(("rank_k",), opt_k[rk - 1]),
            value_optimal_error=(("rank_v",), opt_v[rv - 1]),
            **{k: (three, np.broadcast_to(v, cube["attention_kl"].shape)) for k, v in mem.items()},
        )
        ds = xr.Dataset(variables, coords={"rank_k": rk, "rank_v": rv, "bits": b})
        for name, (units, long_name) in _META.items():
            if name in ds:
                ds[name].attrs.update(units=units, long_name=long_name)
        ds.attrs.update(self._attrs(comp, base))
        return ds

    def _memory(self, rk, rv, b, tokens) -> dict[str, np.ndarray]:
        comp = self.compressor()
        common = dict(
            heads=comp.heads,
            head_dim=comp.width // comp.heads,
            group_size=int(self.group_size),
            granularity=self.granularity,
            symmetric=bool(self.symmetric),
        )
        return {
            "memory_ratio": memory_ratio(
                rk, rv, b, window=int(self.window), tokens=tokens, metadata=True, **common
            ),
            "memory_ratio_no_metadata": memory_ratio(
                rk, rv, b, window=int(self.window), tokens=tokens, metadata=False, **common
            ),
            "memory_ratio_bare": memory_ratio(rk, rv, b, tokens=tokens, metadata=False, **common),
        }

    def _attrs(self, comp: LayerCompressor, base_loss: float) -> dict[str, Any]:
        attrs = {
            "lab": self.lab,
            "data_source": self.data_source,
            "data_note": self.data_note or "as requested",
            "fallback": int(self.fallback),
            "layer": int(self.layer),
            "n_tokens": int(comp.tokens),
            "width": int(comp.width),
            "kv_heads": int(comp.heads),
            "method": self.method,
            "granularity": self.granularity,
            "window": int(self.window),
            "zero_point": self.zero_point,
            "baseline_loss": float(base_loss),
            "loss_note": "next-token loss change is noisy on this 0.85M-parameter model: "
            "read layer-local errors first",
            "bits_16": "16 bits = off: latents kept as computed (the fp16 cache baseline)",
            "provenance": PROVENANCE,
        }
        return attrs

    # --- more views -----------------------------------------------------------------------------
    def grid(self, ranks: Any = None, bits: Any = DEFAULT_BITS, layers: Any = None) -> xr.Dataset:
        """Tied ranks r_K = r_V = r over all layers (uploads: a cache file's one layer, or the
        chosen layer for attention inputs): the (layer, rank, bits) cube of the Pareto front.
        One factorisation per layer serves every rank; bits vectorised. No loss."""
        self.validate()
        ranks = self._values("rank_k", self._ranks() if ranks is None else ranks)
        b = self._values("bits", bits)
        if self._using_user():  # a cache file is one layer; attention inputs: the chosen one
            n_layers = kvdata.n_layers(self._user.attrs["model"]) if self._using_inputs() else 1
            default = [int(self.layer)] if self._using_inputs() else [0]
        else:
            n_layers = kvdata.n_layers(self.data_source)
            default = list(range(n_layers))
        layers = default if layers is None else [int(v) for v in layers]
        if any(not 0 <= v < n_layers for v in layers):
            raise StudyInputError(f"layers must be between 0 and {n_layers - 1}")
        names = [
            "key_rel_error",
            "value_rel_error",
            "score_rel_error",
            "attention_kl",
            "output_rel_error",
            "output_wo_rel_error",
        ]
        out = {n: np.full((len(layers), ranks.size, b.size), np.nan) for n in names}
        q, w = self.quant_settings(), int(self.window)
        comps = [self.compressor(layer) for layer in layers]

        def one_layer(li: int) -> None:
            comp = comps[li]
            for ri, r in enumerate(ranks):
                k_hat, out["key_rel_error"][li, ri] = comp.rebuild("keys", int(r), b, q, w)
                v_hat, out["value_rel_error"][li, ri] = comp.rebuild("values", int(r), b, q, w)
                metrics, _ = comp.attention_metrics(k_hat, v_hat, w)
                for n, v in metrics.items():
                    out[n][li, ri] = v

        # Layers in threads: NumPy releases the GIL in exp and matmul, so both cores work.
        with single_blas_thread(), ThreadPoolExecutor(max_workers=_threads()) as pool:
            list(pool.map(one_layer, range(len(layers))))
        comp = comps[-1]
        mem = self._memory(ranks[:, None], ranks[:, None], b[None, :], comp.tokens)
        dims = ("layer", "rank", "bits")
        ds = xr.Dataset(
            {n: (dims, v) for n, v in out.items()}
            | {k: (("rank", "bits"), np.asarray(v)) for k, v in mem.items()},
            coords={"layer": layers, "rank": ranks, "bits": b},
        )
        for name, (units, long_name) in _META.items():
            if name in ds:
                ds[name].attrs.update(units=units, long_name=long_name)
        ds.attrs.update(self._attrs(comp, np.nan))
        return ds

    def reconstruction_errors(self, ranks: Any = None, bits: Any = DEFAULT_BITS) -> xr.Dataset:
        """K and V errors over (rank, bits) for the current layer, without attention (fast: two
        rebuilds per rank, bits vectorised), with the Eckart–Young optimum per rank."""
        self.validate()
        ranks = self._values("rank_k", self._ranks() if ranks is None else ranks)
        b = self._values("bits", bits)
        q, w = self.quant_settings(), int(self.window)
        with single_blas_thread():
            comp = self.compressor()
            k = np.array([comp.rebuild("keys", int(r), b, q, w)[1] for r in ranks])
            v = np.array([comp.rebuild("values", int(r), b, q, w)[1] for r in ranks])
            opt_k = _optimal_errors(comp.keys)[ranks - 1]
            opt_v = _optimal_errors(comp.values)[ranks - 1]
        ds = xr.Dataset(
            {
                "key_rel_error": (("rank", "bits"), k),
                "value_rel_error": (("rank", "bits"), v),
                "key_optimal_error": (("rank",), opt_k),
                "value_optimal_error": (("rank",), opt_v),
            },
            coords={"rank": ranks, "bits": b},
        )
        for name in ds.data_vars:
            ds[name].attrs.update(units="1", long_name=_META[name][1])
        ds.attrs.update(self._attrs(comp, np.nan))
        return ds

    def _ranks(self) -> np.ndarray:
        return np.arange(1, self.max_rank + 1)

    def spectra(self) -> xr.Dataset:
        """Spectra and rank@90 %, effective and stable rank of K, K_rope, V for every layer."""
        self.validate()
        if self._using_user():
            layers = [self.layer_data()]
        else:
            layers = [self.layer_data(i) for i in range(kvdata.n_layers(self.data_source))]
        with single_blas_thread():
            ds = spectra(layers)
        ds.attrs.update(data_source=self.data_source, data_note=self.data_note or "as requested")
        return ds

    def sqnr(self, samples: int = 2**18) -> xr.Dataset:
        """SQNR vs bits on Uniform(−1, 1): both conventions' measurements and theory lines."""
        return sqnr_curve(tuple(range(1, 9)), samples=samples, seed=int(self.seed))


_META = {
    "key_rel_error": ("1", "relative key error ||K - K_hat||_F / ||K||_F"),
    "value_rel_error": ("1", "relative value error ||V - V_hat||_F / ||V||_F"),
    "key_optimal_error": ("1", "Eckart-Young optimum sqrt(1 - energy_r) for K"),
    "value_optimal_error": ("1", "Eckart-Young optimum sqrt(1 - energy_r) for V"),
    "score_rel_error": ("1", "relative error of attention logits QK^T/sqrt(d)"),
    "attention_kl": ("nat", "mean KL(p || p_hat) of attention probabilities"),
    "output_rel_error": ("1", "relative error of per-head attention output (attn.mix)"),
    "output_wo_rel_error": ("1", "relative error after W_O (attn.out)"),
    "loss_change": ("nat", "next-token loss change (noisy on this model)"),
    "memory_ratio": ("1", "cache size ratio with metadata and window"),
    "memory_ratio_no_metadata": ("1", "cache size ratio without metadata, with window"),
    "memory_ratio_bare": ("1", "cache size ratio without metadata and window (papers)"),
}
