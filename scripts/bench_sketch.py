"""The sketch methods side by side: throughput, XLA's peak memory and error against the exact pNTK.

    python scripts/bench_sketch.py [--quick] [--json OUT]

For each network (the zoo's FC of 2×256 units on 8×8×1 digits-sized inputs; the zoo's ResNet-18 at
width 16 on 32×32×3 inputs) and each k:

* ``countsketch`` and ``tensorsketch``: `nt_pntk.approximations.Sketch`'s two methods;
* ``dense-gaussian``: per-example gradients, then a dense Gaussian projection (TRAK's method
  without its CUDA kernel), S drawn in chunks of 16,384 parameters so it is never held whole
  (k ≤ 1,024: drawing P·k normals per call takes minutes beyond);
* ``two-sided``: each weight matrix's per-example gradient G sketched as S_inᵀ G S_out (Gaussian,
  k_in = k_out = √k, the rest CountSketched) — the trap whose error falls only as k^-1/4 (FC only).

Throughput is examples per second of one jitted call on a block of B inputs (median of 5, the
methods timed in turn round after round so that a shared machine's load hits all alike), beside
the batched backward pass (``grad`` of the summed outputs) of the same block, the
floor for any feature built from gradients; memory is XLA's peak of the compiled program; the error
is ‖K̂ − K‖_F / ‖K‖_F against the exact float32 pNTK of N inputs (per-example gradients), averaged
over 3 seeds. One process, this machine; a table on stdout.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import nt_pntk
from nt_pntk._src import measure
from nt_pntk._src.kernels.sketch import count_sketch, hashes, sketch_rows
from nt_pntk.approximations import PNTK, Sketch
from nt_pntk.experiments import models


def network(name: str):
    if name == "fc":
        model, shape = models.get_model("fc", width=256, outputs=10, depth=2), (8, 8, 1)
    else:
        model, shape = models.get_model("resnet", width=16, outputs=10, depth=18), (32, 32, 3)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, *shape))
    return model.apply_fn, params, shape


def dense_gaussian(grads: list, dim: int, seed: int, chunk: int = 16384) -> jax.Array:
    """Σ_l G_l S_l with S_l Gaussian / √k, drawn chunk by chunk of parameters (never whole)."""
    total = None
    key = jax.random.key(seed)
    for index, g in enumerate(grads):
        size = g.shape[1]
        for start in range(0, size, chunk):
            stop = min(size, start + chunk)
            s = jax.random.normal(
                jax.random.fold_in(key, index * 10**6 + start), (stop - start, dim), g.dtype
            )
            part = g[:, start:stop] @ s / math.sqrt(dim)
            total = part if total is None else total + part
    return total[:, None, :]


def two_sided(grads: list, params, dim: int, seed: int) -> jax.Array:
    """Each 2-D weight's per-example gradient as S_inᵀ G S_out (k_in = k_out = √k); others CountSketched."""
    side = math.isqrt(dim)
    key = jax.random.key(seed)
    leaves = jax.tree_util.tree_leaves(params)
    parts = []
    for index, (g, leaf) in enumerate(zip(grads, leaves, strict=True)):
        b = g.shape[0]
        if leaf.ndim == 2:
            k1, k2 = jax.random.split(jax.random.fold_in(key, index))
            s_in = jax.random.normal(k1, (leaf.shape[0], side), g.dtype) / math.sqrt(side)
            s_out = jax.random.normal(k2, (leaf.shape[1], side), g.dtype) / math.sqrt(side)
            parts.append(jnp.einsum("bio,ip,oq->bpq", g.reshape(b, *leaf.shape), s_in, s_out).reshape(b, -1))
        else:
            ((buckets, signs),) = hashes(seed + 1000 + index, [g.shape[1]], side * side, g.dtype)
            parts.append(count_sketch(g[:, None, :], buckets, signs, side * side)[:, 0])
    return sum(parts)[:, None, :]


