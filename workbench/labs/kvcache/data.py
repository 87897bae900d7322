"""Keys, values and attention inputs: from glassllm's trained transformers, or synthetic.

Every source returns one :class:`xarray.Dataset` per layer with the same layout:

* ``keys`` (pre-RoPE), ``keys_rope`` (post-RoPE) and ``values`` on ``("head", "token", "channel")``
  (2 KV heads × T tokens × 32 channels for glassllm);
* ``queries`` and ``queries_rope`` on ``("query_head", "token", "channel")`` (4 query heads,
  grouped-query attention: query head h reads KV head h // 2);
* ``inputs`` on ``("token", "feature")``: the RMS-normalised attention input X with K = X W_K;
* ``w_k``, ``w_v`` on ``("feature", "kv_width")`` and ``w_o`` on ``("q_width", "feature")`` when
  the source has weights (glassllm, synthetic), absent for user arrays.

glassllm conventions (checked against the package, see the lab brief ``shared/science/kvcache.md``):
weights multiply from the right (x @ W), traced values are float64, RoPE rotates adjacent
channel pairs (2i, 2i+1) by pos · base^(−2i/d_k) from position 0, no BOS token is added, and
positions beyond the 128-token context raise. If glassllm is not installed the lab falls back to
:func:`synthetic_activations` and says so (:data:`GLASSLLM_AVAILABLE`, :func:`glassllm_status`).
"""

from __future__ import annotations

import functools
import io
import math
import os
from typing import Any

import numpy as np
import xarray as xr

from workbench import backend
from workbench.blas import single_blas_thread
from workbench.study import StudyInputError

#: The first 128 tokens (English glassllm tokenizer) of chapter 1 of Lewis Carroll's *Alice's
#: Adventures in Wonderland* (public domain, Project Gutenberg text with curly quotes). Encoding
#: this string gives back exactly those 128 tokens; it is the text the brief's ranks were
#: measured on.
ALICE_OPENING = (
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading, but it "
    "had no pictures or conversations in it, \u201cand what is the use of a book,\u201d thought "
    "Alice \u201cwithout pictures or conversations?\u201d\n\nSo she was considering in her own "
    "mind (as well as she could, for the hot day made her feel very sleep"
)
#: glassllm's context length: positions beyond it raise inside the model.
CONTEXT = 128
#: A user text longer than this (characters) is refused before tokenising (bounded work).
MAX_TEXT_CHARS = 4000
MODELS = ("en", "pt")


def glassllm_status() -> tuple[bool, str]:
    """(available, message): whether ``glassllm`` imports, and what the lab does otherwise."""
    if os.environ.get("WORKBENCH_KVCACHE_NO_GLASSLLM"):  # tests and demos of the fallback
        return False, "glassllm disabled by WORKBENCH_KVCACHE_NO_GLASSLLM: using synthetic data"
    try:
        import glassllm  # noqa: F401, PLC0415 - optional at run time
    except Exception as exc:  # a broken install must degrade, not crash the server
        return False, (
            f"glassllm==0.1.0 is not installed ({type(exc).__name__}): showing synthetic "
            "activations instead of the trained transformer"
        )
    return True, "glassllm 0.1.0: real activations of a trained transformer"


GLASSLLM_AVAILABLE = glassllm_status()[0]


