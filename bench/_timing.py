"""Timing helpers shared by the benchmarks.

The machine these run on is shared and noisy, so every benchmark compares against a peer
measured in the same run, interleaving the two so that a burst of load hits both alike, and
reports the best of several repetitions (the least-disturbed run) next to the median.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Timing:
    """Seconds per call: best (least disturbed) and median over the repetitions."""

    best: float
    median: float
    runs: int

    def __str__(self) -> str:
        return f"{fmt_seconds(self.best)} (median {fmt_seconds(self.median)}, {self.runs} runs)"


def fmt_seconds(s: float) -> str:
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _once(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def best_of(fn: Callable[[], Any], repeat: int = 7, warmup: int = 1, max_seconds: float | None = None
            ) -> Timing:
    """Time ``fn()`` ``repeat`` times after ``warmup`` untimed calls (fewer if over max_seconds)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            times.append(_once(fn))
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
    finally:
        if gc_was:
            gc.enable()
    return Timing(min(times), statistics.median(times), len(times))


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int = 7, warmup: int = 1,
                max_seconds: float | None = None) -> dict[str, Timing]:
    """Time several functions in alternation (A B A B ...), so load spikes hit all of them."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(_once(fn))
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    return {k: Timing(min(v), statistics.median(v), len(v)) for k, v in times.items()}


def complex_gemm(m: int, k: int, n: int, seed: int = 0) -> tuple[Callable[[], Any], float]:
    """A numpy complex128 (m, k) @ (k, n) product and its real flop count (8 m k n).

    The operands have the layout our similarity uses ((n, k) stored row-major, transposed view),
    so the peer is the same BLAS call shape.
    """
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(m, k)) + 1j * rng.normal(size=(m, k))
    B = rng.normal(size=(n, k)) + 1j * rng.normal(size=(n, k))
    Bt = B.T

    def run() -> np.ndarray:
        return A @ Bt

    return run, 8.0 * m * k * n


def gemm_throughput(m: int, k: int, n: int, repeat: int = 15) -> tuple[float, Timing]:
    """Measured complex GEMM flop/s on this machine for the given shape (best of ``repeat``)."""
    run, flops = complex_gemm(m, k, n)
    t = best_of(run, repeat=repeat)
    return flops / t.best, t


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"
