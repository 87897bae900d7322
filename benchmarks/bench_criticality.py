"""Criticality lab benchmark: batched random networks vs a per-network loop; flow and phase timings.

Prints a table. The Monte-Carlo is 10^4 networks of width 64 and depth 32 (ReLU at criticality,
C_W = 2, C_b = 0) with real weight matrices: batched (``run_networks``: one (chunk, n, n) stack
and one ``np.matmul`` per layer) against the loop a user would write (one network at a time,
one n × n matrix per layer). The loop is timed on ``--loop-networks`` networks and scaled to 10^4
(it is linear in the number of networks; the scaled figure is marked). The exact O(S n L) sampler
is listed too, and every κ is compared with the exact 3[(1 + 5/n)^(L−1) − 1].

At width 64 both real-weight runs draw 1.3·10⁹ Gaussian numbers, and drawing them alone takes
~16 ns each on this machine (printed below), so neither can finish in 2 s and batching cannot be
20× faster than the loop there; the table over widths shows where batching pays (small n, where
the loop's per-matrix Python overhead dominates). The exact sampler meets the issue's target.

    python benchmarks/bench_criticality.py [--networks 10000] [--loop-networks 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from workbench.labs import criticality as cr
from workbench.labs.criticality import phases


def loop_networks(width, depth, networks, seed=0, cw=2.0):
    """The per-network Python loop: same model, one network and one layer at a time."""
    rng = np.random.default_rng(seed)
    m2 = np.empty(networks)
    m4 = np.empty(networks)
    x = np.ones(width)
    for s in range(networks):
        h = x
        for _ in range(depth):
            w = rng.standard_normal((width, width)) * np.sqrt(cw / width)
            z = w @ h
            h = np.maximum(z, 0.0)
        m2[s], m4[s] = np.mean(z**2), np.mean(z**4)
    return m2, m4


def best(f, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks", type=int, default=10_000)
    ap.add_argument("--loop-networks", type=int, default=500)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=32)
    args = ap.parse_args()
    n, depth, s = args.width, args.depth, args.networks
    exact = float(cr.kurtosis_exact_scale_invariant("relu", n, depth))
    print(f"Monte-Carlo: ReLU at criticality, {s} networks × width {n} × depth {depth}")
    print(f"exact κ = 3[(1 + 5/n)^(L−1) − 1] = {exact:.4f}\n")
    rows = []

    t = time.perf_counter()
    _, m2, m4 = cr.run_networks("relu", 2.0, 0.0, n, depth, s, seed=1)
    t_batch = time.perf_counter() - t
    k, e = cr.kurtosis_with_error(m2, m4)
    rows.append(("batched real networks (np.matmul stack)", t_batch, "", k[-1], e[-1]))

    sub = min(args.loop_networks, s)
    t = time.perf_counter()
    lm2, lm4 = loop_networks(n, depth, sub, seed=2)
    t_loop_sub = time.perf_counter() - t
    t_loop = t_loop_sub * s / sub
    kl, el = cr.kurtosis_with_error(lm2[:, None], lm4[:, None])
    rows.append((f"per-network loop ({sub} timed, ×{s / sub:g})", t_loop, "scaled", kl[-1], el[-1]))

    t = time.perf_counter()
    g, _ = cr.sample_second_moments("relu", 2.0, 0.0, n, depth, s, seed=3)
    t_exact = time.perf_counter() - t
    kg, eg = cr.kurtosis_from_second_moments(g)
    rows.append(("exact G sampler, batched (O(S n L))", t_exact, "", kg[-1], eg[-1]))

    print(f"{'method':48s} {'time [s]':>9s} {'':7s} {'κ':>8s} {'± SE':>7s} {'(κ−exact)/SE':>13s}")
    for name, tt, note, kk, ee in rows:
        print(f"{name:48s} {tt:9.3f} {note:7s} {kk:8.4f} {ee:7.4f} {(kk - exact) / ee:13.2f}")
    print(f"\nbatched vs per-network loop (real weights): {t_loop / t_batch:.2f}×")
    draws = s * depth * (n * n + n)
    print(
        f"Gaussian draws in the real-weight run: {draws:.3g}; batched time per draw "
        f"{t_batch / draws * 1e9:.1f} ns"
    )
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    for _ in range(10):
        rng.standard_normal((1000, n, n))
    t_rng = (time.perf_counter() - t) / (10 * 1000 * n * n)
    print(
        f"np.random.Generator.standard_normal alone: {t_rng * 1e9:.1f} ns per draw "
        f"(lower bound for real weights: {t_rng * draws:.2f} s)\n"
    )

    # Where batching pays: the loop's Python overhead per (network, layer) is fixed (~10 µs),
    # the random numbers cost n² × ~15 ns; batching removes the first, never the second.
    print(
        f"{'width n (10^4 networks, depth 32)':36s} {'batched [s]':>11s} {'loop [s]':>9s} {'ratio':>6s}"
    )
    for width in (4, 8, 16, 32):
        sub = 1000
        t = time.perf_counter()
        cr.run_networks("relu", 2.0, 0.0, width, depth, s, seed=1)
        tb = time.perf_counter() - t
        t = time.perf_counter()
        loop_networks(width, depth, sub, seed=2)
        tl = (time.perf_counter() - t) * s / sub
        print(f"{width:<36d} {tb:11.3f} {tl:9.3f} {tl / tb:6.1f}")
    print()

    print(f"{'infinite-width update':48s} {'time [ms]':>10s}")
    for act in ("tanh", "relu", "gelu"):
        tk, _ = best(lambda a=act: cr.kernel_flow(a, 1.5, 0.05, 200, 1.0))
        tc, _ = best(lambda a=act: cr.correlation_flow(a, 1.5, 0.05, 200, 1.0, 0.5))
        phases._table.cache_clear()
        tp_cold, _ = best(lambda a=act: cr.phase_diagram(a), repeat=1)
        tp, _ = best(lambda a=act: cr.phase_diagram(a))
        print(f"{act + ': kernel flow, depth 200':48s} {tk * 1e3:10.2f}")
        print(f"{act + ': correlation flow, depth 200':48s} {tc * 1e3:10.2f}")
        print(
            f"{act + ': 200×200 phase grid (cold / table cached)':48s} "
            f"{tp_cold * 1e3:6.0f} / {tp * 1e3:.0f}"
        )


if __name__ == "__main__":
    main()