def features_fn(method: str, f, params, dim: int, grads_fn):
    """``phi(x, seed)``: the (B, 1, k) sketched pNTK rows of one method."""
    if method in ("countsketch", "tensorsketch"):
        base = Sketch(dim=dim, method=method).kernel_fn(f)._rows_fn()
        return lambda xx, seed: sketch_rows(base(xx, params), params, dim, seed)
    if method == "dense-gaussian":
        return lambda xx, seed: dense_gaussian(grads_fn(xx, params), dim, seed)
    return lambda xx, seed: two_sided(grads_fn(xx, params), params, dim, seed)


def interleaved_seconds(programs: dict, rounds: int = 5) -> dict[str, float]:
    """Median seconds of each program, timed in turn round after round (a shared machine's load
    drifts: interleaving gives every program the same share of it)."""
    for fn in programs.values():
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(rounds):
        for name, fn in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def run(quick: bool) -> list[dict]:
    rows = []
    for name in ("fc", "resnet"):
        f, params, shape = network(name)
        n, block = (24, 16) if quick else (48, 32)
        x = jax.random.normal(jax.random.PRNGKey(1), (n, *shape))
        xb = x[:block]
        grads_fn = jax.jit(PNTK().kernel_fn(f).features_fn())
        flat = np.concatenate([np.asarray(a, np.float64) for a in grads_fn(x, params)], axis=1)
        exact = flat @ flat.T
        backward = jax.jit(lambda p, xx, f=f: jax.grad(lambda q: jnp.sum(f(q, xx)))(p))
        print(f"{name}: P={sum(a.size for a in jax.tree_util.tree_leaves(params)):,}", flush=True)
        for dim in (256, 1024, 4096) if quick else (256, 1024, 4096, 16384):
            methods = [
                m
                for m in ("countsketch", "tensorsketch", "dense-gaussian", "two-sided")
                # The trap is shown on dense layers; drawing S whole each call takes minutes beyond.
                if not ((m == "two-sided" and name != "fc") or (m == "dense-gaussian" and dim > 1024))
            ]
            jitted = {
                m: jax.jit(features_fn(m, f, params, dim, grads_fn), static_argnames="seed") for m in methods
            }
            compiled = {m: jitted[m].lower(xb, seed=0).compile() for m in methods}
            programs = {m: functools.partial(jitted[m], xb, seed=0) for m in methods}
            programs["backward"] = functools.partial(backward, params, xb)
            programs["per-example gradients"] = functools.partial(grads_fn, xb, params)
            seconds = interleaved_seconds(programs)
            backward_rate = block / seconds["backward"]
            print(
                f"  k={dim}: batched backward {backward_rate:.1f} ex/s, per-example gradients "
                f"{block / seconds['per-example gradients']:.1f} ex/s",
                flush=True,
            )
            for method in methods:
                errors = []
                for seed in range(3):
                    p = np.concatenate(
                        [
                            np.asarray(jitted[method](x[i : i + block], seed=seed), np.float64)
                            for i in range(0, n, block)
                        ]
                    )[:n, 0]
                    errors.append(np.linalg.norm(p @ p.T - exact) / np.linalg.norm(exact))
                rate = block / seconds[method]
                row = dict(
                    network=name,
                    k=dim,
                    method=method,
                    examples_per_s=rate,
                    fraction_of_backward=rate / backward_rate,
                    peak_mib=measure.peak_bytes(compiled[method]) / 2**20,
                    relative_error=float(np.mean(errors)),
                )
                rows.append(row)
                print(
                    f"  k={dim:>6} {method:<15} {rate:8.1f} ex/s ({rate / backward_rate:4.2f} of backward) "
                    f"peak {row['peak_mib']:8.1f} MiB  error {row['relative_error']:.4f}",
                    flush=True,
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer inputs and k up to 4,096")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    print(f"nt_pntk {nt_pntk.__version__}, jax {jax.__version__}, {jax.devices()[0].device_kind}")
    rows = run(args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
