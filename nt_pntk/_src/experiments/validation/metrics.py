"""The measurements of one sweep cell: eNTK vs pNTK ⊗ I vs NT's Θ∞, at init and trained.

The kernels are computed `block` examples at a time (`kernels_by_blocks`), so a cell's
memory does not grow with the N·O × P Jacobian: CNNs of 512 channels and FC nets of
8,192 units fit in a few GB.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np

from nt_pntk._src import checks, numerics
from nt_pntk._src.experiments import data, models
from nt_pntk._src.experiments.validation.config import Cell, Config
from nt_pntk._src.kernels import pntk as _pntk
from nt_pntk._src.kernels import regression, spectra

#: Metrics per row, with the slope in log(width) that theory predicts (None: no claim).
EXPECTED_SLOPES: dict[str, float | None] = {
    "err_pntk": -0.5,  # ‖Θ - pNTK⊗I‖ / ‖Θ‖: the paper's theorem
    "err_single": -0.5,  # one logit's NTK Θ_00: a control, distributed as the pNTK at init
    "err_trace": -0.5,  # the same for NT's trace (1/O) Σ_o Θ_oo, the best K⊗I in Frobenius norm
    "err_pntk_inf": -0.5,  # ‖pNTK - Θ∞‖ / ‖Θ∞‖
    "err_entk_inf": -0.5,  # ‖Θ - Θ∞⊗I‖ / ‖Θ∞⊗I‖
    "offdiag_mass": -1.0,  # squared-Frobenius share of the o≠o' blocks: (n^-1/2)^2
    "pred_gap": -0.5,  # ‖f_eNTK - f_pNTK‖ / ‖f_eNTK‖, kernel regression on held-out data
    "err_lambda_max": -0.5,  # |λmax(pNTK) - λmax(eNTK)| / λmax(eNTK)
    "err_cond": None,  # condition numbers: λmin of the NO×NO eNTK has no n^-1/2 law
    "acc_entk": None,
    "acc_pntk": None,
}
#: The N×N kernels K whose K ⊗ I_O is compared with the eNTK Θ, and their metric.
APPROXIMATIONS = {"pntk": "err_pntk", "single": "err_single", "trace": "err_trace"}


def cell_data(cell: Cell) -> tuple[np.ndarray, ...]:
    """Train/test inputs and integer labels of a cell (the same split for every seed)."""
    if cell.data == "digits":
        return data.digits_split(cell.n_train, cell.n_test, seed=0)
    # Synthetic: Gaussian 8×8×1 images labelled by a fixed random linear teacher.
    rng = np.random.default_rng(12345)
    x = rng.standard_normal((cell.n_train + cell.n_test, 8, 8, 1)).astype(np.float32)
    labels = np.argmax(x.reshape(len(x), -1) @ rng.standard_normal((64, 10)), axis=1)
    return x[: cell.n_train], labels[: cell.n_train], x[cell.n_train :], labels[cell.n_train :]


def targets(labels: np.ndarray, outputs: int) -> np.ndarray:
    """Centered one-hot regression targets over `outputs` outputs (class = label mod outputs)."""
    return data.centred_one_hot(labels % outputs, outputs)


@functools.cache
def _kernel_fns(architecture: str, outputs: int, implementation: int, model_arguments: tuple) -> tuple:
    model = models.get_model(architecture, outputs=outputs, **dict(model_arguments))
    kw = dict(vmap_axes=0, implementation=implementation)
    full = jax.jit(nt.empirical_ntk_fn(model.apply_fn, trace_axes=(), **kw))
    pntk = jax.jit(_pntk.empirical_pntk_fn(model.apply_fn, **kw))
    return model, full, pntk


def measure_cell(cell: Cell, cfg: Config) -> list[dict]:
    """All metrics of `cell`: one row per phase of `cell.phases` (initialization, after training)."""
    model, full_fn, pntk_fn = _kernel_fns(
        cell.architecture, cell.outputs, cell.implementation, tuple(sorted(cell.model_arguments().items()))
    )
    x_train, y_train, x_test, y_test = cell_data(cell)
    x_all = jnp.concatenate([x_train, x_test])
    _, params = model.init_fn(jax.random.PRNGKey(cell.seed), x_all.shape)
    theta_inf = _infinite_width_ntk(cell)

    def kernels(p) -> tuple:
        return kernels_by_blocks(full_fn, None, x_all, p, block=cell.block, theta_inf=theta_inf)

    def row(phase: str, measured: tuple) -> dict:
        entk, pntk, sums = measured
        if sums.finite:
            values = kernel_metrics(
                entk, pntk, sums, theta_inf, y_train, y_test, cell.n_train, cell.outputs, cfg.ridge
            )
        else:  # training diverged: record it rather than lose the sweep
            values = dict.fromkeys(EXPECTED_SLOPES, float("nan"))
        return {**cell_columns(cell), "phase": phase, **values}

    rows = []
    pntk_train = None
    if "init" in cell.phases:
        at_init = kernels(params)
        rows.append(row("init", at_init))
        pntk_train = at_init[1][: cell.n_train, : cell.n_train]
    if "trained" in cell.phases:
        # Step size as a fraction of gradient descent's stability limit 2n/λmax(Θ), with
        # λmax(eNTK) ≈ λmax(pNTK), so every width and architecture trains stably.
        if pntk_train is None:
            pntk_train = np.asarray(pntk_fn(x_train, None, params), np.float64)
        rate = cfg.learning_rate * 2 * cell.n_train / np.linalg.eigvalsh(pntk_train)[-1]
        train = _train_fn(model.apply_fn, cfg.train_steps)
        rows.append(row("trained", kernels(train(params, x_train, targets(y_train, cell.outputs), rate))))
    return rows


def cell_columns(cell: Cell) -> dict:
    """The identity columns of a cell's rows (`sweep.IDENTITY_COLUMNS`)."""
    return {
        "key": cell.key,
        "sweep": cell.label,
        "role": cell.role,
        "architecture": cell.architecture,
        "data": cell.data,
        "width": cell.width,
        "outputs": cell.outputs,
        "seed": cell.seed,
    }


