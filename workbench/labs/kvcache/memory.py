"""KV-cache memory arithmetic (lab brief ``shared/science/kvcache.md``).

Full cache, bits per token per layer: 2 · H_kv · d · 16 (keys and values, fp16). Compressed:
r_k · b + r_v · b for the quantized latents, plus the fp16 scale (and zero point, unless
symmetric) of every quantization group, amortised per token; tokens inside the full-precision
window stay at full size. Papers quote the ratio without metadata and window ("80 % at rank
20 %": 0.2; "95 %": 0.2 × 4/16 = 0.05); with KIVI-style metadata (keys per channel per 32
tokens, values per token per head) Llama-2-7B at ρ = 0.2 and 4 bits keeps 6.4 % (saves 93.6 %).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.study import StudyInputError

#: Architectures of the brief's byte counts: (layers, KV heads, head dim).
ARCHITECTURES = {
    "Llama-2-7B": (32, 32, 128),
    "Llama-3.1-70B": (80, 8, 128),
    "glassllm": (4, 2, 32),
}
GRANULARITIES = ("tensor", "token", "channel", "group", "kivi")
#: CSKV's headline operating points: (fraction of channels kept, bits) -> memory ratio quoted.
CSKV_POINTS = {
    "CSKV 80 % (rank 20 %, 16 bits)": (0.2, 16),
    "CSKV 95 % (rank 20 %, 4 bits)": (0.2, 4),
}
METADATA_BITS = 16  # one fp16 number per scale or zero point


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, bytes_per_value: int = 2) -> int:
    """Bytes of keys and values cached per token: 2 · layers · H_kv · d · bytes.

    >>> kv_bytes_per_token(*ARCHITECTURES["Llama-2-7B"])
    524288
    """
    return 2 * int(layers) * int(kv_heads) * int(head_dim) * int(bytes_per_value)


def groups_per_token(
    rank_k: Any, rank_v: Any, granularity: str, group_size: int, heads: int, tokens: Any
) -> Any:
    """Quantization groups (each one fp16 scale, plus a zero point if asymmetric) per token.

    tensor: 2 groups per layer over all tokens; token: one for K, one for V per token; channel:
    one per latent channel over all tokens; group: ⌈r/g⌉ channel groups per token for each of K
    and V; kivi: keys per channel per g tokens (r_k/g), values per token per head (H_kv).
    """
    rank_k, rank_v = np.asarray(rank_k, float), np.asarray(rank_v, float)
    if granularity in ("tensor", "channel") and tokens is None:
        raise StudyInputError(
            f"per-{granularity} metadata is amortised over the tokens: give tokens"
        )
    if granularity == "tensor":
        return 2.0 / np.asarray(tokens, float) + 0 * rank_k
    if granularity == "token":
        return 2.0 + 0 * rank_k
    if granularity == "channel":
        return (rank_k + rank_v) / np.asarray(tokens, float)
    if granularity == "group":
        return np.ceil(rank_k / group_size) + np.ceil(rank_v / group_size)
    if granularity == "kivi":
        return rank_k / group_size + float(heads) + 0 * rank_v
    raise StudyInputError(f"granularity must be one of {', '.join(GRANULARITIES)}")


def memory_ratio(
    rank_k: Any,
    rank_v: Any,
    bits: Any,
    heads: int,
    head_dim: int,
    window: int = 0,
    tokens: int | None = None,
    group_size: int = 32,
    metadata: bool = True,
    granularity: str = "kivi",
    symmetric: bool = False,
) -> Any:
    """Compressed / full KV-cache size of one layer (broadcasts over rank and bit arrays).

    Parameters
    ----------
    rank_k, rank_v
        Latent widths cached for keys and values (full width = ``heads · head_dim``).
    bits
        Bits per latent value; 16 means "not quantized" (fp16 latents, no metadata).
    heads, head_dim
        H_kv and d of the model.
    window
        Most recent tokens kept at full width and precision (needs ``tokens``).
    tokens
        Sequence length over which the window and per-tensor/per-channel metadata amortise;
        ``None`` = the long-context limit (only allowed with ``window = 0``).
    group_size, granularity, symmetric
        The quantizer's grouping (see :func:`groups_per_token`); symmetric stores no zero point.
    metadata
        Count the fp16 scales/zero points (papers usually do not).

    Examples
    --------
    >>> round(float(memory_ratio(819.2, 819.2, 4, 32, 128)), 4)
    0.0641
    >>> float(memory_ratio(819.2, 819.2, 4, 32, 128, metadata=False))
    0.05
    """
    if granularity not in GRANULARITIES:
        raise StudyInputError(f"granularity must be one of {', '.join(GRANULARITIES)}")
    width = int(heads) * int(head_dim)
    rank_k, rank_v, b = (np.asarray(v, dtype=float) for v in (rank_k, rank_v, bits))
    for name, r in (("rank_k", rank_k), ("rank_v", rank_v)):
        if np.any(r <= 0) or np.any(r > width):
            raise StudyInputError(f"{name} must be in (0, {width}] (heads × head_dim)")
    if np.any(b < 1) or np.any(b > 16):
        raise StudyInputError("bits must be between 1 and 16")
    if int(window) < 0:
        raise StudyInputError("window must be at least 0")
    if int(group_size) < 1:
        raise StudyInputError("group size must be at least 1")
    if window and tokens is None:
        raise StudyInputError("a full-precision window needs the sequence length (tokens)")
    if tokens is not None and int(tokens) < 1:
        raise StudyInputError("tokens must be at least 1")
    full = 2.0 * width * 16.0
    compressed = (rank_k + rank_v) * b
    if metadata:
        per_group = METADATA_BITS * (1 if symmetric else 2)
        groups = groups_per_token(rank_k, rank_v, granularity, int(group_size), heads, tokens)
        compressed = compressed + np.where(b < 16, per_group * groups, 0.0)
    if tokens is not None:
        kept = min(int(window), int(tokens))
        compressed = ((int(tokens) - kept) * compressed + kept * full) / int(tokens)
    return compressed / full
