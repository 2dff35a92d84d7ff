"""Shot-based similarity benchmark: one batched qiskit-aer run against a per-pair loop.

``python -m bench.sampled`` estimates fidelities with shots (zz map, n=4, reps=2, alpha=0.5,
1024 shots) for Q=10 queries x N=60 cases:

- qcbr's ``sampled_fidelity_matrix``: every pair is a parameter binding of one transpiled
  circuit, all in a single ``AerSimulator.run`` (compute-uncompute and swap test);
- per-pair loops on the same pairs and shots, one simulator call per pair:
  * tuned: the parameterised pair circuit transpiled once, then one ``AerSimulator.run`` per
    pair (the strictest peer: it differs from ours only by not batching);
  * SamplerV2: the same transpiled circuit, one ``qiskit_aer.primitives.SamplerV2.run`` per pair;
  * naive: per pair, bind ``fm.circuit(x)`` and ``fm.circuit(y)`` into the pair circuit,
    transpile it and run it (what a loop without parameter binding does).
  The loops run on a subsample of pairs, interleaved with the batched runs (best of rounds),
  and are compared per pair.

Target: batched >= 30x faster per pair than a per-pair loop; printed against each loop. Every
estimate is checked against the exact fidelity (within 5 binomial standard errors).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from bench._timing import fmt_seconds, verdict

N_QUBITS, Q, N, SHOTS = 4, 10, 60, 1024
LOOP_PAIRS = 30  # per-pair loops: tuned and SamplerV2
NAIVE_PAIRS = 8  # the naive loop transpiles per pair: fewer pairs keep the run short


def _bound(p: np.ndarray, shots: int, scale: float = 1.0) -> np.ndarray:
    return scale * (5 * np.sqrt(np.clip(p * (1 - p), 0, None) / shots) + 1.0 / shots)


def run_method(method: str, rounds: int, results: dict) -> None:
    from qiskit import transpile
    from qiskit_aer.primitives import SamplerV2

    from qcbr.encoding import get_feature_map
    from qcbr.similarity import (
        _noise_setup,
        fidelity_matrix,
        pair_circuit,
        sampled_fidelity_matrix,
    )

    rng = np.random.default_rng(7)
    fm = get_feature_map("zz", N_QUBITS, reps=2, alpha=0.5)
    XQ = rng.uniform(0, np.pi, (Q, N_QUBITS))
    XS = rng.uniform(0, np.pi, (N, N_QUBITS))
    K = fidelity_matrix(XQ, XS, fm)
    pairs = [(int(i), int(j)) for i, j in zip(rng.integers(0, Q, LOOP_PAIRS),
                                              rng.integers(0, N, LOOP_PAIRS))]

    # the very simulator configuration the batched path uses, so that only batching differs
    qc, px, py = pair_circuit(fm, method)
    sim, _ = _noise_setup(None, qc.num_qubits, None)
    tqc = transpile(qc, backend=sim, optimization_level=0, seed_transpiler=0)
    sampler = SamplerV2.from_backend(sim, seed=1)
    present = set(tqc.parameters)
    order = [p for p in list(px) + list(py) if p in present]
    col = {p: k for k, p in enumerate(list(px) + list(py))}

    def p_zero_to_f(p0: float) -> float:
        return p0 if method == "compute_uncompute" else min(1.0, max(0.0, 2 * p0 - 1))

    def loop_run() -> list[float]:
        out = []
        for i, j in pairs:
            vals = np.concatenate([XQ[i], XS[j]])
            binds = [{p: [float(vals[col[p]])] for p in order}]
            res = sim.run(tqc, shots=SHOTS, parameter_binds=binds, seed_simulator=1).result()
            out.append(p_zero_to_f(res.results[0].data.counts.get("0x0", 0) / SHOTS))
        return out

    def loop_sampler() -> list[float]:
        out = []
        for i, j in pairs:
            vals = np.concatenate([XQ[i], XS[j]])
            values = np.array([vals[col[p]] for p in order])
            res = sampler.run([(tqc, values)], shots=SHOTS).result()
            bits = next(iter(res[0].data.values())).array  # (shots, bytes)
            out.append(p_zero_to_f(float(np.mean(np.all(bits == 0, axis=-1)))))
        return out

    def loop_naive() -> list[float]:
        out = []
        for i, j in pairs[:NAIVE_PAIRS]:
            vals = np.concatenate([XQ[i], XS[j]])
            bound = qc.assign_parameters({p: float(vals[col[p]]) for p in col})
            t = transpile(bound, backend=sim, optimization_level=0)
            res = sim.run(t, shots=SHOTS, seed_simulator=1).result()
            out.append(p_zero_to_f(res.results[0].data.counts.get("0x0", 0) / SHOTS))
        return out

    def batched() -> np.ndarray:
        return sampled_fidelity_matrix(XQ, XS, fm, shots=SHOTS, method=method, seed=1)

    batched()  # warm-up (imports, first transpile)
    loops = {"tuned run-per-pair": loop_run, "SamplerV2-per-pair": loop_sampler,
             "naive bind+transpile+run": loop_naive}
    for fn in loops.values():
        fn()
    t_b: list[float] = []
    t_l: dict[str, list[float]] = {k: [] for k in loops}
    est: dict[str, np.ndarray] = {}
    for _ in range(rounds):  # interleaved so that load spikes hit all alike
        t0 = time.perf_counter()
        Kb = batched()
        t_b.append(time.perf_counter() - t0)
        for name, fn in loops.items():
            t0 = time.perf_counter()
            est[name] = np.array(fn())
            t_l[name].append(time.perf_counter() - t0)
    per_b = min(t_b) / (Q * N)
    scale = 1.0 if method == "compute_uncompute" else 2.0
    p = K if method == "compute_uncompute" else (1 + K) / 2
    ok = {"batched": bool(np.all(np.abs(Kb - K) <= _bound(p, SHOTS, scale)))}
    ref = np.array([K[i, j] for i, j in pairs])
    pref = ref if method == "compute_uncompute" else (1 + ref) / 2
    print(f"\n== {method}: zz n={N_QUBITS} reps=2 alpha=0.5, {SHOTS} shots "
          f"({tqc.num_qubits} qubits, {sum(tqc.count_ops().values())} operations)")
    print(f"batched (one AerSimulator.run, {Q * N} bindings): {fmt_seconds(min(t_b))} total = "
          f"{fmt_seconds(per_b)} per pair; within 5 s.e. of exact: {ok['batched']}")
    ratios = {}
    for name in loops:
        npairs = len(est[name])
        per = min(t_l[name]) / npairs
        ok[name] = bool(np.all(np.abs(est[name] - ref[:npairs]) <= _bound(pref[:npairs], SHOTS,
                                                                          scale)))
        ratios[name] = per / per_b
        print(f"{name:>26} ({npairs} pairs): {fmt_seconds(per)} per pair -> batched is "
              f"{ratios[name]:,.1f}x faster; within 5 s.e.: {ok[name]}")
    results[method] = {"ratios": ratios, "ok": all(ok.values()), "per_b": per_b}


def main(argv: list[str] | None = None) -> int:
    global SHOTS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shots", type=int, default=SHOTS,
                    help="shots per pair (Aer spends ~1 us per shot counting outcomes, batched or "
                         "not, so fewer shots leave more of the per-call overhead to batch away)")
    args = ap.parse_args(argv)
    SHOTS = args.shots
    t_start = time.perf_counter()
    print(__doc__.splitlines()[0])
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    results: dict = {}
    for method in ("compute_uncompute", "swap"):
        run_method(method, args.rounds, results)
    print("\n== targets")
    for name in next(iter(results.values()))["ratios"]:
        worst = min(r["ratios"][name] for r in results.values())
        print(f"[{verdict(worst >= 30)}] batched >= 30x faster per pair than the {name} loop: "
              + ", ".join(f"{m} {r['ratios'][name]:,.1f}x" for m, r in results.items()))
    agree = all(r["ok"] for r in results.values())
    print(f"[{verdict(agree)}] every estimate within 5 binomial standard errors of the exact "
          "fidelity")
    print(f"total runtime {time.perf_counter() - t_start:.0f} s; load average at end "
          f"{os.getloadavg()[0]:.1f}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