@dataclasses.dataclass
class FrobeniusSums:
    r"""Squared Frobenius norms of the eNTK Θ and of Θ − K ⊗ I_O, summed block by block.

    .. math::
        \lVert \Theta - K \otimes I_O \rVert_F^2
        = \sum_{a, b} \lVert \Theta_{ab} - K_{ab} \otimes I_O \rVert_F^2
        = \lVert \Theta \rVert_F^2 - 2 \langle \Theta, K \otimes I_O \rangle + O \lVert K \rVert_F^2,

    over blocks (a, b) of examples. Each block's residual is summed as it is (not the three
    terms on the right, which cancel to ~err² and would lose the small errors of wide networks
    to round-off).

    Attributes:
      entk: :math:`\lVert \Theta \rVert_F^2`.
      diagonal_blocks: :math:`\sum_o \lVert \Theta_{oo} \rVert_F^2` (the o = o' blocks).
      residual: :math:`\lVert \Theta - K \otimes I_O \rVert_F^2` for each kernel name.
      reference: :math:`\lVert K \rVert_F^2` for each kernel name.
      finite: whether every block was finite.
    """

    entk: float = 0.0
    diagonal_blocks: float = 0.0
    residual: dict[str, float] = dataclasses.field(default_factory=dict)
    reference: dict[str, float] = dataclasses.field(default_factory=dict)
    finite: bool = True

    def add(self, entk_block: np.ndarray, kernel_blocks: dict[str, np.ndarray], weight: float = 1.0) -> None:
        """Adds a (b1, b2, O, O) eNTK block and the (b1, b2) blocks of the kernels, counted `weight` times."""
        e = np.asarray(entk_block, np.float64)
        self.finite &= bool(np.all(np.isfinite(e)))
        diagonal = np.einsum("abii->abi", e)  # a view: Θ_oo(x_a, x_b)
        self.entk += weight * float(np.sum(e**2))
        self.diagonal_blocks += weight * float(np.sum(diagonal**2))
        off_diagonal = float(np.sum(e**2)) - float(np.sum(diagonal**2))
        for name, k in kernel_blocks.items():
            k = np.asarray(k, np.float64)
            self.finite &= bool(np.all(np.isfinite(k)))
            block_residual = off_diagonal + float(np.sum((diagonal - k[:, :, None]) ** 2))
            self.residual[name] = self.residual.get(name, 0.0) + weight * block_residual
            self.reference[name] = self.reference.get(name, 0.0) + weight * float(np.sum(k**2))

    def relative_error(self, name: str) -> float:
        """‖Θ − K ⊗ I‖ / ‖Θ‖ for kernel `name`."""
        return float(np.sqrt(self.residual[name] / self.entk))


