r"""Look-ahead active learning with a kernel (Mohamadi, Bae & Sutherland, NeurIPS 2022).

A look-ahead strategy asks of each candidate :math:`u` of the unlabelled pool :math:`U`: if
:math:`u` were labelled (with a pseudo-label) and the network retrained, how much would its
predictions on the pool change? Retraining a network per candidate is out of reach; the
network linearized around its parameters, trained to convergence by kernel regression with
its NTK, is not:

.. math::
    f(x) = f_0(x) + K(x, L)\, A^{-1} \big(Y_L - f_0(L)\big), \qquad A = K_{LL} + \lambda I,

with :math:`f_0` the network's outputs at those parameters and the ridge
:math:`\lambda = \texttt{ridge} \cdot \operatorname{mean}\operatorname{diag}(K_{LL})`, as
`nt_pntk.regression.predict`'s. Adding :math:`(u, y)` to :math:`L` borders :math:`A` with one
row and column; its inverse follows from :math:`A^{-1}` and the Schur complement
:math:`s_u = K_{uu} + \lambda - K_{uL} A^{-1} K_{Lu}` (block inversion), and the new
predictions are a rank-one change of the old ones:

.. math::
    f'(x) = f(x) + c_u(x)\, s_u^{-1} \big(y - f(u)\big), \qquad
    c_u(x) = K_{xu} - K_{xL} A^{-1} K_{Lu},

in :math:`O(N_U N_L)` per candidate once :math:`A^{-1} K_{LU}` is known, never re-solving. With an
:math:`N \times N` kernel (the pNTK, used as :math:`K \otimes I_O`) :math:`c_u` and :math:`s_u`
are scalars shared by the O outputs; with the full :math:`(N, N, O, O)` eNTK they are
:math:`O \times O` blocks (:math:`s_u^{-1}` a solve), the rows of :math:`A` :math:`N_L O`, and each
candidate costs :math:`O(N_U N_L O^3)`.

The score is the paper's *most likely model output change*: the candidate is given the label
the current model predicts, :math:`\hat c = \arg\max_o f_o(u)` (``pseudo_label="predicted"``),
or the score is averaged over the classes with the weights :math:`\operatorname{softmax}(f(u))`
(``"expected"``), and

* ``criterion="norm"``: :math:`\sum_{x \in U \setminus u} \lVert f'(x) - f(x) \rVert_2`, the
  change of the other pool points' outputs;
* ``criterion="argmax"``: the number of other pool points whose predicted class changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import scipy.linalg

from nt_pntk._src import checks
from nt_pntk._src.kernels import regression

PseudoLabel = Literal["predicted", "expected"]
Criterion = Literal["norm", "argmax"]
PSEUDO_LABELS = ("predicted", "expected")
CRITERIA = ("norm", "argmax")
#: The largest array of new pool predictions one chunk of candidates may hold (bytes).
CHUNK_BYTES = 64 * 2**20


def lookahead_scores(
    k_ll: Any,
    k_ul: Any,
    k_uu: Any,
    y_l: Any,
    f0_l: Any,
    f0_u: Any,
    *,
    ridge: float = 1e-3,
    pseudo_label: PseudoLabel = "predicted",
    criterion: Criterion = "norm",
    class_targets: Any = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    r"""Scores every pool candidate by how much labelling it would change the pool's predictions.

    For each candidate :math:`u` of the pool :math:`U` and its pseudo-label :math:`y`, the
    kernel-regression predictions after adding :math:`(u, y)` to the labelled set are, by
    block inversion of the bordered :math:`K_{LL} + \lambda I` (Schur complement :math:`s_u`),

    .. math::
        f'(x) = f(x) + c_u(x)\, s_u^{-1} \big(y - f(u)\big), \quad
        c_u(x) = K_{xu} - K_{xL} (K_{LL} + \lambda I)^{-1} K_{Lu}, \quad
        s_u = c_u(u) + \lambda,

    with :math:`f(x) = f_0(x) + K_{xL} (K_{LL} + \lambda I)^{-1} (Y_L - f_0(L))` and
    :math:`\lambda = \texttt{ridge} \cdot \operatorname{mean} \operatorname{diag}(K_{LL})` held
    fixed as :math:`u` is added. ``criterion="norm"`` scores
    :math:`\sum_{x \in U \setminus u} \lVert f'(x) - f(x) \rVert_2`, ``"argmax"`` the number of
    :math:`x \in U \setminus u` whose :math:`\arg\max_o` changes. The pseudo-label is the
    target of the class the model predicts at :math:`u` (``"predicted"``), or the score is the
    average of the O classes' scores weighted by :math:`\operatorname{softmax}(f(u))`
    (``"expected"``). Candidates go in chunks of ``chunk_size``; each costs
    :math:`O(N_U N_L)` (the eNTK: :math:`O(N_U N_L O^3)`). Directions where :math:`s_u` is within
    round-off of 0 (possible only with ``ridge=0``) change nothing.

    Args:
      k_ll: ``(N_L, N_L)`` kernel of the labelled inputs (the pNTK or any N×N approximation, used
        as :math:`K \otimes I_O`), or their ``(N_L, N_L, O, O)`` full eNTK; positive
        semi-definite.
      k_ul: ``(N_U, N_L)`` (resp. ``(N_U, N_L, O, O)``) kernel between pool and labelled inputs.
      k_uu: ``(N_U, N_U)`` (resp. ``(N_U, N_U, O, O)``) kernel of the pool.
      y_l: ``(N_L, O)`` targets of the labelled inputs, encoded as ``class_targets``.
      f0_l: ``(N_L, O)`` outputs of the network on the labelled inputs, at the parameters the
        kernel was computed at (zeros for plain kernel regression).
      f0_u: ``(N_U, O)`` outputs of the network on the pool.
      ridge: non-negative ridge relative to the mean diagonal of ``k_ll``, as
        `nt_pntk.regression.predict`'s.
      pseudo_label: ``"predicted"`` or ``"expected"``.
      criterion: ``"norm"`` or ``"argmax"``.
      class_targets: ``(O, O)`` targets of the O classes, row c the target of class c; default
        the centred one-hot targets ``I - 1/O`` (`nt_pntk.experiments.data.centred_one_hot`).
      chunk_size: candidates scored at once; default: as many as keep one chunk's new pool
        predictions within 64 MiB.

    Returns:
      ``(N_U,)`` float64 scores, larger for candidates that change the predictions more.

    Raises:
      ValueError: kernels, targets or outputs of inconsistent shapes, NaN or infinite entries,
        a ``k_ll`` that is not symmetric; a ``k_ll + λI`` that is not positive definite (raise
        ``ridge``); a negative ``ridge``; a ``pseudo_label`` or ``criterion`` not among the
        choices; a ``chunk_size`` below 1.
      TypeError: non-numeric arrays, a ``ridge`` that is not a real number, a ``chunk_size``
        that is not an int.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import active_learning
      >>> x = np.random.default_rng(0).standard_normal((12, 5))
      >>> k = x @ x.T  # a kernel of 4 labelled inputs and a pool of 8
      >>> y_l = np.eye(3)[[0, 1, 2, 0]] - 1 / 3  # centred one-hot targets, O = 3
      >>> f0 = np.zeros((12, 3))
      >>> scores = active_learning.lookahead_scores(k[:4, :4], k[4:, :4], k[4:, 4:], y_l, f0[:4], f0[4:])
      >>> scores.shape
      (8,)
    """
    pseudo_label = checks.one_of("pseudo_label", pseudo_label, PSEUDO_LABELS)
    criterion = checks.one_of("criterion", criterion, CRITERIA)
    ridge = checks.non_negative("ridge", ridge)
    k_ll, y_l, k_ul, eps = regression._checked(k_ll, y_l, k_ul)
    n_l, outputs = y_l.shape
    n_u = k_ul.shape[0]
    full = k_ll.ndim == 4
    k_uu = _checked_pool_kernel(k_uu, n_u, k_ll.shape[2:])
    f0_l = _checked_outputs("f0_l", f0_l, n_l, outputs)
    f0_u = _checked_outputs("f0_u", f0_u, n_u, outputs)
    class_targets = _checked_class_targets(class_targets, outputs)
    if chunk_size is not None:
        chunk_size = checks.positive_int("chunk_size", chunk_size)

    # Kernels as matrices with rows (example, output) for the eNTK: q rows per example.
    q = outputs if full else 1
    as_matrix = _entk_matrix if full else np.asarray
    k_ll, k_ul, k_uu = as_matrix(k_ll), as_matrix(k_ul), as_matrix(k_uu)
    regression._check_symmetric(k_ll, eps, full)
    absolute_ridge = ridge * float(np.mean(np.diag(k_ll)))
    factor = _cholesky(k_ll + absolute_ridge * np.eye(len(k_ll)), ridge)

    # The current model: f(U) = f0(U) + K_UL A⁻¹ (Y_L − f0(L)), its rows of q outputs as (q, O/q).
    residual_l = (y_l - f0_l).reshape(n_l * q, outputs // q)
    f_u = f0_u + (k_ul @ scipy.linalg.cho_solve(factor, residual_l)).reshape(n_u, outputs)
    a_inv_k_lu = scipy.linalg.cho_solve(factor, k_ul.T)  # A⁻¹ K_LU, shared by every candidate

    if pseudo_label == "predicted":
        labels = class_targets[np.argmax(f_u, axis=1)][:, None]  # (N_U, 1, O)
        weights = np.ones((n_u, 1))
    else:
        labels = np.broadcast_to(class_targets, (n_u, outputs, outputs))  # (N_U, C, O)
        weights = _softmax(f_u)
    classes = labels.shape[1]
    if chunk_size is None:
        chunk_size = max(1, CHUNK_BYTES // (8 * classes * n_u * outputs))
    tolerance = max(n_l * q, 100) * eps * (float(np.max(np.abs(np.diag(k_ll)))) + absolute_ridge)
    scores = np.empty(n_u)
    for start in range(0, n_u, chunk_size):
        chunk = np.arange(start, min(start + chunk_size, n_u))
        columns = (chunk[:, None] * q + np.arange(q)).reshape(-1)
        # c_u(x) for every pool point x and candidate u of the chunk: (N_U q, m q) -> (N_U, q, m, q)
        c = k_uu[:, columns] - k_ul @ a_inv_k_lu[:, columns]
        c = c.reshape(n_u, q, len(chunk), q)
        schur = c[chunk, :, np.arange(len(chunk)), :] + absolute_ridge * np.eye(q)  # (m, q, q)
        change = (labels[chunk] - f_u[chunk][:, None]).reshape(len(chunk), classes, q, outputs // q)
        z = np.einsum("uij,ucjp->ucip", _pseudo_inverse(schur, tolerance), change)
        delta = np.einsum("xiuj,ucjp->ucxip", c, z).reshape(len(chunk), classes, n_u, outputs)
        if criterion == "norm":
            per_point = np.linalg.norm(delta, axis=-1)  # (m, C, N_U)
        else:
            per_point = np.argmax(f_u[None, None] + delta, axis=-1) != np.argmax(f_u, axis=-1)[None, None]
        per_point[np.arange(len(chunk)), :, chunk] = 0  # the candidate itself does not count
        scores[chunk] = np.sum(weights[chunk] * per_point.sum(axis=-1), axis=1)
    return scores


def select(scores: Any, n: int) -> np.ndarray:
    """The indices of the ``n`` highest scores, highest first (ties: the lower index first).

    Args:
      scores: ``(N_U,)`` scores, e.g. from `lookahead_scores`.
      n: how many to select, between 1 and ``N_U``.

    Returns:
      ``(n,)`` int64 indices into ``scores``.

    Raises:
      ValueError: ``scores`` that is not a finite 1-D array, ``n`` out of range.
      TypeError: ``n`` not an int; non-numeric ``scores``.

    Example:
      >>> from nt_pntk import active_learning
      >>> active_learning.select([0.1, 3.0, 2.0, 3.0], 3).tolist()
      [1, 3, 2]
    """
    scores = checks.real_array("scores", scores)
    if scores.ndim != 1:
        raise checks.UsageError(
            f"`scores` must be a 1-D array, one score per candidate; got shape {scores.shape}."
        )
    n = checks.count("n", n, len(scores), "scores")
    return np.argsort(-scores, kind="stable")[:n].astype(np.int64)


def acquire(
    kernel_fn: Callable,
    apply_fn: Callable,
    params: Any,
    x_labelled: Any,
    labels: Any,
    x_pool: Any,
    n: int,
    *,
    ridge: float = 1e-3,
    pseudo_label: PseudoLabel = "predicted",
    criterion: Criterion = "norm",
    class_targets: Any = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    r"""One round of look-ahead: the ``n`` pool inputs to label next, with the kernel at ``params``.

    Computes the kernel of the labelled inputs and the pool with ``kernel_fn`` at ``params``
    (an N×N approximation through `nt_pntk.kernel_matrix`, in tiles; `FullENTK`'s
    ``(N, N, O, O)`` eNTK directly), the network's outputs ``apply_fn(params, x)``, and returns
    `select` of `lookahead_scores`. The paper retrains the network on the labelled set each round
    and passes its parameters here; the parameters at initialization give the look-ahead of
    the network's NTK at initialization.

    Args:
      kernel_fn: an NT-style kernel function ``kernel_fn(x1, x2, params)``, e.g.
        ``nt_pntk.approximations.PNTK().kernel_fn(apply_fn)``.
      apply_fn: the network ``apply_fn(params, x)``, ``(N, O)`` outputs.
      params: the parameters both are evaluated at.
      x_labelled: ``(N_L, ...)`` labelled inputs.
      labels: ``(N_L,)`` their integer classes in ``[0, O)``.
      x_pool: ``(N_U, ...)`` unlabelled inputs.
      n: how many to select.
      ridge, pseudo_label, criterion, class_targets, chunk_size: as `lookahead_scores`.

    Returns:
      ``(n,)`` indices into ``x_pool``, the highest score first.

    Raises:
      ValueError, TypeError: as `lookahead_scores` and `select`; labels that are not classes
        of the O outputs.

    Example:
      >>> import jax
      >>> from nt_pntk import active_learning
      >>> from nt_pntk.approximations import PNTK
      >>> from nt_pntk.experiments import data, models
      >>> model = models.get_model("fc", width=32, outputs=10, depth=1)
      >>> x, y, _, _ = data.digits_split(30, 0)
      >>> _, params = model.init_fn(jax.random.PRNGKey(0), x.shape)
      >>> kernel_fn = PNTK().kernel_fn(model.apply_fn)
      >>> active_learning.acquire(kernel_fn, model.apply_fn, params, x[:10], y[:10], x[10:], 3).shape
      (3,)
    """
    import nt_pntk
    from nt_pntk._src.kernels.approximations import FullENTK

    x = np.concatenate([np.asarray(x_labelled), np.asarray(x_pool)])
    n_l = len(x_labelled)
    if isinstance(getattr(kernel_fn, "approximation", None), FullENTK):
        k = np.asarray(kernel_fn(x, None, params), dtype=np.float64)
    else:
        k = nt_pntk.kernel_matrix(kernel_fn, x, None, params, progress=False)
    f0 = np.asarray(apply_fn(params, x), dtype=np.float64)
    outputs = f0.shape[-1]
    class_targets = _checked_class_targets(class_targets, outputs)
    y_l = class_targets[_checked_labels(labels, n_l, outputs)]
    scores = lookahead_scores(
        k[:n_l, :n_l],
        k[n_l:, :n_l],
        k[n_l:, n_l:],
        y_l,
        f0[:n_l],
        f0[n_l:],
        ridge=ridge,
        pseudo_label=pseudo_label,
        criterion=criterion,
        class_targets=class_targets,
        chunk_size=chunk_size,
    )
    return select(scores, n)


def run_rounds(
    kernel_fn: Callable,
    apply_fn: Callable,
    params: Any,
    x_pool: Any,
    labels_pool: Any,
    initial: Sequence[int],
    *,
    rounds: int,
    per_round: int,
    train_fn: Callable | None = None,
    **options: Any,
) -> list[np.ndarray]:
    r"""Rounds of look-ahead active learning on a pool whose labels an oracle reveals.

    Each round trains (``train_fn(params, x_labelled, labels)`` → new parameters; the
    parameters are always trained from ``params``) or keeps ``params`` (``train_fn=None``: the
    kernel and outputs at initialization), then labels the ``per_round`` pool inputs `acquire`
    selects.

    Args:
      kernel_fn, apply_fn: as `acquire`.
      params: the network's parameters at initialization.
      x_pool: ``(N, ...)`` all inputs, labelled and not.
      labels_pool: ``(N,)`` their classes, read only once an input is labelled.
      initial: indices of the inputs labelled at the start.
      rounds: the number of acquisition rounds.
      per_round: inputs labelled per round.
      train_fn: ``train_fn(params, x, labels) -> params``, or None.
      **options: `acquire`'s keyword options (``ridge``, ``pseudo_label``, ...).

    Returns:
      ``rounds + 1`` arrays: the labelled indices at the start and after each round.

    Raises:
      ValueError: ``initial`` indices repeated or out of range; more labels asked for than the
        pool holds; as `acquire`.
      TypeError: ``rounds`` or ``per_round`` not an int.

    Example:
      >>> import jax
      >>> from nt_pntk import active_learning
      >>> from nt_pntk.approximations import PNTK
      >>> from nt_pntk.experiments import data, models
      >>> model = models.get_model("fc", width=32, outputs=10, depth=1)
      >>> x, y, _, _ = data.digits_split(40, 0)
      >>> _, params = model.init_fn(jax.random.PRNGKey(0), x.shape)
      >>> kernel_fn = PNTK().kernel_fn(model.apply_fn)
      >>> history = active_learning.run_rounds(
      ...     kernel_fn, model.apply_fn, params, x, y, range(5), rounds=2, per_round=4
      ... )
      >>> [len(labelled) for labelled in history]
      [5, 9, 13]
    """
    x_pool = np.asarray(x_pool)
    labels_pool = np.asarray(labels_pool)
    rounds = checks.integer("rounds", rounds)
    per_round = checks.positive_int("per_round", per_round)
    labelled = np.asarray(list(initial), dtype=np.int64)
    n = len(x_pool)
    if (
        labelled.ndim != 1
        or len(np.unique(labelled)) != len(labelled)
        or np.any((labelled < 0) | (labelled >= n))
    ):
        raise checks.UsageError(
            f"`initial` must be distinct indices into the pool of {n} inputs; got {labelled.tolist()}."
        )
    if rounds < 0 or len(labelled) + rounds * per_round > n:
        raise checks.UsageError(
            f"`rounds` × `per_round` must label at most the {n - len(labelled)} inputs left in the pool; got "
            f"rounds={rounds}, per_round={per_round}."
        )
    history = [labelled]
    for _ in range(rounds):
        unlabelled = np.setdiff1d(np.arange(n), labelled)
        x_l, y_l = x_pool[labelled], labels_pool[labelled]
        round_params = params if train_fn is None else train_fn(params, x_l, y_l)
        chosen = acquire(
            kernel_fn, apply_fn, round_params, x_l, y_l, x_pool[unlabelled], per_round, **options
        )
        labelled = np.concatenate([labelled, unlabelled[chosen]])
        history.append(labelled)
    return history


def _entk_matrix(entk: np.ndarray) -> np.ndarray:
    n1, n2, o, _ = entk.shape
    return entk.transpose(0, 2, 1, 3).reshape(n1 * o, n2 * o)


def _cholesky(a: np.ndarray, ridge: float) -> tuple[np.ndarray, bool]:
    try:
        return scipy.linalg.cho_factor(a, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise checks.UsageError(
            f"`k_ll` plus the ridge (ridge={ridge} × mean diagonal) must be positive definite; its Cholesky "
            "factorization failed. Pass a larger `ridge` (e.g. 1e-3), or check that `k_ll` is a kernel "
            "of distinct labelled inputs."
        ) from None


def _pseudo_inverse(schur: np.ndarray, tolerance: float) -> np.ndarray:
    """The pseudo-inverses of the (m, q, q) symmetric Schur complements, eigenvalues below `tolerance`
    counted as 0 (a candidate already in the labelled set's span, with ridge 0, changes nothing)."""
    evals, evecs = np.linalg.eigh(schur)
    inverse = np.where(evals > tolerance, 1 / np.where(evals > tolerance, evals, 1.0), 0.0)
    return np.einsum("uik,uk,ujk->uij", evecs, inverse, evecs)


def _softmax(f: np.ndarray) -> np.ndarray:
    shifted = np.exp(f - np.max(f, axis=1, keepdims=True))
    return shifted / np.sum(shifted, axis=1, keepdims=True)


def _checked_pool_kernel(k_uu: Any, n_u: int, output_shape: tuple[int, ...]) -> np.ndarray:
    k_uu = checks.real_array("k_uu", k_uu)
    expected = (n_u, n_u, *output_shape)
    if k_uu.shape != expected:
        raise checks.UsageError(
            f"`k_uu` must be the pool's kernel with itself, of shape {expected} for a `k_ul` with {n_u} pool "
            f"inputs; got shape {k_uu.shape}."
        )
    return k_uu


def _checked_outputs(name: str, value: Any, n: int, outputs: int) -> np.ndarray:
    array = checks.real_array(name, value)
    if array.shape != (n, outputs):
        raise checks.UsageError(
            f"`{name}` must hold the network's outputs, of shape ({n}, {outputs}) (inputs, outputs O of "
            f"`y_l`); got shape {array.shape}. Zeros for plain kernel regression."
        )
    return array


def _checked_class_targets(class_targets: Any, outputs: int) -> np.ndarray:
    if class_targets is None:
        return np.eye(outputs) - 1 / outputs
    array = checks.real_array("class_targets", class_targets)
    if array.shape != (outputs, outputs):
        raise checks.UsageError(
            f"`class_targets` must be ({outputs}, {outputs}), row c the target of class c for O = {outputs} "
            f"outputs; got shape {array.shape}. Default: the centred one-hot targets I - 1/O."
        )
    return array


def _checked_labels(labels: Any, n: int, outputs: int) -> np.ndarray:
    array = np.asarray(labels)
    if (
        array.shape != (n,)
        or array.dtype.kind not in "iu"
        or (n and (array.min() < 0 or array.max() >= outputs))
    ):
        raise checks.UsageError(
            f"`labels` must be {n} integer classes in [0, {outputs}), one per labelled input; got "
            f"{checks._brief(labels)} of shape {array.shape} and dtype {array.dtype}."
        )
    return array
