"""Compress one layer's cache (rank, then bits, window) and measure what attention sees.

Pipeline, as in CSKV's training-free variant (brief): latents Z_K = X A_K, Z_V = X A_V (joint
over the KV heads) are truncated to r_K, r_V columns and quantized to b bits; keys are rebuilt
pre-RoPE, K̂ = Z_K B_K, then RoPE is applied; values V̂ = Z_V B_V. Bits 16 means "off": latents
are kept as computed (the fp16 cache of the baseline model). The window keeps the W most recent
tokens exact: query i uses exact keys and values for positions i − W < j ≤ i and compressed ones
before (what decoding with a sliding full-precision window sees). Quantizer statistics are taken
over the latents of all tokens.

Metrics (per bit-width, vectorised):

* ``key_rel_error``, ``value_rel_error``: ‖K − K̂‖_F/‖K‖_F of the cache after the last token
  (its final W rows exact); RoPE is a per-token rotation, so pre- and post-RoPE errors agree;
* ``score_rel_error``: relative error of the attention logits QKᵀ/√d over causal entries;
* ``attention_kl``: mean over query heads and positions of KL(p ‖ p̂) in nats;
* ``output_rel_error``: ‖Y − Ŷ‖_F/‖Y‖_F of the per-head attention output (``attn.mix``), and
  ``output_wo_rel_error`` after W_O (``attn.out``) when the source has W_O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from workbench.blas import single_blas_thread  # noqa: F401 - re-exported for the Study

from .data import apply_rope, merge_heads, split_heads
from .lowrank import Factorisation, factorise
from .quant import quantize

GRANULARITIES = ("tensor", "token", "channel", "group", "kivi")


@dataclass(frozen=True)
class QuantSettings:
    """How the latents are quantized (see :func:`workbench.labs.kvcache.quantize`)."""

    granularity: str = "kivi"
    group_size: int = 32
    symmetric: bool = False
    clip: str = "minmax"
    rounding: str = "nearest"
    percentile: float = 99.0
    zero_point: str = "float"
    seed: int = 0

    def axis_and_group(self, kind: str, rank: int, heads: int) -> tuple[int | None, int | None]:
        """(axis, group_size) for a (token, rank) latent of ``kind`` "keys" or "values".

        KIVI: keys per channel in groups of ``group_size`` tokens; values per token per head
        (the latent's r channels split into H_kv equal groups, as the memory count assumes).
        """
        g = self.granularity
        if g == "tensor":
            return None, None
        if g == "token":
            return 1, None
        if g == "channel":
            return 0, None
        if g == "group":
            return 1, self.group_size
        if kind == "keys":
            return 0, self.group_size
        return 1, max(1, math.ceil(rank / heads))


def quantize_latent(z: np.ndarray, bits: np.ndarray, q: QuantSettings, kind: str, heads: int):
    """(n_bits, token, rank): ``z`` quantized at every bit-width; bits 16 leaves it unchanged."""
    out = np.broadcast_to(z, (bits.size, *z.shape)).copy()
    low = bits < 16
    if np.any(low):
        axis, group = q.axis_and_group(kind, z.shape[1], heads)
        out[low] = quantize(
            z,
            bits[low],
            axis=axis,
            group_size=group,
            symmetric=q.symmetric,
            clip=q.clip,
            rounding=q.rounding,
            seed=q.seed + (0 if kind == "keys" else 1),
            percentile=q.percentile,
            zero_point=q.zero_point,
        )
    return out


class LayerCompressor:
    """One layer's exact tensors and both factorisations: every (r, b) reuses them."""

    def __init__(self, ds: xr.Dataset, method: str = "svd", exponent: float = 0.5):
        self.heads = ds.sizes["head"]
        self.query_heads = ds.sizes["query_head"]
        self.base = float(ds.attrs.get("rope_base", 10000.0))
        self.keys = merge_heads(ds["keys"].values)  # token × width, pre-RoPE
        self.values = merge_heads(ds["values"].values)
        self.q_rope = ds["queries_rope"].values
        self.mix = ds["mix"].values
        self.w_o = ds["w_o"].values if "w_o" in ds else None
        self.tokens, self.width = self.keys.shape
        has_w = "w_k" in ds and "inputs" in ds
        x = ds["inputs"].values if has_w else None
        # ThinK scores: each KV channel's query norm, summed over the query heads that read it.
        q = ds["queries"].values
        q_kv = q.reshape(self.heads, -1, *q.shape[1:]).transpose(1, 0, 2, 3)
        q_norm_source = merge_heads(np.sqrt((q_kv**2).sum(axis=0)))
        self.fact_k: Factorisation = factorise(
            method, self.keys, x, ds["w_k"].values if has_w else None, q_norm_source, exponent
        )
        self.fact_v: Factorisation = factorise(
            method, self.values, x, ds["w_v"].values if has_w else None, None, exponent
        )
        self.k_rope = apply_rope(split_heads(self.keys, self.heads), self.base)
        v_heads = split_heads(self.values, self.heads)
        self.repeat = self.query_heads // self.heads
        self.v_all = np.repeat(v_heads, self.repeat, axis=0)
        d = self.k_rope.shape[-1]
        self.scale = 1.0 / math.sqrt(d)
        self.scores = self.q_rope @ np.repeat(self.k_rope, self.repeat, axis=0).swapaxes(-1, -2)
        self.scores *= self.scale
        i, j = np.indices((self.tokens, self.tokens))
        self.causal = j <= i
        self.neg_mask = np.where(self.causal, 0.0, -np.inf)
        self.p, log_norm = _causal_softmax(self.scores, self.neg_mask)
        self.logp = np.where(self.causal, self.scores - log_norm, 0.0)
        self.p_logp_total = float((self.p * self.logp).sum())
        self.scores_norm = float(np.linalg.norm(self.scores * self.causal))
        self.mix_wo = merge_heads(self.mix) @ self.w_o if self.w_o is not None else None

    # --- one side (keys or values) at one rank, all bit-widths -------------------------------
    def rebuild(self, kind: str, rank: int, bits: np.ndarray, q: QuantSettings, window: int):
        """(n_bits, token, width) rebuilt cache and its relative error after the last token."""
        fact, exact = (self.fact_k, self.keys) if kind == "keys" else (self.fact_v, self.values)
        z, basis = fact.truncate(rank)
        rebuilt = quantize_latent(z, bits, q, kind, self.heads) @ basis
        final = rebuilt.copy()
        if window:
            final[:, -window:] = exact[-window:]
        err = np.linalg.norm(final - exact, axis=(1, 2)) / np.linalg.norm(exact)
        return rebuilt, err

    # --- attention with both sides compressed -------------------------------------------------
    def attention_metrics(self, k_hat, v_hat, window: int) -> tuple[dict, np.ndarray]:
        """Metrics per bit-width from rebuilt pre-RoPE keys and values (n_bits, token, width),
        and the compressed per-head attention output (n_bits, query_head, token, channel)."""
        n = len(k_hat)
        k_rope = apply_rope(split_heads(k_hat, self.heads), self.base)
        k_rope = np.repeat(k_rope, self.repeat, axis=1)
        scores = self.q_rope[None] @ k_rope.swapaxes(-1, -2)
        scores *= self.scale
        if window:
            i, j = np.indices((self.tokens, self.tokens))
            exact_zone = (i - j < window) & self.causal  # inside the full-precision window
            scores = np.where(exact_zone, self.scores[None], scores)
        diff = scores - self.scores
        diff *= self.causal
        score_err = np.sqrt(np.einsum("bhij,bhij->b", diff, diff)) / self.scores_norm
        # One exp per entry (the dominant cost): p̂ = e^(s − m) / Σ, log p̂ = s − m − log Σ, so
        # KL = Σ p log p − Σ p s + Σ_rows (m + log Σ) (each row of p sums to 1).
        p_hat, log_norm = _causal_softmax(scores, self.neg_mask)
        kl = self.p_logp_total - np.einsum("hij,bhij->b", self.p, scores)
        kl += log_norm.sum(axis=(1, 2, 3))
        kl /= self.q_rope.shape[0] * self.tokens
        v_hat_all = np.repeat(split_heads(v_hat, self.heads), self.repeat, axis=1)
        mix_hat = p_hat @ v_hat_all
        if window:
            mix_hat += (p_hat * exact_zone) @ (self.v_all - v_hat_all)
        err = (mix_hat - self.mix).reshape(n, -1)
        out = {
            "score_rel_error": score_err,
            "attention_kl": kl,
            "output_rel_error": np.linalg.norm(err, axis=1) / np.linalg.norm(self.mix),
        }
        if self.mix_wo is not None:
            out_wo = merge_heads(mix_hat) @ self.w_o
            out["output_wo_rel_error"] = np.linalg.norm(
                (out_wo - self.mix_wo).reshape(n, -1), axis=1
            ) / np.linalg.norm(self.mix_wo)
        return out, mix_hat


def _causal_softmax(s, neg_mask):
    """(p, m + log Σ e^(s − m)) of a softmax over the last axis with ``neg_mask`` (0 on causal
    entries, −∞ above the diagonal) added; p is 0 above the diagonal."""
    z = s + neg_mask
    m = z.max(axis=-1, keepdims=True)
    z -= m
    np.exp(z, out=z)
    total = z.sum(axis=-1, keepdims=True)
    z /= total
    return z, m + np.log(total)