# ================================================================================================
# RoPE and attention helpers shared by every source
# ================================================================================================
def rope_tables(head_dim: int, positions: int, base: float = 10000.0):
    """cos, sin of m·θ_i with θ_i = base^(−2i/d), shape (positions, d/2) (Su et al., RoFormer).

    Rounded to float32, as glassllm stores them: the lab's RoPE then reproduces the model's
    traced ``attn.rope_k`` to float64 rounding instead of differing by ~1e-8.
    """
    theta = base ** (-2.0 * np.arange(head_dim // 2) / head_dim)
    angles = np.outer(np.arange(positions), theta)
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
    return f32(np.cos(angles)), f32(np.sin(angles))


def apply_rope(x, base: float = 10000.0, xp=None):
    """Rotate adjacent channel pairs (2i, 2i+1) of ``x[..., token, channel]`` by position·θ_i.

    glassllm's convention: (x₀, x₁) → (x₀ cos − x₁ sin, x₀ sin + x₁ cos), positions from 0.
    Computes in ``x``'s namespace and device (any array-API namespace; the angle tables are
    made on the host and cross :func:`workbench.backend.from_host`).
    """
    xp = backend.namespace_or_numpy(x, xp=xp)
    tokens, d = x.shape[-2], x.shape[-1]
    cos, sin = (backend.from_host(t, like=x) for t in rope_tables(d, tokens, base))
    even, odd = x[..., 0::2], x[..., 1::2]
    out = xp.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def split_heads(x, heads: int):
    """(..., token, heads·d) → (..., heads, token, d)."""
    *lead, t, w = x.shape
    x = x.reshape(*lead, t, heads, w // heads)
    return x.swapaxes(-3, -2)


def merge_heads(x):
    """(..., heads, token, d) → (..., token, heads·d)."""
    x = x.swapaxes(-3, -2)
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


# ================================================================================================
# glassllm
# ================================================================================================
@functools.cache
def _model(model: str):
    if model not in MODELS:
        raise StudyInputError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    from glassllm import load_pretrained  # noqa: PLC0415 - optional dependency

    return load_pretrained(model)


def tokenize(text: str | None, model: str = "en") -> tuple[int, ...]:
    """Token ids of ``text``; ``None`` = the first 128 tokens of the Alice opening.

    Refuses an empty text, one over :data:`MAX_TEXT_CHARS` characters, or one beyond the
    128-token context (it is not silently cut: the user should know what is analysed).
    """
    _, tok = _model(model)
    if text is None:
        return tuple(tok.encode(ALICE_OPENING)[:CONTEXT])
    if not isinstance(text, str):
        raise StudyInputError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise StudyInputError("text is empty: type at least one word")
    if len(text) > MAX_TEXT_CHARS:
        raise StudyInputError(
            f"text has {len(text)} characters; the model's context is {CONTEXT} tokens "
            f"(at most {MAX_TEXT_CHARS} characters are read): shorten it"
        )
    ids = tuple(tok.encode(text))
    if len(ids) > CONTEXT:
        raise StudyInputError(
            f"text is {len(ids)} tokens long; the model's context is {CONTEXT} tokens: shorten it"
        )
    if len(ids) < 2:
        raise StudyInputError("text must be at least 2 tokens long (attention needs a history)")
    return ids


@functools.lru_cache(maxsize=8)
def _trace(model: str, ids: tuple[int, ...]) -> dict[str, Any]:
    """Run glassllm once on ``ids`` and keep every layer's attention tensors (float64)."""
    from glassllm import Tracer  # noqa: PLC0415

    net, _ = _model(model)
    tracer = Tracer()
    net.forward(list(ids), trace=tracer)
    layers = [_traced_layer(tracer, i, block.attn) for i, block in enumerate(net.blocks)]
    return {"layers": layers, "rope_base": float(net.cfg.rope_base)}


def _traced_layer(tracer, i: int, att) -> dict[str, np.ndarray]:
    """Layer ``i``'s attention tensors from a glassllm trace, and its weights (float64)."""
    return {
        "keys": tracer.get("attn.k", layer=i).value,
        "keys_rope": tracer.get("attn.rope_k", layer=i).value,
        "values": tracer.get("attn.v", layer=i).value,
        "queries": tracer.get("attn.q", layer=i).value,
        "queries_rope": tracer.get("attn.rope_q", layer=i).value,
        "mix": tracer.get("attn.mix", layer=i).value,
        "inputs": tracer.get("norm.attn", layer=i).value,
        "w_k": att.W_K.data.astype(np.float64),
        "w_v": att.W_V.data.astype(np.float64),
        "w_o": att.W_O.data.astype(np.float64),
    }


def model_shape(model: str) -> dict[str, int]:
    """d_model, layers and context of a glassllm model (what attention inputs must match)."""
    net, _ = _model(model)
    return {"d_model": net.cfg.d_model, "layers": len(net.blocks), "context": net.cfg.max_len}


def project_inputs(model: str, hidden: np.ndarray, layer: int) -> xr.Dataset:
    """Keys, values and queries of glassllm block ``layer`` for residual-stream inputs ``hidden``.

    ``hidden`` is X, the residual stream entering the block, (token, d_model), positions from 0.
    glassllm's own block runs on it (so nothing is re-implemented): h = RMSNorm₁(X) =
    X / √(mean(X²) + ε) · γ₁, K = h W_K, V = h W_V, Q = h W_Q, RoPE on Q and K, causal
    grouped-query attention. X enters at the precision the model has at that point (float32, its
    embeddings' type, for layer 0; float64 after). X taken from glassllm's own residual stream therefore gives back the traced K, V, Q exactly.
    Shapes are checked by the caller (:func:`workbench.labs.kvcache.userdata.activations_from_inputs`).
    """
    from glassllm import Tensor, Tracer  # noqa: PLC0415 - optional dependency

    net, _ = _model(model)
    block = net.blocks[int(layer)]
    tracer = Tracer()
    # The precision the model has there: its float32 token embeddings enter layer 0, and the
    # residual stream is float64 after the first block (glassllm promotes in the norm's output).
    dtype = net.E.data.dtype if int(layer) == 0 else np.float64
    x = Tensor(np.asarray(hidden, dtype=dtype)[None])
    # The FFN half runs too (negligible). No glassllm.no_grad: it flips a process-wide flag,
    # which concurrent sessions' threads could leave switched off.
    block(x, int(layer), tracer)
    ds = _to_dataset(
        _traced_layer(tracer, int(layer), block.attn), rope_base=float(net.cfg.rope_base)
    )
    ds.attrs.update(model=model, layer=int(layer), n_tokens=int(x.shape[1]))
    return ds


def n_layers(source: str) -> int:
    return 4 if source == "synthetic" else len(_model(source)[0].blocks)


def load_activations(model: str = "en", text: str | None = None, layer: int = 1) -> xr.Dataset:
    """Real keys, values and attention inputs of one layer of a glassllm model.

    Parameters
    ----------
    model
        ``"en"`` or ``"pt"`` (``glassllm.load_pretrained``).
    text
        Any text up to the 128-token context; ``None`` = the first 128 tokens of chapter 1 of
        *Alice's Adventures in Wonderland* (:data:`ALICE_OPENING`).
    layer
        0..3.

    Returns
    -------
    Dataset with ``keys``/``keys_rope``/``values`` (head, token, channel), ``queries``/
    ``queries_rope``/``mix`` (query_head, token, channel), ``inputs`` (token, feature) and the
    weights ``w_k``, ``w_v`` (feature, kv_width), ``w_o`` (q_width, feature). ``mix`` is the
    model's own per-head attention output (``attn.mix``), a reference for the lab's attention.
    """
    ok, message = glassllm_status()
    if not ok:
        raise StudyInputError(message)
    ids = tokenize(text, model)
    trace = _trace(model, ids)
    layers = trace["layers"]
    if not (isinstance(layer, int | np.integer) and 0 <= layer < len(layers)):
        raise StudyInputError(f"layer must be a whole number from 0 to {len(layers) - 1}")
    ds = _to_dataset(layers[int(layer)], rope_base=trace["rope_base"])
    ds.attrs.update(
        source=f"glassllm {model}",
        model=model,
        layer=int(layer),
        n_tokens=len(ids),
        text="Alice opening (first 128 tokens)" if text is None else "user text",
    )
    return ds


def _to_dataset(arrays: dict[str, np.ndarray], rope_base: float = 10000.0) -> xr.Dataset:
    kv = ("head", "token", "channel")
    q = ("query_head", "token", "channel")
    dims = {
        "keys": kv,
        "keys_rope": kv,
        "values": kv,
        "queries": q,
        "queries_rope": q,
        "mix": q,
        "inputs": ("token", "feature"),
        "w_k": ("feature", "kv_width"),
        "w_v": ("feature", "kv_width"),
        "w_o": ("q_width", "feature"),
    }
    names = {
        "keys": "keys K = X W_K (pre-RoPE)",
        "keys_rope": "keys after RoPE",
        "values": "values V = X W_V",
        "queries": "queries Q = X W_Q (pre-RoPE)",
        "queries_rope": "queries after RoPE",
        "mix": "per-head attention output softmax(QK^T/sqrt d) V",
        "inputs": "attention input X (RMS-normalised)",
        "w_k": "key projection W_K",
        "w_v": "value projection W_V",
        "w_o": "output projection W_O",
    }
    variables = {}
    for name, value in arrays.items():
        if name in dims:
            var = xr.Variable(dims[name], np.asarray(value, dtype=np.float64))
            var.attrs = {"units": "1", "long_name": names[name]}
            variables[name] = var
    tokens = np.asarray(arrays["keys"]).shape[1]
    return xr.Dataset(
        variables, coords={"token": np.arange(tokens)}, attrs={"rope_base": rope_base}
    )


# ================================================================================================
# Synthetic generator
# ================================================================================================
def synthetic_activations(
    tokens: int = 128,
    seed: int = 0,
    *,
    features: int = 128,
    kv_heads: int = 2,
    query_heads: int = 4,
    head_dim: int = 32,
    input_decay: float = 1.0,
    key_decay: float = 1.5,
    value_decay: float = 0.5,
    mean_strength: float = 2.0,
    outlier_channels: int = 3,
    outlier_scale: float = 10.0,
    layer: int = 0,
) -> xr.Dataset:
    """Activations with the structure the brief describes, in glassllm's layout.

    * X = Z C^{1/2} + m 1ᵀ: rows of a Gaussian with power-law covariance eigenvalues
      λ_i ∝ i^(−``input_decay``) and a common mean direction m (norm ``mean_strength`` × the
      typical row norm), then RMS-normalised like glassllm's ``norm.attn``;
    * W_K = U diag(i^(−``key_decay``)) Vᵀ (steep spectrum), W_V with i^(−``value_decay``) (flatter),
      W_Q shares W_K's input subspace so that Q·K is large; random orthogonal U, V;
    * ``outlier_channels`` key channels scaled to ``outlier_scale`` × the median channel (the ~10× key outliers
      of KIVI/KVQuant), then RoPE.

    Deterministic in ``seed`` (and ``layer``, which only shifts the seed).
    """
    if not (2 <= int(tokens) <= 4096):
        raise StudyInputError(f"tokens must be between 2 and 4096, got {tokens}")
    with single_blas_thread():
        return _synthetic(
            int(tokens),
            int(seed),
            features,
            kv_heads,
            query_heads,
            head_dim,
            input_decay,
            key_decay,
            value_decay,
            mean_strength,
            outlier_channels,
            outlier_scale,
            int(layer),
        )


def _synthetic(
    tokens,
    seed,
    features,
    kv_heads,
    query_heads,
    head_dim,
    input_decay,
    key_decay,
    value_decay,
    mean_strength,
    outlier_channels,
    outlier_scale,
    layer,
) -> xr.Dataset:
    rng = np.random.default_rng([int(seed), int(layer), 20240915])
    width = kv_heads * head_dim

    def orthogonal(n, k):
        q, r = np.linalg.qr(rng.standard_normal((n, k)))
        return q * np.sign(np.diag(r))

    lam = np.arange(1, features + 1, dtype=float) ** (-input_decay)
    basis = orthogonal(features, features)
    x = (rng.standard_normal((tokens, features)) * np.sqrt(lam)) @ basis.T
    mean_dir = orthogonal(features, 1)[:, 0]
    x += mean_strength * np.sqrt(lam.sum()) * mean_dir
    x /= np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-6)

    def weight(decay, n_out):
        s = np.arange(1, n_out + 1, dtype=float) ** (-decay)
        return orthogonal(features, n_out) @ np.diag(s) @ orthogonal(n_out, n_out).T

    w_k = weight(key_decay, width)
    w_v = weight(value_decay, width)
    outliers = rng.choice(width, size=int(outlier_channels), replace=False)
    # outlier channels: the key channel's size set to outlier_scale × the median channel's
    norms = np.abs(x @ w_k).mean(axis=0)
    w_k[:, outliers] *= outlier_scale * np.median(norms) / norms[outliers]
    repeat = query_heads // kv_heads
    w_q = np.repeat(split_heads(w_k, kv_heads), repeat, axis=0)  # queries aligned with keys
    w_q = merge_heads(w_q) + 0.5 * weight(value_decay, query_heads * head_dim) / np.sqrt(features)
    w_o = (
        orthogonal(query_heads * head_dim, features)
        if query_heads * head_dim >= features
        else (orthogonal(features, query_heads * head_dim).T)
    )
    k = split_heads(x @ w_k, kv_heads)
    v = split_heads(x @ w_v, kv_heads)
    q = split_heads(x @ w_q, query_heads)
    q_rope, k_rope = apply_rope(q), apply_rope(k)
    mix = attention(q_rope, k_rope, v)
    ds = _to_dataset(
        {
            "keys": k,
            "keys_rope": k_rope,
            "values": v,
            "queries": q,
            "queries_rope": q_rope,
            "mix": mix,
            "inputs": x,
            "w_k": w_k,
            "w_v": w_v,
            "w_o": w_o,
        }
    )
    ds.attrs.update(source="synthetic", model="synthetic", layer=int(layer), n_tokens=int(tokens))
    ds.attrs["outlier_channels"] = ",".join(str(int(c)) for c in np.sort(outliers))
    return ds


def attention(q_rope, k_rope, v, xp=None):
    """Causal grouped-query attention softmax(QKᵀ/√d + M) V per query head (glassllm ``attn.mix``).

    Computes in the inputs' namespace and device (any array-API namespace; the causal mask is
    made on the host and crosses :func:`workbench.backend.from_host`).
    """
    xp = backend.namespace_or_numpy(q_rope, k_rope, v, xp=xp)
    repeat = q_rope.shape[-3] // k_rope.shape[-3]
    k_all = xp.repeat(k_rope, repeat, axis=-3)
    v_all = xp.repeat(v, repeat, axis=-3)
    scores = q_rope @ xp.moveaxis(k_all, -1, -2) / math.sqrt(q_rope.shape[-1])
    t = scores.shape[-1]
    mask = backend.from_host(np.triu(np.ones((t, t), dtype=bool), 1), like=scores)
    scores = xp.where(mask, -math.inf, scores)
    scores = scores - xp.max(scores, axis=-1, keepdims=True)
    p = xp.exp(scores)
    return (p / xp.sum(p, axis=-1, keepdims=True)) @ v_all


# ================================================================================================
# User arrays
# ================================================================================================
def activations_from_arrays(keys, values, queries=None, rope_base: float = 10000.0) -> xr.Dataset:
    """A user's own pre-RoPE keys and values (head, token, channel), queries optional.

    No weights come with user arrays, so only the data-driven factorisations (PCA, ThinK) apply.
    Without queries, attention metrics use the keys themselves as queries (self-similarity).
    """
    arrays = {}
    for name, value in (("keys", keys), ("values", values), ("queries", queries)):
        if value is None:
            continue
        try:
            a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise StudyInputError(f"{name} must be a numeric array: {exc}") from exc
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise StudyInputError(
                f"{name} must have shape (head, token, channel) or (token, channel), got {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            raise StudyInputError(f"{name} contains NaN or infinite values")
        arrays[name] = a
    k, v = arrays["keys"], arrays["values"]
    if k.shape != v.shape:
        raise StudyInputError(f"keys {k.shape} and values {v.shape} must have the same shape")
    h, t, d = k.shape
    if t < 2 or d < 2 or d % 2 or t > 4096 or h * d > 1024:
        raise StudyInputError(
            f"arrays of shape {k.shape} are not usable: need 2..4096 tokens and an even channel "
            "count, at most 1024 channels over all heads"
        )
    q = arrays.get("queries", k)
    if q.shape[1:] != k.shape[1:] or q.shape[0] % h:
        raise StudyInputError(
            f"queries {q.shape} must have the keys' (token, channel) shape {k.shape[1:]} and a "
            "head count that is a multiple of the keys' heads"
        )
    k_rope, q_rope = apply_rope(k, rope_base), apply_rope(q, rope_base)
    ds = _to_dataset(
        {
            "keys": k,
            "keys_rope": k_rope,
            "values": v,
            "queries": q,
            "queries_rope": q_rope,
            "mix": attention(q_rope, k_rope, v),
        },
        rope_base=rope_base,
    )
    ds.attrs.update(source="user arrays", model="user", layer=0, n_tokens=int(t))
    return ds


def activations_from_npz(file) -> xr.Dataset:
    """Read ``keys``/``values`` (and optional ``queries``) from an ``.npz``; pickles are refused.

    ``file`` is a path, a file object or the raw bytes of an upload. ``allow_pickle=False``:
    loading a pickle could run arbitrary code, so object arrays and pickle files are refused.
    """
    if isinstance(file, bytes | bytearray):
        file = io.BytesIO(file)
    try:
        loaded = np.load(file, allow_pickle=False)
    except ValueError as exc:  # numpy's refusal of pickled content
        raise StudyInputError(
            f"this file holds pickled objects, which are refused for safety ({exc}); save plain "
            "arrays with numpy.savez"
        ) from exc
    except (OSError, EOFError) as exc:
        raise StudyInputError(f"not a readable .npz file: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise StudyInputError("expected an .npz archive with arrays 'keys' and 'values'")
    with loaded:
        missing = {"keys", "values"} - set(loaded.files)
        if missing:
            raise StudyInputError(f"the .npz lacks {', '.join(sorted(missing))}")
        try:
            arrays = {n: loaded[n] for n in ("keys", "values", "queries") if n in loaded.files}
        except ValueError as exc:  # an object array inside the archive is a pickle
            raise StudyInputError(
                f"the .npz holds pickled object arrays, which are refused for safety ({exc})"
            ) from exc
    return activations_from_arrays(**arrays)