def kernels_by_blocks(
    entk_fn, pntk_fn, x: jax.Array, params, *, block: int, theta_inf: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, FrobeniusSums]:
    """The eNTK, the pNTK and their `FrobeniusSums`, `block` examples at a time.

    Only the blocks (a, b) with a <= b are computed (the kernels are symmetric), so the
    memory of a kernel evaluation is that of 2·`block` examples whatever N: NT's structured
    derivatives never hold more than those examples' Jacobian pieces, and the N·O × P Jacobian
    is never formed. The sums also hold the single-logit kernel Θ_00 ("single"), NT's trace
    (1/O) Σ_o Θ_oo ("trace"), and Θ∞ ("inf") when given.

    Args:
      entk_fn: ``fn(x1, x2, params)`` returning the (b1, b2, O, O) eNTK.
      pntk_fn: the same returning the (b1, b2) pNTK, or None to sum it from the eNTK blocks.
      x: the N inputs.
      params: the network's parameters.
      block: examples per block.
      theta_inf: an (N, N) kernel to compare too, or None.

    Returns:
      ``(entk, pntk, sums)``: the (N, N, O, O) eNTK and (N, N) pNTK in float64, and the sums.
    """
    n = len(x)
    starts = range(0, n, block)
    entk = pntk = None
    sums = FrobeniusSums()
    for i in starts:
        a = slice(i, min(i + block, n))
        for j in starts:
            if j < i:
                continue
            b = slice(j, min(j + block, n))
            x2 = None if i == j else x[b]
            e = np.asarray(entk_fn(x[a], x2, params), np.float64)
            # pNTK = (1/O) Σ_{o,o'} Θ_oo': from the eNTK block for free (the pNTK function costs
            # as much as the eNTK's under structured derivatives), or from `pntk_fn` when given.
            p = (
                e.sum(axis=(2, 3)) / e.shape[-1]
                if pntk_fn is None
                else np.asarray(pntk_fn(x[a], x2, params), np.float64)
            )
            if entk is None:
                entk = np.empty((n, n, *e.shape[2:]), np.float64)
                pntk = np.empty((n, n), np.float64)
            entk[a, b], pntk[a, b] = e, p
            entk[b, a], pntk[b, a] = e.transpose(1, 0, 3, 2), p.T
            kernels = {"pntk": p, "single": e[:, :, 0, 0], "trace": np.einsum("abii->ab", e) / e.shape[-1]}
            if theta_inf is not None:
                kernels["inf"] = theta_inf[a, b]
            sums.add(e, kernels, weight=1.0 if i == j else 2.0)
    return entk, pntk, sums


def _infinite_width_ntk(cell: Cell) -> np.ndarray:
    """NT's Θ∞ on a cell's inputs; it depends on neither width, O nor seed, so it is shared."""
    arguments = {k: v for k, v in cell.model_arguments().items() if k not in ("width", "readout_width")}
    return _infinite_width_ntk_of(
        cell.architecture, tuple(sorted(arguments.items())), cell.data, cell.n_train, cell.n_test
    )


