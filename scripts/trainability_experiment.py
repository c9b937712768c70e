"""Trainability at initialization on the digits: do the pNTK's spectral scores predict trained accuracy?

A family of fully connected networks (depths, widths, activations relu/tanh/erf/gelu, with and
without skip connections, built with ``neural_tangents.stax``) is each trained on the digits with
the same budget (minibatch SGD with momentum, cross-entropy) to its test accuracy; at
initialization, on a minibatch of training inputs and for several init seeds, `nt_pntk.trainability`
scores the pNTK, the trace kernel and the full eNTK (λ_max, λ_min, condition number, mean
eigenvalue, and what each cost). Kendall's τ of each score (median over the seeds) with the
accuracy, with a bootstrap interval over the networks, goes to ``table.md``; every cell to
``results.csv`` and ``networks.csv``; a scatter plot to ``trainability.png``.

Resumable: each finished cell (one network trained, one kernel scored at one seed) is appended to
``cells.jsonl`` in the output folder as it finishes, keyed by the settings that define it; a rerun
with the same ``--output`` computes only the missing cells (``--seeds 5`` adds seeds).

    python scripts/trainability_experiment.py --networks 24 --seeds 1 --train-seeds 1  # committed (~30 min)
    python scripts/trainability_experiment.py                  # all 48, 3 init seeds, 2 training seeds
    python scripts/trainability_experiment.py --quick --output runs/trainability-quick   # seconds
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nt_pntk

# isort: split
from neural_tangents import stax

from nt_pntk import approximations, trainability
from nt_pntk.experiments import data

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "validation" / "results" / "trainability"
ACTIVATIONS = {
    "relu": stax.Relu,
    "tanh": lambda: stax.Elementwise(jnp.tanh),  # finite networks only: no infinite-width kernel needed
    "erf": stax.Erf,
    "gelu": stax.Gelu,
}
KERNELS = {
    "pntk": lambda f: nt_pntk.empirical_pntk_fn(f, vmap_axes=0),
    "trace": lambda f: approximations.Trace().kernel_fn(f, vmap_axes=0),
    "entk": lambda f: approximations.FullENTK().kernel_fn(f, vmap_axes=0),
}
SCORES = ("condition_number", "lambda_min", "lambda_max", "mean_eigenvalue")
W_STD, B_STD = 2.0**0.5, 0.1


@dataclasses.dataclass(frozen=True)
class Network:
    depth: int  # hidden blocks after the input layer
    width: int
    activation: str
    skip: bool

    @property
    def name(self) -> str:
        return f"{self.activation}-d{self.depth}-w{self.width}{'-skip' if self.skip else ''}"

    def build(self, outputs: int = 10) -> tuple:
        act = ACTIVATIONS[self.activation]
        layers = [stax.Flatten(), stax.Dense(self.width, W_std=W_STD, b_std=B_STD), act()]
        for _ in range(self.depth):
            block = stax.serial(stax.Dense(self.width, W_std=W_STD, b_std=B_STD), act())
            layers.append(
                stax.serial(stax.FanOut(2), stax.parallel(block, stax.Identity()), stax.FanInSum())
                if self.skip
                else block
            )
        return stax.serial(*layers, stax.Dense(outputs, W_std=1.0, b_std=B_STD))


@dataclasses.dataclass(frozen=True)
class Settings:
    n_train: int
    n_test: int
    split_seed: int
    steps: int
    batch: int
    lr: float
    momentum: float
    score_batch: int


FULL = Settings(
    n_train=1000, n_test=500, split_seed=0, steps=300, batch=100, lr=0.1, momentum=0.9, score_batch=64
)
QUICK = Settings(
    n_train=100, n_test=50, split_seed=0, steps=20, batch=20, lr=0.5, momentum=0.9, score_batch=16
)


def family(quick: bool) -> list[Network]:
    """3 depths × 2 widths × 4 activations × skip or not: 48 networks, ordered so that the first 24
    (``--networks 24``) hold every (depth, activation, skip) once, at a width that alternates."""
    if quick:
        return [Network(d, 16, a, False) for d in (1, 2) for a in ("relu", "tanh")]
    grid = [
        (sum(indices) % 2, Network(depth, width, activation, skip))
        for indices, (depth, width, activation, skip) in zip(
            itertools.product(range(3), range(2), range(4), range(2)),
            itertools.product((2, 5, 10), (32, 128), ACTIVATIONS, (False, True)),
            strict=True,
        )
    ]
    return [network for half, network in grid if half == 0] + [network for half, network in grid if half == 1]


# --- Cells on disk --------------------------------------------------------------------------------


class Cells:
    """Finished cells, one JSON line each in ``cells.jsonl``, keyed by the settings that define them."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "cells.jsonl"
        self.done: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    cell = json.loads(line)
                    self.done[cell["id"]] = cell

    @staticmethod
    def identity(key: dict) -> str:
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def get(self, key: dict) -> dict | None:
        return self.done.get(self.identity(key))

    def add(self, key: dict, values: dict) -> dict:
        cell = {"id": self.identity(key), **key, **values}
        with open(self.path, "a") as file:
            file.write(json.dumps(cell, sort_keys=True) + "\n")
            file.flush()
            os.fsync(file.fileno())
        self.done[cell["id"]] = cell
        return cell


