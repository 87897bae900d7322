"""KV-cache lab benchmark: prints a table (ours vs the peer a user would otherwise write).

1. The (r, b) grid: one factorisation per layer, every rank a slice, bits vectorised, versus
   recomputing the weight SVD for each rank and quantizing one bit-width at a time.
2. The quantizer (per-channel, 32-token groups, 2/4/8 bits at once) versus a plain NumPy loop
   over groups and bit-widths. (torch/quanto are not installed here, so they are not compared.)
3. A dashboard-style knob change (new r, then new b) at the default sizes.

Run: ``python benchmarks/bench_kvcache.py``. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import os
import time

import numpy as np

from workbench.labs import kvcache as kv
from workbench.labs.kvcache.compress import quantize_latent, single_blas_thread


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def naive_grid(study, ranks, bits):
    """The obvious loop: per layer, rank and bit-width, fresh SVDs of W_K and W_V, one quantizer
    call, one attention evaluation (the same metrics as the lab's grid)."""
    q = study.quant_settings()
    out = np.empty((4, len(ranks), len(bits)))
    for layer in range(4):
        comp = study.compressor(layer)
        ds = study.layer_data(layer)
        x = ds["inputs"].values
        for i, r in enumerate(ranks):
            ak, bk = kv.low_rank_factors(ds["w_k"].values, int(r))  # recomputed per rank
            av, bv = kv.low_rank_factors(ds["w_v"].values, int(r))
            for j, bit in enumerate(bits):
                b1 = np.array([bit])
                k_hat = quantize_latent(x @ ak, b1, q, "keys", 2) @ bk
                v_hat = quantize_latent(x @ av, b1, q, "values", 2) @ bv
                metrics, _ = comp.attention_metrics(k_hat, v_hat, 0)
                out[layer, i, j] = metrics["output_rel_error"][0]
    return out


def reference_loop(x, bits_list, group=32):
    out = np.empty((len(bits_list), *x.shape))
    for n, bits in enumerate(bits_list):
        levels = 2**bits - 1
        for c in range(x.shape[1]):
            for s in range(0, x.shape[0], group):
                g = x[s : s + group, c]
                lo, hi = g.min(), g.max()
                step = (hi - lo) / levels if hi > lo else 1.0
                out[n, s : s + group, c] = lo + step * np.clip(np.rint((g - lo) / step), 0, levels)
    return out


def main():
    study = kv.KVCacheStudy(loss=False)
    ranks, bits = np.arange(1, 65), [1, 2, 3, 4, 5, 6, 7, 8, 16]
    study.grid(ranks=[1])  # warm the per-layer data and factorisation caches
    rows = []

    t_grid, grid = best_of(lambda: study.grid(ranks=ranks, bits=bits), repeat=2)
    with single_blas_thread():
        t_naive_keys, naive = best_of(lambda: naive_grid(study, ranks, bits), repeat=1)
    agree = np.max(np.abs(naive - grid.output_rel_error.values))
    rows.append(
        (
            "full (r,b) grid 64×9, 4 layers, all metrics",
            t_grid,
            "SVD per rank, one bit-width a call",
            t_naive_keys,
            f"max |Δ output err| {agree:.1e}",
        )
    )

    x = np.random.default_rng(0).standard_normal((4096, 64))
    with single_blas_thread():
        t_q, q = best_of(lambda: kv.quantize(x, [2, 4, 8], axis=0, group_size=32))
        t_ref, ref = best_of(lambda: reference_loop(x, [2, 4, 8]), repeat=1)
    rows.append(
        (
            "quantize 4096×64, K per channel/32 tok, b=2,4,8",
            t_q,
            "NumPy loop over groups",
            t_ref,
            f"max |Δ| {np.max(np.abs(q - ref)):.1e}",
        )
    )

    study.evaluate()
    times = []
    for r, b in ((24, 4), (24, 3), (16, 3), (16, 8)):
        study.checked_update(rank_k=r, rank_v=r, bits=b)
        t, _ = best_of(study.evaluate, repeat=1)
        times.append(t)
    study.loss = True
    study.evaluate()
    study.checked_update(rank_k=20)
    t_loss, _ = best_of(study.evaluate, repeat=1)
    rows.append(
        (
            "knob change (r or b), one layer, 128 tokens",
            max(times),
            "same with the loss replay",
            t_loss,
            "-",
        )
    )

    print(f"machine: {os.cpu_count()} CPU cores, NumPy {np.__version__}")
    print(f"{'ours':52s} {'time':>9s}   {'peer':36s} {'time':>9s} {'ratio':>7s}  agreement")
    for ours, t1, peer, t2, agreement in rows:
        print(
            f"{ours:52s} {t1 * 1e3:7.1f}ms   {peer:36s} {t2 * 1e3:7.1f}ms "
            f"{t2 / t1:6.1f}×  {agreement}"
        )


if __name__ == "__main__":
    main()
