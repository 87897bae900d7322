"""Your own keys and values, analysed instead of glassllm's, read from a ``.npy`` or
``.safetensors`` file through :func:`workbench.data.load_array` (one loader, one set of refusals:
pickles, truncated files, impossible shapes, NaN, sizes over the cap before any data is read).

Layouts accepted by :func:`activations_from_file`:

* **one array** (``.npy``, or a ``.safetensors`` file holding one tensor) of shape
  (tokens, head_dim) or (heads, tokens, head_dim), e.g. one layer's key cache. It is analysed
  as the cache matrix on both sides, keys = values = the array, and attention uses it as the
  queries too (self-attention, as :func:`~workbench.labs.kvcache.activations_from_arrays` does
  without queries). The key and value columns then differ only by how they are quantized
  (KIVI: keys per channel, values per token);
* **named tensors** in one ``.safetensors`` file: ``keys`` and ``values`` (each (tokens,
  head_dim) or (heads, tokens, head_dim), the same shape), optionally ``queries`` (query heads a
  multiple of the key heads, grouped-query attention).

* **attention inputs**: hidden states X, the residual stream entering a glassllm block, shape
  (tokens, d_model) with d_model = 128 and at most the model's 128-token context: a
  ``.safetensors`` tensor named ``inputs`` or ``hidden_states``, or any one array read with
  ``kind="inputs"`` (the page's "attention inputs" choice). :func:`activations_from_inputs` runs
  glassllm's own block on X (RMSNorm₁, then K = h W_K, V = h W_V, Q = h W_Q, RoPE, attention),
  for the layer chosen (the ``layer`` knob applies), so every factorisation applies, the
  weight-based ones too. There is no next-token loss: a loss needs the token ids that follow
  each position, and hidden states do not carry them (the layers after could be replayed, but
  there is nothing to score them against).

Keys of a cache file are taken as pre-RoPE; the lab applies RoPE (base 10,000, adjacent channel
pairs) for the attention metrics, as for glassllm. No weights come with a cache file, so the
factorisations are the data-driven ones (PCA of the cache, ThinK channel pruning) and there is
no next-token loss.

Caps (stated on the page): each tensor at most :data:`USER_MAX_BYTES` as float64, at most
:data:`MAX_TOKENS` tokens (attention costs heads × tokens² per bit-width), :data:`MAX_HEADS`
heads (key and query heads) and :data:`MAX_HEAD_DIM` channels per head, an even head_dim (RoPE
rotates channel pairs). Attention inputs: the same bytes cap, 2 to the model's context (128)
tokens, exactly d_model features, entries at most :data:`MAX_INPUT_ABS` in size (RMSNorm squares
them).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from workbench.data import MAX_HEADER_BYTES, load_array
from workbench.study import StudyInputError, knob_label

from .data import MODELS, activations_from_arrays, glassllm_status, model_shape, project_inputs

#: Most tokens of an uploaded cache (the attention matrices grow as tokens²).
MAX_TOKENS = 512
#: Most heads (key/value heads, and query heads) of an uploaded cache.
MAX_HEADS = 4
#: Most channels per head.
MAX_HEAD_DIM = 256
#: Largest tensor, as float64: MAX_HEADS × MAX_TOKENS × MAX_HEAD_DIM numbers (4 MiB).
USER_MAX_BYTES = 8 * MAX_HEADS * MAX_TOKENS * MAX_HEAD_DIM
SUFFIXES = (".npy", ".safetensors")
#: Tensor names read from a several-tensor ``.safetensors`` file.
NAMES = ("keys", "values", "queries")
#: Tensor names read as attention inputs (hidden states X) from a ``.safetensors`` file.
INPUT_NAMES = ("inputs", "hidden_states")
#: What a file holds: "auto" (a cache, unless a .safetensors tensor is named as inputs),
#: "cache" (keys/values) or "inputs" (hidden states X).
KINDS = ("auto", "cache", "inputs")
#: Largest |entry| of attention inputs: RMSNorm squares X (overflow beyond ~1e154).
MAX_INPUT_ABS = 1e100


def _shown(name: str, limit: int = 60) -> str:
    text = "".join(c if c.isprintable() else "?" for c in name)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tensor_names(path: Path) -> list[str] | None:
    """Names of the tensors in a ``.safetensors`` header, or None when it cannot be read (then
    :func:`load_array` gives the precise refusal)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER_BYTES:
                return None
            header = json.loads(fh.read(length).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    return [k for k in header if k != "__metadata__"]


def check_cache_shape(label: str, shape: tuple[int, ...], queries: bool = False) -> None:
    """StudyInputError unless ``shape`` is (tokens, head_dim) or (heads, tokens, head_dim)
    within the caps (module docstring)."""
    if len(shape) not in (2, 3):
        raise StudyInputError(
            f"{label}: expected (tokens, head_dim) or (heads, tokens, head_dim), got {shape}"
        )
    heads, tokens, dim = (1, *shape) if len(shape) == 2 else shape
    kind = "query heads" if queries else "heads"
    if not 1 <= heads <= MAX_HEADS:
        raise StudyInputError(f"{label}: {heads} {kind}; at most {MAX_HEADS} are analysed here")
    if not 2 <= tokens <= MAX_TOKENS:
        raise StudyInputError(f"{label}: {tokens} tokens; use 2 to {MAX_TOKENS} tokens")
    if not 2 <= dim <= MAX_HEAD_DIM or dim % 2:
        raise StudyInputError(
            f"{label}: head_dim {dim}; use an even number from 2 to {MAX_HEAD_DIM} "
            "(RoPE rotates channel pairs)"
        )


def activations_from_file(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    rope_base: float = 10000.0,
    kind: str = "auto",
    model: str = "en",
    layer: int = 1,
) -> xr.Dataset:
    """Keys and values from your ``.npy`` / ``.safetensors`` file, in the lab's layout.

    Parameters
    ----------
    path
        The file (a dashboard writes an upload to a private temporary file first).
    name
        The file name shown in messages (default: the path's name); its suffix must be that of
        ``path``.
    rope_base
        RoPE base applied to keys and queries of a cache file for the attention metrics.
    kind
        One of :data:`KINDS`: "auto" reads a cache unless a ``.safetensors`` tensor is named
        ``inputs`` / ``hidden_states``; "inputs" reads the file's one array as hidden states X.
    model, layer
        For attention inputs: the glassllm model and block that project X
        (:func:`activations_from_inputs`).

    Returns
    -------
    The Dataset of :func:`~workbench.labs.kvcache.activations_from_arrays` (pass it to
    :meth:`KVCacheStudy.use_arrays`), with attrs ``file`` and ``layout``.

    Raises
    ------
    ValueError
        A plain message naming the file and the broken limit (StudyInputError for shapes).
    """
    path = Path(path)
    label = _shown(name or path.name)
    suffix = Path(name or path.name).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{label}: use a .npy or .safetensors file")

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {_shown(str(kind), 20)!r}")

    def read(key: str | None = None, ndim=(2, 3)) -> np.ndarray:
        return load_array(path, max_bytes=USER_MAX_BYTES, ndim=ndim, name=label, key=key)

    names = _tensor_names(path) if suffix == ".safetensors" else None
    named = [k for k in INPUT_NAMES if k in (names or ())]
    if kind != "cache" and (named or kind == "inputs"):
        if names is not None and len(names) > 1 and not named:
            raise ValueError(
                f"{label}: holds {len(names)} tensors; name the hidden states "
                f"{' or '.join(INPUT_NAMES)}, or save one tensor"
            )
        hidden = read(named[0] if named else None, ndim=2)
        ds = activations_from_inputs(hidden, model, layer, label=label)
        if named:
            ds.attrs["layout"] += f" (tensor {named[0]})"
        return ds
    if names is not None and {"keys", "values"} <= set(names):
        arrays = {k: read(k) for k in NAMES if k in names}
        layout = " and ".join(k for k in NAMES if k in arrays) + " (named tensors)"
    else:
        if names is not None and len(names) > 1:
            shown = ", ".join(_shown(n, 20) for n in sorted(names)[:6])
            raise ValueError(
                f"{label}: holds {len(names)} tensors ({shown}); name them keys and values "
                "(and optionally queries), or save one tensor"
            )
        single = read()
        arrays = {"keys": single, "values": single}
        layout = "one array, used as keys, values and queries"
    for key, array in arrays.items():
        check_cache_shape(f"{label} ({key})", array.shape, queries=key == "queries")
    ds = activations_from_arrays(**arrays, rope_base=rope_base)
    ds.attrs.update(file=label, layout=layout)
    return ds


def activations_from_inputs(
    hidden, model: str = "en", layer: int = 1, *, label: str = "inputs"
) -> xr.Dataset:
    """Keys, values and queries of glassllm block ``layer`` for your attention inputs X.

    X (tokens, d_model) is the residual stream entering the block. glassllm's own block runs on
    it (:func:`workbench.labs.kvcache.data.project_inputs`): h = RMSNorm₁(X) = X / √(mean(X²) +
    ε) · γ₁, K = h W_K, V = h W_V, Q = h W_Q, RoPE on Q and K (as for a prompt), causal
    grouped-query attention. X taken from the model's residual stream for a prompt gives back
    that prompt's K, V and Q exactly.

    Returns the :func:`~workbench.labs.kvcache.load_activations` layout with the weights (every
    factorisation applies), plus ``hidden_states`` (token, feature): X itself, so that a Study
    can project it through another layer. No loss: X carries no token ids (module docstring).

    Raises StudyInputError, naming the bound, for a d_model other than the model's, tokens
    outside 2..context, NaN/inf or entries over :data:`MAX_INPUT_ABS`, a layer out of range.
    """
    ok, message = glassllm_status()
    if not ok:
        raise StudyInputError(f"{label}: attention inputs need glassllm's weights; {message}")
    if model not in MODELS:
        raise StudyInputError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    shape = model_shape(model)
    d, context = shape["d_model"], shape["context"]
    try:
        x = np.asarray(hidden, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StudyInputError(f"{label}: hidden states must be a numeric array ({exc})") from None
    if x.ndim != 2:
        raise StudyInputError(
            f"{label}: hidden states must have shape (tokens, {d}) for glassllm {model}, "
            f"got {x.shape}"
        )
    tokens, width = x.shape
    if width != d:
        raise StudyInputError(
            f"{label}: {width} features per token; glassllm {model}'s d_model (the width of its "
            f"residual stream) is {d}"
        )
    if not 2 <= tokens <= context:
        raise StudyInputError(
            f"{label}: {tokens} tokens; use 2 to {context} tokens (glassllm's context)"
        )
    if not np.all(np.isfinite(x)):
        raise StudyInputError(f"{label}: hidden states contain NaN or infinite values")
    if np.abs(x).max() > MAX_INPUT_ABS:
        raise StudyInputError(
            f"{label}: hidden states have entries over {MAX_INPUT_ABS:g} in size (RMSNorm "
            "squares them); rescale them"
        )
    if not (isinstance(layer, int | np.integer) and 0 <= layer < shape["layers"]):
        raise StudyInputError(f"layer must be a whole number from 0 to {shape['layers'] - 1}")
    ds = project_inputs(model, x, int(layer))
    ds["hidden_states"] = xr.Variable(
        ("token", "feature"), x, {"units": "1", "long_name": "your attention inputs X"}
    )
    ds.attrs.update(
        source=f"attention inputs through glassllm {model}",
        kind="inputs",
        file=label,
        layout=f"attention inputs X, {tokens} tokens × {d}, through glassllm {model}'s weights",
    )
    return ds


def project_to_layer(ds: xr.Dataset, layer: int) -> xr.Dataset:
    """The attention inputs of ``ds`` (from :func:`activations_from_inputs`) through another
    block of the same model (its K, V, Q and weights); ``ds`` itself for its own layer."""
    if int(layer) == int(ds.attrs["layer"]):
        return ds
    out = activations_from_inputs(
        ds["hidden_states"].values, ds.attrs["model"], int(layer), label=ds.attrs["file"]
    )
    out.attrs["layout"] = ds.attrs["layout"]
    return out


class UserArrays:
    """What :class:`~workbench.labs.kvcache.KVCacheStudy` does with your arrays (a mix-in).

    The arrays belong to one Study instance (``_user``), never to a cache shared between
    dashboard sessions; :meth:`session_copy` hands them to a worker thread's copy. They are used
    while ``source`` is "upload".
    """

    _user: xr.Dataset | None = None  # set per instance by use_arrays
    _user_compressors: dict | None = None  # this instance's factorisations of its arrays

    def _using_user(self) -> bool:
        return self.source == "upload" and self._user is not None

    def _using_inputs(self) -> bool:
        """True for attention inputs (weights known, the layer knob applies)."""
        return self._using_user() and "hidden_states" in self._user

    @property
    def unused_knobs(self) -> tuple[str, ...]:
        """Knobs the current data ignore: text for any upload, layer too for a cache file."""
        if not self._using_user():
            return ()
        return ("text",) if self._using_inputs() else ("text", "layer")

    def user_layer(self, layer: int | None = None) -> xr.Dataset:
        """The uploaded data at ``layer`` (default: the knob): attention inputs are projected
        through that block (kept per instance); a cache file is one layer."""
        if not self._using_inputs():
            return self._user
        layer = int(self.layer if layer is None else layer)
        key = ("layer", layer)
        if key not in self._user_compressors:
            self._user_compressors[key] = project_to_layer(self._user, layer)
        return self._user_compressors[key]

    def use_arrays(self, ds: xr.Dataset | None) -> dict[str, Any]:
        """Analyse user arrays instead (from :func:`activations_from_file`,
        :func:`activations_from_arrays` or :func:`activations_from_npz`); ``None`` to stop.

        Sets ``source`` to "upload" (back to "en" for None) and moves the knobs the arrays
        cannot take to what they can (no weights: PCA; ranks at most the arrays' width; the
        joint spectrum if the head shown does not exist; attention inputs: the layer they were
        projected through). Returns the knobs it changed.
        """
        before = self.values()
        self.attach_arrays(ds)
        if ds is None:
            if self.source == "upload":
                self.source = "en"
        else:
            width = ds.sizes["head"] * ds.sizes["channel"]
            fixes: dict[str, Any] = {"source": "upload"}
            if self.method in ("svd", "asvd") and "w_k" not in ds:
                fixes["method"] = "pca"
            if "hidden_states" in ds:
                fixes["layer"] = int(ds.attrs["layer"])
            for name in ("rank_k", "rank_v"):
                fixes[name] = min(getattr(self, name), width)
            if self.spectrum_head != "joint" and int(self.spectrum_head) >= ds.sizes["head"]:
                fixes["spectrum_head"] = "joint"
            self.param.update(**fixes)
        return {k: v for k, v in self.values().items() if before[k] != v}

    def attach_arrays(self, ds: xr.Dataset | None) -> None:
        """Attach (or detach) arrays without touching any knob (:meth:`use_arrays` also sets
        the knobs they need)."""
        self._user = ds
        self._user_compressors = {}

    @property
    def user_arrays(self) -> xr.Dataset | None:
        """The attached arrays (None if there are none), whatever the current source."""
        return self._user

    def session_copy(self, **changes: Any):
        """A Study with the same knobs (and ``changes``) and the same user arrays (a worker
        thread's copy; the arrays and their factorisations are shared, never copied)."""
        copy = type(self)(**{**self.values(), **changes})
        copy._user = self._user
        copy._user_compressors = getattr(self, "_user_compressors", {})
        return copy

    @property
    def max_rank(self) -> int:
        """Largest rank the data allow: 64 (the knobs' bound), or the user arrays' width."""
        if self._using_user():
            return min(64, self._user.sizes["head"] * self._user.sizes["channel"])
        return 64

    @property
    def spectrum_layer(self) -> int:
        """The layer label of :meth:`spectra` to show: a cache file is one layer, labelled 0;
        attention inputs are labelled by the layer that projects them."""
        return (
            int(self.user_layer().attrs.get("layer", 0)) if self._using_user() else int(self.layer)
        )

    def _require_data(self) -> None:
        if self.source == "upload" and self._user is None:
            raise StudyInputError(
                f"{knob_label(self, 'source')}: no arrays uploaded yet; upload a .npy or "
                ".safetensors file first, or choose a glassllm model or synthetic data"
            )

    def validate_user(self) -> None:
        """What user arrays cannot take: weight-based factorisations, ranks over their width,
        a spectrum head they do not have."""
        if not self._using_user():
            return
        width = self._user.sizes["head"] * self._user.sizes["channel"]
        heads = self._user.sizes["head"]
        if self.spectrum_head != "joint" and int(self.spectrum_head) >= heads:
            raise StudyInputError(
                f"{knob_label(self, 'spectrum_head')}: your arrays have {heads} head(s); "
                "choose the joint spectrum or head 0"
            )
        for name in ("rank_k", "rank_v"):
            if getattr(self, name) > width:
                raise StudyInputError(
                    f"{knob_label(self, name)} must be at most {width}, the arrays' width"
                )
        if self.method in ("svd", "asvd") and "w_k" not in self._user:
            raise StudyInputError(
                f"{knob_label(self, 'method')}: user arrays carry no weights; choose PCA or ThinK"
            )