# --- Training -------------------------------------------------------------------------------------


def train(network: Network, settings: Settings, split: tuple, seed: int) -> dict:
    """Minibatch SGD with momentum on the cross-entropy, the same budget for every network."""
    x_train, y_train, x_test, y_test = split
    init_fn, apply_fn, _ = network.build()
    _, params = init_fn(jax.random.PRNGKey(seed), x_train.shape)

    def loss(params, x, y):
        logits = apply_fn(params, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    @jax.jit
    def step(params, velocity, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        velocity = jax.tree.map(lambda v, g: settings.momentum * v + g, velocity, grads)
        params = jax.tree.map(lambda p, v: p - settings.lr * v, params, velocity)
        return params, velocity, value

    rng = np.random.default_rng(seed)
    velocity = jax.tree.map(jnp.zeros_like, params)
    start = time.perf_counter()
    order = np.array([], dtype=int)
    for _ in range(settings.steps):
        if len(order) < settings.batch:
            order = np.concatenate([order, rng.permutation(len(x_train))])
        batch, order = order[: settings.batch], order[settings.batch :]
        params, velocity, _ = step(params, velocity, x_train[batch], y_train[batch])
    final_loss = float(loss(params, x_train, y_train))
    accuracy = float(np.mean(np.asarray(apply_fn(params, x_test)).argmax(1) == y_test))
    return {
        "test_accuracy": accuracy,
        "train_loss": final_loss if math.isfinite(final_loss) else None,
        "diverged": not math.isfinite(final_loss),
        "train_s": time.perf_counter() - start,
        "parameters": int(sum(np.size(p) for p in jax.tree.leaves(params))),
    }


def score(network: Network, kernel: str, x: np.ndarray, seed: int) -> dict:
    init_fn, apply_fn, _ = network.build()
    _, params = init_fn(jax.random.PRNGKey(seed), x.shape)
    s = trainability.scores(KERNELS[kernel](apply_fn), jnp.asarray(x), params)
    return {**dataclasses.asdict(s), "condition_number": _finite_or_none(s.condition_number)}


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no inf; None reads back as inf


# --- The run --------------------------------------------------------------------------------------


def run(
    output: Path, quick: bool, seeds: int, train_seeds: int, limit: int | None = None, compute: bool = True
) -> None:
    settings = QUICK if quick else FULL
    cells = Cells(output)
    split = data.digits_split(settings.n_train, settings.n_test, seed=settings.split_seed)
    x_batch = split[0][: settings.score_batch]
    common = dataclasses.asdict(settings)
    networks = family(quick)[:limit]
    for i, network in enumerate(networks if compute else []):
        arch = dataclasses.asdict(network)
        for seed in range(train_seeds):
            key = {
                "cell": "train",
                **arch,
                **{k: common[k] for k in common if k != "score_batch"},
                "seed": seed,
            }
            if cells.get(key) is None:
                cell = cells.add(key, train(network, settings, split, seed))
                print(
                    f"[{i + 1}/{len(networks)}] {network.name} seed {seed}: "
                    f"accuracy {cell['test_accuracy']:.3f} ({cell['train_s']:.1f} s)",
                    flush=True,
                )
        for seed in range(seeds):
            for kernel in KERNELS:
                key = {
                    "cell": "score",
                    **arch,
                    "kernel": kernel,
                    "n_train": settings.n_train,
                    "split_seed": settings.split_seed,
                    "score_batch": settings.score_batch,
                    "seed": seed,
                }
                if cells.get(key) is None:
                    cell = cells.add(key, score(network, kernel, x_batch, seed))
                    print(
                        f"    {kernel} seed {seed}: "
                        f"kappa {cell['condition_number']}, {cell['kernel_s']:.3f} s",
                        flush=True,
                    )
    report(output, cells, networks, settings, seeds, train_seeds)


def report(
    output: Path, cells: Cells, networks: list[Network], settings: Settings, seeds: int, train_seeds: int
):
    common = dataclasses.asdict(settings)
    rows, score_rows = [], []
    for network in networks:
        arch = dataclasses.asdict(network)
        trained = [
            cells.get(
                {"cell": "train", **arch, **{k: common[k] for k in common if k != "score_batch"}, "seed": s}
            )
            for s in range(train_seeds)
        ]
        if None in trained:  # not trained yet (`--report-only` on a run under way)
            continue
        row = {
            "network": network.name,
            **arch,
            "parameters": trained[0]["parameters"],
            "test_accuracy": float(np.mean([t["test_accuracy"] for t in trained])),
            "diverged": sum(t["diverged"] for t in trained),
            "train_s": float(np.mean([t["train_s"] for t in trained])),
        }
        network_rows = []
        for kernel in KERNELS:
            scored = [
                cells.get(
                    {
                        "cell": "score",
                        **arch,
                        "kernel": kernel,
                        "n_train": settings.n_train,
                        "split_seed": settings.split_seed,
                        "score_batch": settings.score_batch,
                        "seed": s,
                    }
                )
                for s in range(seeds)
            ]
            if None in scored:
                break
            for s, c in enumerate(scored):
                network_rows.append(
                    {
                        "network": network.name,
                        "kernel": kernel,
                        "seed": s,
                        **{k: _inf(c[k]) for k in (*SCORES, "size", "kernel_s", "compile_s", "eigen_s")},
                    }
                )
            for name in SCORES:
                row[f"{kernel}_{name}"] = float(np.median([_inf(c[name]) for c in scored]))
            row[f"{kernel}_s"] = float(np.median([c["kernel_s"] + c["eigen_s"] for c in scored]))
            row[f"{kernel}_compile_s"] = float(np.median([c["compile_s"] for c in scored]))
        else:  # every kernel scored
            rows.append(row)
            score_rows.extend(network_rows)
    _write_csv(output / "networks.csv", rows)
    _write_csv(output / "results.csv", score_rows)
    accuracy = np.array([r["test_accuracy"] for r in rows])
    taus = {}
    for kernel in KERNELS:
        for name in SCORES:
            taus[kernel, name] = trainability.kendall_tau([r[f"{kernel}_{name}"] for r in rows], accuracy)
    taus["baseline", "parameters"] = trainability.kendall_tau([r["parameters"] for r in rows], accuracy)
    write_table(output / "table.md", rows, taus, settings, seeds, train_seeds)
    plot(output / "trainability.png", rows)


def _inf(value: float | None) -> float:
    return math.inf if value is None else float(value)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_table(
    path: Path, rows: list[dict], taus: dict, settings: Settings, seeds: int, train_seeds: int
) -> None:
    accuracy = [r["test_accuracy"] for r in rows]
    lines = [
        f"{len(rows)} networks; accuracy on {settings.n_test} test digits after {settings.steps} SGD steps "
        f"(batch {settings.batch}, lr {settings.lr}, momentum {settings.momentum}) on {settings.n_train} "
        f"training digits, mean of {train_seeds} training seed(s): "
        f"{min(accuracy):.3f} to {max(accuracy):.3f} (median {np.median(accuracy):.3f}). "
        f"Scores at initialization on {settings.score_batch} training inputs, "
        f"median over {seeds} init seeds. Kendall's tau with the accuracy [95% bootstrap interval over the "
        "networks]:",
        "",
        "| kernel | condition number | lambda_min | lambda_max | trace / n "
        "| seconds (kernel + eigh) | compile s |",
        "|---|---|---|---|---|---|---|",
    ]
    for kernel in KERNELS:
        cells = [_tau(taus[kernel, name]) for name in SCORES]
        seconds = np.median([r[f"{kernel}_s"] for r in rows])
        compile_s = np.median([r[f"{kernel}_compile_s"] for r in rows])
        lines.append(f"| {kernel} | {' | '.join(cells)} | {seconds:.3g} | {compile_s:.3g} |")
    lines += ["", f"Baseline, the number of parameters: tau {_tau(taus['baseline', 'parameters'])}.", ""]
    path.write_text("\n".join(lines))
    print("\n".join(lines))


def _tau(r: trainability.RankCorrelation) -> str:
    return f"{r.tau:+.2f} [{r.low:+.2f}, {r.high:+.2f}]"


def plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("condition_number", "lambda_min", "lambda_max")
    fig, axes = plt.subplots(len(names), len(KERNELS), figsize=(11, 9), sharey=True)
    colors = dict(zip(ACTIVATIONS, ("C0", "C1", "C2", "C3"), strict=True))
    accuracy = np.array([r["test_accuracy"] for r in rows])
    for i, name in enumerate(names):
        for j, kernel in enumerate(KERNELS):
            ax = axes[i, j]
            values = np.array([r[f"{kernel}_{name}"] for r in rows])
            shown = np.where(np.isfinite(values), values, np.nan)
            for skip, marker in ((False, "o"), (True, "^")):
                for activation, color in colors.items():
                    pick = [r["activation"] == activation and r["skip"] == skip for r in rows]
                    ax.scatter(
                        shown[pick],
                        accuracy[pick],
                        c=color,
                        marker=marker,
                        s=22,
                        label=f"{activation}{' skip' if skip else ''}",
                    )
            ax.set_xscale("log")
            tau = trainability.kendall_tau(values, accuracy, resamples=1)
            ax.set_title(f"{kernel}: tau {tau.tau:+.2f}", fontsize=10)
            if i == len(names) - 1:
                ax.set_xlabel("score at initialization")
            if j == 0:
                ax.set_ylabel(f"{name}\ntest accuracy")
    axes[0, -1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--quick", action="store_true", help="4 small networks on 100 digits (seconds)")
    parser.add_argument("--seeds", type=int, default=3, help="init seeds of the scores")
    parser.add_argument("--train-seeds", type=int, default=2, help="training seeds averaged per network")
    parser.add_argument("--report-only", action="store_true", help="tables and plot from the finished cells")
    parser.add_argument("--networks", type=int, default=None, help="only the first n networks of the family")
    args = parser.parse_args(argv)
    run(args.output, args.quick, args.seeds, args.train_seeds, args.networks, compute=not args.report_only)


if __name__ == "__main__":
    main()
