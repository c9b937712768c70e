"""The measurements of one sweep cell: eNTK vs pNTK ⊗ I vs NT's Θ∞, at init and trained."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np

from nt_pntk._src import numerics
from nt_pntk._src.experiments import data, models
from nt_pntk._src.experiments.validation.config import Cell, Config
from nt_pntk._src.kernels import pntk as _pntk
from nt_pntk._src.kernels import regression, spectra

#: Metrics per row, with the slope in log(width) that theory predicts (None: no claim).
EXPECTED_SLOPES: dict[str, float | None] = {
    "err_pntk": -0.5,  # ||eNTK - pNTK⊗I|| / ||eNTK||: the paper's theorem
    "err_trace": -0.5,  # same for NT's trace approximation (its off-diagonal blocks)
    "err_pntk_inf": -0.5,  # ||pNTK - Θ∞|| / ||Θ∞||
    "err_entk_inf": -0.5,  # ||eNTK - Θ∞⊗I|| / ||Θ∞⊗I||
    "offdiag_mass": -1.0,  # squared-Frobenius share of the o≠o' blocks: (n^-1/2)^2
    "pred_gap": -0.5,  # ||f_eNTK - f_pNTK|| / ||f_eNTK||, kernel regression on held-out data
    "err_lambda_max": -0.5,  # |λmax(pNTK) - λmax(eNTK)| / λmax(eNTK)
    "err_cond": None,  # condition numbers: λmin of the NO×NO eNTK has no n^-1/2 law
    "acc_entk": None,
    "acc_pntk": None,
}


def cell_data(cell: Cell) -> tuple[np.ndarray, ...]:
    """Train/test inputs and integer labels of a cell (the same split for every seed)."""
    if cell.data == "digits":
        return data.digits_split(cell.n_train, cell.n_test, seed=0)
    # Synthetic: Gaussian 8×8×1 images labelled by a fixed random linear teacher.
    rng = np.random.default_rng(12345)
    x = rng.standard_normal((cell.n_train + cell.n_test, 8, 8, 1)).astype(np.float32)
    labels = np.argmax(x.reshape(len(x), -1) @ rng.standard_normal((64, 10)), axis=1)
    return x[: cell.n_train], labels[: cell.n_train], x[cell.n_train :], labels[cell.n_train :]


def targets(labels: np.ndarray, out: int) -> np.ndarray:
    """Centered one-hot regression targets over `out` outputs (class = label mod out)."""
    return data.centred_one_hot(labels % out, out)


@functools.cache
def _kernel_fns(architecture: str, width: int, out: int, options: tuple, implementation: int) -> tuple:
    model = models.get_model(architecture, width=width, outputs=out, **dict(options))
    kw = dict(vmap_axes=0, implementation=implementation)
    full = jax.jit(nt.empirical_ntk_fn(model.apply_fn, trace_axes=(), **kw))
    pntk = jax.jit(_pntk.empirical_pntk_fn(model.apply_fn, **kw))
    return model, full, pntk


def measure_cell(cell: Cell, cfg: Config) -> list[dict]:
    """All metrics of `cell`: one row at initialization, one after training."""
    model, full_fn, pntk_fn = _kernel_fns(
        cell.architecture, cell.width, cell.out, cell.options, cell.implementation
    )
    x_train, y_train, x_test, y_test = cell_data(cell)
    x_all = jnp.concatenate([x_train, x_test])
    _, params = model.init_fn(jax.random.PRNGKey(cell.seed), x_all.shape)
    theta_inf = _infinite_width_ntk(cell.architecture, cell.options, cell.data, cell.n_train, cell.n_test)

    kernels = (full_fn, pntk_fn, x_all, theta_inf, y_train, y_test)
    rows = [_phase_row(cell, cfg, "init", params, *kernels)]
    # Step size as a fraction of gradient descent's stability limit 2n/λmax(Θ), with
    # λmax(eNTK) ≈ λmax(pNTK), so every width and architecture trains stably.
    pntk_train = np.asarray(pntk_fn(x_train, None, params), np.float64)
    rate = cfg.learning_rate * 2 * cell.n_train / np.linalg.eigvalsh(pntk_train)[-1]
    trained = _train_fn(model.apply_fn, cfg.train_steps)(params, x_train, targets(y_train, cell.out), rate)
    rows.append(_phase_row(cell, cfg, "trained", trained, *kernels))
    return rows


def _phase_row(cell, cfg, phase, params, full_fn, pntk_fn, x_all, theta_inf, y_train, y_test) -> dict:
    entk = np.asarray(full_fn(x_all, None, params), np.float64)  # (N, N, O, O)
    pntk = np.asarray(pntk_fn(x_all, None, params), np.float64)  # (N, N)
    if np.all(np.isfinite(entk)) and np.all(np.isfinite(pntk)):
        row = kernel_metrics(entk, pntk, theta_inf, y_train, y_test, cell.n_train, cell.out, cfg.ridge)
    else:  # training diverged: record it rather than lose the sweep
        row = dict.fromkeys(EXPECTED_SLOPES, float("nan"))
    return {**_cell_columns(cell), "phase": phase, **row}


def _cell_columns(cell: Cell) -> dict:
    return {
        "key": cell.key,
        "architecture": cell.architecture,
        "data": cell.data,
        "width": cell.width,
        "out": cell.out,
        "seed": cell.seed,
    }


@functools.cache
def _infinite_width_ntk(
    architecture: str, options: tuple, data: str, n_train: int, n_test: int
) -> np.ndarray:
    """NT's Θ∞ on a cell's inputs; it depends on neither width, O nor seed, so it is shared."""
    model = models.get_model(architecture, width=1, outputs=1, **dict(options))
    x_train, _, x_test, _ = cell_data(Cell(architecture, 1, 1, data, 0, options, n_train, n_test, 1))
    x_all = jnp.concatenate([x_train, x_test])
    return np.asarray(jax.jit(model.kernel_fn, static_argnames="get")(x_all, None, get="ntk"), np.float64)


@functools.cache
def _train_fn(apply_fn, steps: int):
    """`steps` of full-batch gradient descent on the mean squared error, compiled once."""

    def loss(p, x, y):
        return 0.5 * jnp.mean(jnp.sum((apply_fn(p, x) - y) ** 2, axis=-1))

    @jax.jit
    def train(params, x, y, learning_rate):
        def step(p, _):
            g = jax.grad(loss)(p, x, y)
            return jax.tree_util.tree_map(lambda w, d: w - learning_rate * d, p, g), None

        return jax.lax.scan(step, params, None, length=steps)[0]

    return train


def kernel_metrics(
    entk: np.ndarray,
    pntk: np.ndarray,
    theta_inf: np.ndarray,
    y_train: np.ndarray,
    y_test: np.ndarray,
    n_train: int,
    out: int,
    ridge: float,
) -> dict[str, float]:
    """Every metric of `EXPECTED_SLOPES` from the kernels on train+test inputs."""
    eye = np.eye(out)
    e = numerics.entk_matrix(entk)
    trace = np.einsum("ijoo->ij", entk) / out
    block_sq = np.sum(entk**2, axis=(0, 1))
    inf_kron = np.kron(theta_inf, eye)

    tr = slice(0, n_train * out)
    y = targets(y_train, out)
    train, test = slice(0, n_train), slice(n_train, None)
    f_entk = regression.predict(entk[train, train], y, entk[test, train], ridge=ridge)
    f_pntk = regression.predict(pntk[train, train], y, pntk[test, train], ridge=ridge)

    spectral = spectra.spectral_errors(
        spectra.spectrum(e[tr, tr]), spectra.spectrum(pntk[train, train]), top_k=1
    )
    return {
        "err_pntk": numerics.entk_relative_error(entk, pntk),
        "err_trace": numerics.entk_relative_error(entk, trace),
        "err_pntk_inf": numerics.relative_error(theta_inf, pntk),
        "err_entk_inf": numerics.relative_error(inf_kron, e),
        "offdiag_mass": (block_sq.sum() - np.trace(block_sq)) / block_sq.sum(),
        "pred_gap": np.linalg.norm(f_entk - f_pntk) / np.linalg.norm(f_entk),
        "err_lambda_max": spectral.lambda_max,
        "err_cond": spectral.condition_number,  # NaN where the eNTK is singular in float64
        "acc_entk": float(np.mean(np.argmax(f_entk, 1) == y_test % out)),
        "acc_pntk": float(np.mean(np.argmax(f_pntk, 1) == y_test % out)),
    }
