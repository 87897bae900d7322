"""Singular-value spectra of the cached K (pre/post RoPE) and V, per layer and head.

For each matrix M (token × channel; one KV head, or both heads side by side = "joint", the
matrix CSKV factors), optionally centred over tokens: singular values σ_i, cumulative energy
Σ_{i≤r} σ_i² / Σ σ_i², rank@90 % (smallest r with ≥ 90 % energy), effective rank
exp(H(σ/Σσ)) (Roy & Vetterli 2007) and stable rank Σσ²/σ₁².
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .data import merge_heads
from .lowrank import ENERGY_FRACTION, effective_rank, energy_fraction, rank_at, stable_rank

TENSORS = {"keys": "K (pre-RoPE)", "keys_rope": "K (post-RoPE)", "values": "V"}


def _matrices(ds: xr.Dataset, tensor: str) -> dict[str, np.ndarray]:
    a = ds[tensor].values
    out = {"joint": merge_heads(a)}
    out.update({str(h): a[h] for h in range(a.shape[0])})
    return out


def spectra(layers: list[xr.Dataset]) -> xr.Dataset:
    """Spectra and rank statistics of every layer's K, K_rope and V (see module docstring).

    Returns a Dataset with dims (layer, tensor, centered, head, index); ``index`` runs 1..width
    and per-head spectra (shorter) are padded with NaN.
    """
    width = layers[0]["keys"].shape[0] * layers[0]["keys"].shape[2]
    heads = list(_matrices(layers[0], "keys"))
    shape = (len(layers), len(TENSORS), 2, len(heads))
    sv = np.full((*shape, width), np.nan)
    energy = np.full((*shape, width), np.nan)
    r90, eff, stab = (np.zeros(shape) for _ in range(3))
    for li, ds in enumerate(layers):
        for ti, tensor in enumerate(TENSORS):
            for ci, centred in enumerate((False, True)):
                for hi, m in enumerate(_matrices(ds, tensor).values()):
                    if centred:
                        m = m - m.mean(axis=0)
                    s = np.linalg.svd(m, compute_uv=False)
                    sv[li, ti, ci, hi, : s.size] = s
                    energy[li, ti, ci, hi, : s.size] = energy_fraction(s)
                    r90[li, ti, ci, hi] = rank_at(s, ENERGY_FRACTION)
                    eff[li, ti, ci, hi] = effective_rank(s)
                    stab[li, ti, ci, hi] = stable_rank(s)
    dims = ("layer", "tensor", "centered", "head")
    out = xr.Dataset(
        {
            "singular_value": ((*dims, "index"), sv),
            "energy": ((*dims, "index"), energy),
            "rank90": (dims, r90),
            "effective_rank": (dims, eff),
            "stable_rank": (dims, stab),
        },
        coords={
            "layer": [int(ds.attrs.get("layer", i)) for i, ds in enumerate(layers)],
            "tensor": list(TENSORS),
            "centered": [0, 1],
            "head": heads,
            "index": np.arange(1, width + 1),
        },
        attrs={"energy_fraction": ENERGY_FRACTION},
    )
    meta = {
        "singular_value": ("1", "singular value sigma_i"),
        "energy": ("1", "cumulative energy sum_{j<=i} sigma_j^2 / sum sigma^2"),
        "rank90": ("1", "rank at 90 % energy"),
        "effective_rank": ("1", "effective rank exp(H(sigma / sum sigma))"),
        "stable_rank": ("1", "stable rank sum sigma^2 / sigma_1^2"),
    }
    for name, (units, long_name) in meta.items():
        out[name].attrs.update(units=units, long_name=long_name)
    return out
