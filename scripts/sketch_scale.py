"""The zoo's ResNet-18 on N synthetic 32×32×3 inputs: sketched features, N×N kernel, primal regression.

    python scripts/sketch_scale.py --n 50000 --width 64 --dim 8192 --out-dir scale/

Three resumable stages, each timed (a rerun with the same arguments resumes from what is on disk):

1. the features Φ of the N training inputs and 1,000 test inputs (`nt_pntk.feature_matrix`,
   ``.npy``), with their throughput beside the batched backward pass of the same network
   (``grad`` of the summed outputs, the floor of any feature built from gradients);
2. the N×N kernel ΦΦᵀ (`nt_pntk.kernel_matrix` of the linear kernel of Φ's rows, ``.zarr``);
3. kernel regression in the primal (`nt_pntk.regression.predict_features`, ridge 1e-3) of
   random 10-class one-hot targets (synthetic data: the point is the cost, not the accuracy).

Prints one line per stage and writes ``scale.json`` (the seconds, throughputs and peak RSS).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nt_pntk
from nt_pntk import regression
from nt_pntk._src import measure
from nt_pntk.approximations import Sketch
from nt_pntk.experiments import models

TEST = 1000


def backward_rate(f, params, shape, block: int = 16) -> float:
    x = jax.random.normal(jax.random.PRNGKey(2), (block, *shape))
    backward = jax.jit(lambda p, xx: jax.grad(lambda q: jnp.sum(f(q, xx)))(p))
    jax.block_until_ready(backward(params, x))
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(backward(params, x))
        runs.append(time.perf_counter() - start)
    return block / float(np.median(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--dim", type=int, default=8192)
    parser.add_argument("--method", default="tensorsketch", choices=("tensorsketch", "countsketch"))
    parser.add_argument("--memory-budget", default="4GiB")
    parser.add_argument("--out-dir", type=Path, default=Path("scale"))
    args = parser.parse_args()
    began = time.perf_counter()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    shape = (32, 32, 3)
    model = models.get_model("resnet", width=args.width, outputs=10, depth=18)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, *shape))
    count = sum(a.size for a in jax.tree_util.tree_leaves(params))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n + TEST, *shape), dtype=np.float32)
    targets = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.n)] - 0.1
    fn = Sketch(dim=args.dim, method=args.method).kernel_fn(model.apply_fn)
    report = {"n": args.n, "width": args.width, "parameters": count, "dim": args.dim, "method": args.method}
    print(f"ResNet-18 width {args.width}: {count:,} parameters; N={args.n:,}, k={args.dim}", flush=True)

    report["backward_examples_per_s"] = backward_rate(model.apply_fn, params, shape)
    start = time.perf_counter()
    phi = nt_pntk.feature_matrix(
        fn, x, params, output=args.out_dir / "phi.npy", memory_budget=args.memory_budget
    )
    report["features_s"] = time.perf_counter() - start
    report["features_examples_per_s"] = len(x) / report["features_s"]
    report["fraction_of_backward"] = report["features_examples_per_s"] / report["backward_examples_per_s"]
    print(
        f"features {phi.shape}: {report['features_s']:.0f} s, {report['features_examples_per_s']:.1f} "
        f"examples/s ({report['fraction_of_backward']:.2f} of the batched backward pass, "
        f"{report['backward_examples_per_s']:.1f}/s)",
        flush=True,
    )

    start = time.perf_counter()
    rows = np.asarray(phi[: args.n])

    def features_gram(a, b, unit):
        return unit * jnp.matmul(a, b.T, precision="highest")

    k = nt_pntk.kernel_matrix(
        features_gram,
        rows,
        None,
        jnp.ones((), rows.dtype),
        output=args.out_dir / "kernel.zarr",
        memory_budget=args.memory_budget,
    )
    del rows
    report["kernel_s"] = time.perf_counter() - start
    print(f"kernel {k.shape} in {args.out_dir / 'kernel.zarr'}: {report['kernel_s']:.0f} s", flush=True)

    start = time.perf_counter()
    predictions = regression.predict_features(phi[: args.n], targets, phi[args.n :], ridge=1e-3)
    report["regression_s"] = time.perf_counter() - start
    report["peak_rss_bytes"] = measure.peak_rss_bytes()
    # The wall time of this run, start to end: inputs, compilation and the backward pass's timing too.
    report["wall_s"] = time.perf_counter() - began
    print(
        f"primal regression {predictions.shape}: {report['regression_s']:.0f} s; peak RSS "
        f"{report['peak_rss_bytes'] / 2**30:.2f} GiB; stages "
        f"{report['features_s'] + report['kernel_s'] + report['regression_s']:.0f} s, wall "
        f"{report['wall_s']:.0f} s",
        flush=True,
    )
    (args.out_dir / "scale.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
