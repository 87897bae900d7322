"""The rest of glassllm's forward pass, for the next-token loss after a compressed layer.

glassllm's own forward cannot take a modified cache, so the layers after the compressed one are
replayed here from its weights (float64): RMSNorm, grouped-query attention with RoPE, SwiGLU,
tied embeddings. ``tests/test_kvcache.py`` checks the replay against ``GlassLM.loss``.
"""

from __future__ import annotations

import functools

import numpy as np

from .data import _model, _trace, apply_rope, attention, merge_heads, split_heads


@functools.cache
def _weights(model: str) -> dict:
    net, _ = _model(model)
    f = lambda t: np.asarray(t.data, dtype=np.float64)  # noqa: E731
    blocks = [
        {
            "g1": f(b.norm1.gamma),
            "wq": f(b.attn.W_Q),
            "wk": f(b.attn.W_K),
            "wv": f(b.attn.W_V),
            "wo": f(b.attn.W_O),
            "g2": f(b.norm2.gamma),
            "w1": f(b.ffn.W1),
            "w2": f(b.ffn.W2),
            "w3": f(b.ffn.W3),
            "heads": b.attn.n_heads,
            "kv_heads": b.attn.n_kv_heads,
        }
        for b in net.blocks
    ]
    return {
        "blocks": blocks,
        "E": f(net.E),
        "gf": f(net.norm_f.gamma),
        "eps": net.cfg.eps,
        "base": float(net.cfg.rope_base),
    }


def _rms(x, gamma, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * gamma


def _ffn(x, w):
    gate = x @ w["w1"]
    return (gate / (1.0 + np.exp(-gate)) * (x @ w["w3"])) @ w["w2"]


def _block(x, w, eps, base):
    h = _rms(x, w["g1"], eps)
    q = apply_rope(split_heads(h @ w["wq"], w["heads"]), base)
    k = apply_rope(split_heads(h @ w["wk"], w["kv_heads"]), base)
    v = split_heads(h @ w["wv"], w["kv_heads"])
    x = x + merge_heads(attention(q, k, v)) @ w["wo"]
    return x + _ffn(_rms(x, w["g2"], eps), w)


@functools.lru_cache(maxsize=8)
def _residuals(model: str, ids: tuple[int, ...]) -> list[np.ndarray]:
    """Residual stream entering each block (the exact, uncompressed run)."""
    w = _weights(model)
    x = w["E"][np.asarray(ids)]
    out = []
    for blk in w["blocks"]:
        out.append(x)
        x = _block(x, blk, w["eps"], w["base"])
    return out


def loss_with_mix(model: str, ids: tuple[int, ...], layer: int, mix: np.ndarray) -> float:
    """Mean next-token cross-entropy (nats) when layer ``layer``'s per-head attention output
    (``attn.mix``, query_head × token × channel) is replaced by ``mix``; later layers recompute."""
    w = _weights(model)
    blk = w["blocks"][layer]
    x = _residuals(model, ids)[layer]
    x = x + merge_heads(mix) @ blk["wo"]
    x = x + _ffn(_rms(x, blk["g2"], w["eps"]), blk)
    for later in w["blocks"][layer + 1 :]:
        x = _block(x, later, w["eps"], w["base"])
    logits = _rms(x, w["gf"], w["eps"]) @ w["E"].T
    logits = logits[:-1]
    logits = logits - logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    targets = np.asarray(ids[1:])
    return float(-logp[np.arange(targets.size), targets].mean())


def baseline_loss(model: str, ids: tuple[int, ...], layer: int = 0) -> float:
    """The uncompressed loss, through the same replay (so a loss change has no replay offset)."""
    mix = _trace(model, ids)["layers"][layer]["mix"]
    return loss_with_mix(model, ids, layer, mix)
