"""KV-cache compression by rank and bit-width (CSKV, arXiv 2409.10593; quantization survey,
arXiv 2103.13630), on the keys and values of small trained transformers (``glassllm``).

Modules: :mod:`.data` (glassllm activations, synthetic generator, user arrays),
:mod:`.userdata` (your own K/V from a ``.npy``/``.safetensors`` file, with its caps), :mod:`.quant`
(uniform affine quantizer and SQNR theory), :mod:`.lowrank` (SVD/ASVD/PCA/ThinK factorisations,
rank statistics), :mod:`.memory` (cache arithmetic), :mod:`.compress` (rank → bits → attention
metrics), :mod:`.model` (loss replay), :mod:`.spectra`, :mod:`.study` and :mod:`.figures`
(HoloViews; not imported here, so importing the lab stays light).

>>> from workbench.labs import kvcache
>>> round(float(kvcache.memory_ratio(12.8, 12.8, 16, heads=2, head_dim=32)), 3)
0.2
"""

from .compress import QuantSettings
from .data import (
    ALICE_OPENING,
    GLASSLLM_AVAILABLE,
    activations_from_arrays,
    activations_from_npz,
    apply_rope,
    glassllm_status,
    load_activations,
    synthetic_activations,
)
from .lowrank import (
    eckart_young_error,
    effective_rank,
    energy_fraction,
    factorise,
    low_rank_factors,
    rank_at,
    stable_rank,
    weight_factors,
)
from .memory import ARCHITECTURES, CSKV_POINTS, kv_bytes_per_token, memory_ratio
from .quant import quantize, quantize_cells, sqnr_curve, sqnr_db, sqnr_theory
from .study import KVCacheStudy, clear_caches, pareto_front, pareto_points
from .userdata import USER_MAX_BYTES, activations_from_file

__all__ = [
    "ALICE_OPENING",
    "ARCHITECTURES",
    "CSKV_POINTS",
    "GLASSLLM_AVAILABLE",
    "KVCacheStudy",
    "QuantSettings",
    "USER_MAX_BYTES",
    "activations_from_arrays",
    "activations_from_file",
    "activations_from_npz",
    "apply_rope",
    "clear_caches",
    "eckart_young_error",
    "effective_rank",
    "energy_fraction",
    "factorise",
    "glassllm_status",
    "kv_bytes_per_token",
    "load_activations",
    "low_rank_factors",
    "memory_ratio",
    "pareto_front",
    "pareto_points",
    "quantize",
    "quantize_cells",
    "rank_at",
    "sqnr_curve",
    "sqnr_db",
    "sqnr_theory",
    "stable_rank",
    "synthetic_activations",
    "weight_factors",
]