@functools.cache
def _infinite_width_ntk_of(
    architecture: str, options: tuple, data: str, n_train: int, n_test: int
) -> np.ndarray:
    # Θ∞ takes every width to infinity, so any finite widths build the same kernel_fn.
    model = models.get_model(architecture, width=1, outputs=1, **dict(options))
    probe = Cell(architecture, 1, 1, data, 0, options, n_train, n_test, 1)
    x_train, _, x_test, _ = cell_data(probe)
    x_all = jnp.concatenate([x_train, x_test])
    return np.asarray(jax.jit(model.kernel_fn, static_argnames="get")(x_all, None, get="ntk"), np.float64)


@functools.cache
def _train_fn(apply_fn, steps: int):
    """`steps` of full-batch gradient descent on the mean squared error, one compiled step.

    A Python loop over a compiled step, not `lax.scan`: XLA:CPU compiles convolutions inside
    a loop body ~30× slower (measured: 0.72 s against 25 ms a step for the CNN of 128 channels).
    """

    def loss(p, x, y):
        return 0.5 * jnp.mean(jnp.sum((apply_fn(p, x) - y) ** 2, axis=-1))

    @jax.jit
    def step(p, x, y, learning_rate):
        g = jax.grad(loss)(p, x, y)
        return jax.tree_util.tree_map(lambda w, d: w - learning_rate * d, p, g)

    def train(params, x, y, learning_rate):
        for _ in range(steps):
            params = step(params, x, y, learning_rate)
        return params

    return train


def kernel_metrics(
    entk: np.ndarray,
    pntk: np.ndarray,
    sums: FrobeniusSums,
    theta_inf: np.ndarray,
    y_train: np.ndarray,
    y_test: np.ndarray,
    n_train: int,
    outputs: int,
    ridge: float,
) -> dict[str, float]:
    """Every metric of `EXPECTED_SLOPES`: errors from the block sums, the rest from the kernels.

    Args:
      entk, pntk: the (N, N, O, O) eNTK and the (N, N) pNTK on train+test inputs (train first).
      sums: their `FrobeniusSums` (`kernels_by_blocks`), with Θ∞ as "inf".
      theta_inf: NT's (N, N) infinite-width NTK on the same inputs.
      y_train, y_test: integer labels.
      n_train: how many of the N inputs are training inputs.
      outputs: O.
      ridge: kernel regression's ridge, relative to the mean kernel diagonal.
    """
    y = targets(y_train, outputs)
    train, test = slice(0, n_train), slice(n_train, None)
    with checks.computed_values():  # a kernel refused (NaN entries) is a failure, not a usage error
        f_entk = regression.predict(entk[train, train], y, entk[test, train], ridge=ridge)
        f_pntk = regression.predict(pntk[train, train], y, pntk[test, train], ridge=ridge)
        spectral = spectra.spectral_errors(
            spectra.spectrum(entk[train, train]), spectra.spectrum(pntk[train, train]), top_k=1
        )
    inf_norm = np.sqrt(outputs) * np.linalg.norm(theta_inf)  # ‖Θ∞ ⊗ I_O‖
    return {
        **{metric: sums.relative_error(kernel) for kernel, metric in APPROXIMATIONS.items()},
        "err_pntk_inf": numerics.relative_error(theta_inf, pntk),
        "err_entk_inf": float(np.sqrt(sums.residual["inf"]) / inf_norm),
        "offdiag_mass": (sums.entk - sums.diagonal_blocks) / sums.entk,
        "pred_gap": float(np.linalg.norm(f_entk - f_pntk) / np.linalg.norm(f_entk)),
        "err_lambda_max": spectral.lambda_max,
        "err_cond": spectral.condition_number,  # NaN where the eNTK is singular in float64
        "acc_entk": float(np.mean(np.argmax(f_entk, 1) == y_test % outputs)),
        "acc_pntk": float(np.mean(np.argmax(f_pntk, 1) == y_test % outputs)),
    }
