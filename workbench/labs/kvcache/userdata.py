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

Keys are taken as pre-RoPE; the lab applies RoPE (base 10,000, adjacent channel pairs) for the
attention metrics, as for glassllm. No weights come with a file, so the factorisations are the
data-driven ones (PCA of the cache, ThinK channel pruning) and there is no next-token loss.

Caps (stated on the page): each tensor at most :data:`USER_MAX_BYTES` as float64, at most
:data:`MAX_TOKENS` tokens (attention costs heads × tokens² per bit-width), :data:`MAX_HEADS`
heads (key and query heads) and :data:`MAX_HEAD_DIM` channels per head, an even head_dim (RoPE
rotates channel pairs).
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

from .data import activations_from_arrays

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
    path: str | os.PathLike, *, name: str | None = None, rope_base: float = 10000.0
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
        RoPE base applied to keys and queries for the attention metrics.

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

    def read(key: str | None = None) -> np.ndarray:
        return load_array(path, max_bytes=USER_MAX_BYTES, ndim=(2, 3), name=label, key=key)

    names = _tensor_names(path) if suffix == ".safetensors" else None
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

    def use_arrays(self, ds: xr.Dataset | None) -> dict[str, Any]:
        """Analyse user arrays instead (from :func:`activations_from_file`,
        :func:`activations_from_arrays` or :func:`activations_from_npz`); ``None`` to stop.

        Sets ``source`` to "upload" (back to "en" for None) and moves the knobs the arrays
        cannot take to what they can (no weights: PCA; ranks at most the arrays' width; the
        joint spectrum if the head shown does not exist). Returns the knobs it changed.
        """
        before = self.values()
        self.attach_arrays(ds)
        if ds is None:
            if self.source == "upload":
                self.source = "en"
        else:
            width = ds.sizes["head"] * ds.sizes["channel"]
            fixes: dict[str, Any] = {"source": "upload"}
            if self.method in ("svd", "asvd"):
                fixes["method"] = "pca"
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
        """The layer label of :meth:`spectra` to show: user arrays are one layer, labelled 0."""
        return 0 if self._using_user() else int(self.layer)

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
        if self.method in ("svd", "asvd"):
            raise StudyInputError(
                f"{knob_label(self, 'method')}: user arrays carry no weights; choose PCA or ThinK"
            )
