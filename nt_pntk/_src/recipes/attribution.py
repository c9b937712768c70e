r"""Data attribution through a kernel surrogate of a trained network, and its evaluation by the LDS.

A kernel :math:`K` (the pNTK of the *trained* network, another approximation, or a sketch
:math:`K \approx \Phi\Phi^\top`) gives two ways of scoring how much training example :math:`i`
drives the prediction on a test input :math:`x`, as an ``(N_test, N_train)`` matrix:

* the **kernel surrogate** (Engel et al., ICLR 2024, with the pNTK): kernel regression fitted to
  the network's own outputs :math:`F` on the training inputs, :math:`\alpha = (K + \lambda I)^{-1}
  F \in \mathbb R^{N \times O}`, predicts :math:`\hat f(x) = \sum_i K(x, x_i)\, \alpha_i`; the
  score of :math:`i` for the readout :math:`r_x \in \mathbb R^O` of test input :math:`x` (the
  margin's :math:`e_y - e_{c}`, see `margin_readout`) is its term,

  .. math:: S_{xi} = K(x, x_i)\, \langle \alpha_i, r_x \rangle,
     \qquad \textstyle\sum_i S_{xi} = \langle r_x, \hat f(x) \rangle;

* **TRAK-style** (Park et al., ICML 2023): the regression weight of :math:`i` in the prediction at
  :math:`x`, times the training example's residual :math:`q_i = 1 - p_i` (its probability of its
  correct class) and the agreement of the two readouts,

  .. math:: S_{xi} = \big[\varphi(x)^\top (\Phi^\top\Phi + \lambda I)^{-1} \varphi(x_i)\big]\,
     q_i\, \langle r_x, r_i \rangle
     = \big[K_{x\cdot} (K + \lambda I)^{-1}\big]_i\, q_i\, \langle r_x, r_i \rangle.

  TRAK's features are gradients of each example's own margin; the pNTK's are gradients of
  :math:`g = \sum_o f_o / \sqrt O`, one for every output, as the pNTK stands for :math:`K \otimes
  I_O`: under that approximation the margins' gradients have inner products
  :math:`K(x, x_i) \langle r_x, r_i \rangle`, hence the readouts' agreement (without it the
  scores would not know whether two digits are of the same class).

Each comes from kernels (``*_scores``: an N×N solve) or from features (``*_feature_scores``: a
k×k solve, linear in N, Φ read in blocks of rows from an array, a memmap or a Zarr array, as
`nt_pntk.regression.predict_features` reads it). The ridge is relative to the mean diagonal of
:math:`K` (:math:`\lVert\Phi\rVert_F^2 / N`), as in `nt_pntk.regression.predict`. The scores are
made block by block of test inputs and may be written into ``out`` (a memmap): nothing larger
than a block of scores and a block of Φ is held besides it.

`linear_datamodeling_score` evaluates scores as the field does: the Spearman correlation, over
random subsets of the training set, between the margins the scores predict (their sum over the
subset) and those of networks retrained on each subset.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
import scipy.special
import scipy.stats

from nt_pntk._src import checks
from nt_pntk._src.kernels import regression, regression_features

#: A block of scores (and of the test kernel or features) is at most this many float64 bytes.
BLOCK_BYTES = 64 * checks.MIB


class DatamodelingScore(NamedTuple):
    """The linear datamodeling score (LDS) of attribution scores: `mean`, and `per_test`, the Spearman
    correlation of each test input (NaN where its predicted or actual margins are constant)."""

    mean: float
    per_test: np.ndarray


def margins(logits: Any, labels: Any) -> np.ndarray:
    r"""Each input's margin: the logit of its correct class minus the largest other logit.

    .. math:: m(x) = f_y(x) - \max_{o \ne y} f_o(x)

    (positive exactly where the network classifies :math:`x` correctly).

    Args:
      logits: ``(N, O)`` outputs of the network, O >= 2.
      labels: ``(N,)`` integer classes in ``[0, O)``.

    Returns:
      float64 margins of shape ``(N,)``.

    Raises:
      ValueError: shapes that do not match, fewer than 2 outputs, a label out of range, non-finite
        logits.
      TypeError: logits that are not real numbers, labels that are not integers.

    Example:
      >>> from nt_pntk import attribution
      >>> attribution.margins([[2.0, 0.5, 1.0], [0.0, 3.0, 1.0]], [0, 2])
      array([ 1., -2.])
    """
    logits, labels = _logits_labels(logits, labels)
    return logits[np.arange(len(labels)), labels] - _largest_other(logits, labels)[1]


def margin_readout(logits: Any, labels: Any) -> np.ndarray:
    r"""The readout of each input's margin: :math:`e_y - e_c`, c the class of its largest other logit.

    :math:`\langle r_x, f(x) \rangle` is the margin `margins` returns, and the readout of the
    scores: `surrogate_scores` with it attributes the margin.

    Args:
      logits: ``(N, O)`` outputs of the network, O >= 2.
      labels: ``(N,)`` integer classes in ``[0, O)``.

    Returns:
      float64 ``(N, O)``: +1 at the label, -1 at the runner-up class, 0 elsewhere.

    Raises:
      ValueError, TypeError: as `margins`.

    Example:
      >>> from nt_pntk import attribution
      >>> attribution.margin_readout([[2.0, 0.5, 1.0]], [0])
      array([[ 1.,  0., -1.]])
    """
    logits, labels = _logits_labels(logits, labels)
    rows = np.arange(len(labels))
    readout = np.zeros_like(logits)
    readout[rows, labels] = 1.0
    readout[rows, _largest_other(logits, labels)[0]] = -1.0
    return readout


def residuals(logits: Any, labels: Any) -> np.ndarray:
    r"""TRAK's residual of each training example: one minus the softmax probability of its class.

    .. math:: q_i = 1 - p_i = 1 - \frac{e^{f_{y_i}(x_i)}}{\sum_o e^{f_o(x_i)}}

    Args:
      logits: ``(N, O)`` outputs of the network, O >= 2.
      labels: ``(N,)`` integer classes in ``[0, O)``.

    Returns:
      float64 residuals in ``[0, 1]``, shape ``(N,)``.

    Raises:
      ValueError, TypeError: as `margins`.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import attribution
      >>> attribution.residuals([[0.0, 0.0], [np.log(3.0), 0.0]], [0, 0]).round(3)
      array([0.5 , 0.25])
    """
    logits, labels = _logits_labels(logits, labels)
    probabilities = scipy.special.softmax(logits, axis=1)
    return 1.0 - probabilities[np.arange(len(labels)), labels]


def surrogate_scores(
    k_test_train: Any,
    k_train_train: Any,
    train_outputs: Any,
    test_readout: Any,
    *,
    ridge: float = 1e-3,
    block_rows: int | None = None,
    out: Any = None,
) -> np.ndarray:
    r"""Attribution scores of the kernel surrogate (Engel et al., ICLR 2024), from kernels.

    .. math::
        S_{xi} = K(x, x_i) \langle \alpha_i, r_x \rangle, \qquad
        \alpha = (K + \lambda I)^{-1} F, \qquad \lambda = \texttt{ridge} \cdot
        \operatorname{tr}(K) / N,

    :math:`F` the trained network's outputs on the training inputs: the surrogate is fitted to the
    network, not to the labels, so that it explains what the network does. Each row sums to the
    surrogate's prediction of the readout, :math:`\sum_i S_{xi} = \langle r_x, \hat f(x)\rangle`,
    with :math:`\hat f` ``regression.predict(k_train_train, train_outputs, k_test_train,
    ridge=ridge)``.

    Args:
      k_test_train: ``(N_test, N_train)`` kernel between test and training inputs (an array or a
        memmap: read in blocks of rows).
      k_train_train: ``(N_train, N_train)`` kernel of the training inputs.
      train_outputs: ``(N_train, O)`` the trained network's outputs (logits) on the training inputs.
      test_readout: ``(N_test, O)`` what each test input's scores attribute: `margin_readout` for
        its margin, a one-hot row for one output.
      ridge: ridge > 0 relative to the mean diagonal of ``k_train_train``.
      block_rows: test inputs per block; by default as many as keep a block within 64 MiB.
      out: an optional writable ``(N_test, N_train)`` array (e.g. a ``.npy`` memmap) to write the
        scores into, block by block.

    Returns:
      float64 ``(N_test, N_train)`` scores (``out`` where given).

    Raises:
      ValueError: shapes that do not match (the message names the argument), non-finite entries, a
        ridge <= 0, a regularized kernel that is not positive definite (pass a larger ridge).
      TypeError: arguments that are not arrays of real numbers, or options of the wrong type.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import attribution, regression
      >>> rng = np.random.default_rng(0)
      >>> phi = rng.standard_normal((12, 4))  # 10 training inputs, 2 test inputs
      >>> k = phi @ phi.T
      >>> outputs = rng.standard_normal((10, 3))
      >>> readout = np.eye(3)[[0, 2]]  # attribute output 0 of test input 0, output 2 of test input 1
      >>> s = attribution.surrogate_scores(k[10:, :10], k[:10, :10], outputs, readout, ridge=0.1)
      >>> predicted = regression.predict(k[:10, :10], outputs, k[10:, :10], ridge=0.1)
      >>> s.shape, bool(np.allclose(s.sum(1), (predicted * readout).sum(1)))
      ((2, 10), True)
    """
    n = _train_kernel_size(k_train_train)
    kernel = checks.real_array("k_train_train", k_train_train)
    targets = _matrix("train_outputs", train_outputs, rows=n, what="N_train, O")
    test = _kernel_rows("k_test_train", k_test_train, n)
    readout = _matrix("test_readout", test_readout, rows=test.shape[0], what=f"N_test, {targets.shape[1]}")
    _same_outputs("test_readout", readout, "train_outputs", targets)
    factor = _regularized_factor(kernel, _ridge(ridge), "k_train_train")
    alpha = scipy.linalg.cho_solve(factor, targets, check_finite=False)

    def block(start: int, stop: int) -> np.ndarray:
        k_block = test.read(start, stop)[0]
        return k_block * (readout[start:stop] @ alpha.T)

    return _write_blocks(block, test.shape[0], n, block_rows, out)


def trak_scores(
    k_test_train: Any,
    k_train_train: Any,
    train_residuals: Any,
    *,
    test_readout: Any = None,
    train_readout: Any = None,
    ridge: float = 1e-3,
    block_rows: int | None = None,
    out: Any = None,
) -> np.ndarray:
    r"""TRAK-style attribution scores, from kernels.

    .. math::
        S_{xi} = \big[K_{x\cdot} (K + \lambda I)^{-1}\big]_i\, q_i\, \langle r_x, r_i \rangle,
        \qquad \lambda = \texttt{ridge} \cdot \operatorname{tr}(K) / N,

    which is :math:`\varphi(x)^\top (\Phi^\top\Phi + \lambda I)^{-1} \varphi(x_i)\, q_i \langle r_x,
    r_i\rangle` for features with :math:`K = \Phi\Phi^\top` (`trak_feature_scores`, linear in N).
    Without readouts, :math:`\langle r_x, r_i\rangle = 1` (a kernel of one output's gradients).

    Args:
      k_test_train: ``(N_test, N_train)`` kernel between test and training inputs (read in blocks).
      k_train_train: ``(N_train, N_train)`` kernel of the training inputs.
      train_residuals: ``(N_train,)`` residuals :math:`q_i` (`residuals`: 1 - p of the correct class).
      test_readout: ``(N_test, O)`` readouts of the test inputs (`margin_readout`), or None.
      train_readout: ``(N_train, O)`` readouts of the training inputs; given with ``test_readout``.
      ridge: ridge > 0 relative to the mean diagonal of ``k_train_train``.
      block_rows: test inputs per block; by default as many as keep a block within 64 MiB.
      out: an optional writable ``(N_test, N_train)`` array to write the scores into.

    Returns:
      float64 ``(N_test, N_train)`` scores (``out`` where given).

    Raises:
      ValueError: shapes that do not match, non-finite entries, one readout without the other, a
        ridge <= 0, a regularized kernel that is not positive definite.
      TypeError: arguments that are not arrays of real numbers, or options of the wrong type.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import attribution
      >>> phi = np.random.default_rng(0).standard_normal((12, 4))
      >>> k = phi @ phi.T
      >>> s = attribution.trak_scores(k[10:, :10], k[:10, :10], np.full(10, 0.5), ridge=0.1)
      >>> s.shape
      (2, 10)
    """
    n = _train_kernel_size(k_train_train)
    kernel = checks.real_array("k_train_train", k_train_train)
    q = _vector("train_residuals", train_residuals, n)
    test = _kernel_rows("k_test_train", k_test_train, n)
    weights = _trak_weights(q, test_readout, train_readout, test.shape[0], n)
    factor = _regularized_factor(kernel, _ridge(ridge), "k_train_train")

    def block(start: int, stop: int) -> np.ndarray:
        k_block = test.read(start, stop)[0]
        return scipy.linalg.cho_solve(factor, k_block.T, check_finite=False).T * weights(start, stop)

    return _write_blocks(block, test.shape[0], n, block_rows, out)


def surrogate_feature_scores(
    phi_test: Any,
    phi_train: Any,
    train_outputs: Any,
    test_readout: Any,
    *,
    ridge: float = 1e-3,
    block_rows: int | None = None,
    out: Any = None,
) -> np.ndarray:
    r"""`surrogate_scores` on the kernel :math:`K = \Phi\Phi^\top`, from the features, linear in N.

    .. math::
        S_{xi} = \varphi(x)^\top\varphi(x_i)\, \langle \alpha_i, r_x \rangle, \qquad
        \alpha = (\Phi\Phi^\top + \lambda I)^{-1} F = \tfrac1\lambda \big(F - \Phi (\Phi^\top\Phi +
        \lambda I)^{-1} \Phi^\top F\big),

    a k×k solve (:math:`O(Nk^2 + k^3)`) instead of an N×N one; Φ is read in blocks of rows.

    Args:
      phi_test: ``(N_test, k)`` features of the test inputs (e.g. ``Sketch(dim=k).kernel_fn(f)
        .sketch_fn()`` or `nt_pntk.feature_matrix`): an array, a memmap, a Zarr array, or the path
        of a ``.npy`` or ``.zarr`` array.
      phi_train: ``(N_train, k)`` features of the training inputs, of the same kinds.
      train_outputs: ``(N_train, O)`` the trained network's outputs on the training inputs.
      test_readout: ``(N_test, O)`` what each test input's scores attribute (`margin_readout`).
      ridge: ridge > 0 relative to the mean diagonal of :math:`\Phi\Phi^\top`.
      block_rows: inputs per block of Φ and of scores; by default as many as keep one within 64 MiB.
      out: an optional writable ``(N_test, N_train)`` array to write the scores into.

    Returns:
      float64 ``(N_test, N_train)`` scores (``out`` where given).

    Raises:
      ValueError: shapes that do not match, non-finite entries, a ridge <= 0.
      TypeError: arguments that are not arrays of real numbers, or options of the wrong type.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import attribution
      >>> rng = np.random.default_rng(0)
      >>> phi = rng.standard_normal((12, 4))
      >>> outputs, readout = rng.standard_normal((10, 3)), np.eye(3)[[0, 2]]
      >>> primal = attribution.surrogate_feature_scores(phi[10:], phi[:10], outputs, readout, ridge=0.1)
      >>> k = phi @ phi.T
      >>> dual = attribution.surrogate_scores(k[10:, :10], k[:10, :10], outputs, readout, ridge=0.1)
      >>> bool(np.allclose(primal, dual))
      True
    """
    train, test = _feature_pair(phi_train, phi_test)
    n = train.shape[0]
    targets = _matrix("train_outputs", train_outputs, rows=n, what="N_train, O")
    readout = _matrix("test_readout", test_readout, rows=test.shape[0], what=f"N_test, {targets.shape[1]}")
    _same_outputs("test_readout", readout, "train_outputs", targets)
    ridge = _ridge(ridge)
    rows = _feature_block_rows(train, block_rows)
    gram, cross, exponent = regression_features._accumulate(train, targets, rows)  # ΦᵀΦ/4^e, ΦᵀF/2^e
    lam = ridge * float(np.trace(gram)) / n
    factor = _regularized_factor(gram, lam, "phi_train", relative=False)
    beta = scipy.linalg.cho_solve(factor, cross, check_finite=False)  # scaled Φ: (Φ'ᵀΦ' + λ'I)⁻¹Φ'ᵀF
    # α' = (F - Φ'β)/λ' block by block: for Φ' = Φ/2^e, K' = K/4^e and α' = 4^e α, so K'α' = Kα (S unchanged).
    alpha = np.empty_like(targets)
    for start, stop, block in _scaled_blocks(train, exponent, rows):
        alpha[start:stop] = (targets[start:stop] - block @ beta) / lam

    def scores(start: int, stop: int) -> np.ndarray:
        test_block = _scaled(test, start, stop, exponent)
        contrast = readout[start:stop] @ alpha.T
        result = np.empty((stop - start, n))
        for t_start, t_stop, train_block in _scaled_blocks(train, exponent, rows):
            result[:, t_start:t_stop] = (test_block @ train_block.T) * contrast[:, t_start:t_stop]
        return result

    return _write_blocks(scores, test.shape[0], n, block_rows, out, width=train.shape[1])


def trak_feature_scores(
    phi_test: Any,
    phi_train: Any,
    train_residuals: Any,
    *,
    test_readout: Any = None,
    train_readout: Any = None,
    ridge: float = 1e-3,
    block_rows: int | None = None,
    out: Any = None,
) -> np.ndarray:
    r"""TRAK-style scores from features (projected or sketched gradients), linear in N.

    .. math::
        S_{xi} = \varphi(x)^\top (\Phi^\top\Phi + \lambda I)^{-1} \varphi(x_i)\; q_i\,
        \langle r_x, r_i \rangle, \qquad \lambda = \texttt{ridge} \cdot \lVert\Phi\rVert_F^2 / N,

    `trak_scores` on the kernel :math:`\Phi\Phi^\top` (the push-through identity), by a k×k solve.
    Φ is read in blocks of rows: the training features once for :math:`\Phi^\top\Phi`, then once
    per block of test inputs.

    Args:
      phi_test: ``(N_test, k)`` features of the test inputs: an array, a memmap, a Zarr array, or
        the path of a ``.npy`` or ``.zarr`` array.
      phi_train: ``(N_train, k)`` features of the training inputs, of the same kinds.
      train_residuals: ``(N_train,)`` residuals :math:`q_i` (`residuals`).
      test_readout: ``(N_test, O)`` readouts of the test inputs (`margin_readout`), or None.
      train_readout: ``(N_train, O)`` readouts of the training inputs; given with ``test_readout``.
      ridge: ridge > 0 relative to the mean diagonal of :math:`\Phi\Phi^\top`.
      block_rows: inputs per block of Φ and of scores; by default as many as keep one within 64 MiB.
      out: an optional writable ``(N_test, N_train)`` array to write the scores into.

    Returns:
      float64 ``(N_test, N_train)`` scores (``out`` where given).

    Raises:
      ValueError: shapes that do not match, non-finite entries, one readout without the other, a
        ridge <= 0.
      TypeError: arguments that are not arrays of real numbers, or options of the wrong type.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import attribution
      >>> phi = np.random.default_rng(0).standard_normal((12, 4))
      >>> k = phi @ phi.T
      >>> primal = attribution.trak_feature_scores(phi[10:], phi[:10], np.full(10, 0.5), ridge=0.1)
      >>> dual = attribution.trak_scores(k[10:, :10], k[:10, :10], np.full(10, 0.5), ridge=0.1)
      >>> bool(np.allclose(primal, dual))
      True
    """
    train, test = _feature_pair(phi_train, phi_test)
    n = train.shape[0]
    q = _vector("train_residuals", train_residuals, n)
    weights = _trak_weights(q, test_readout, train_readout, test.shape[0], n)
    ridge = _ridge(ridge)
    rows = _feature_block_rows(train, block_rows)
    gram, _, exponent = regression_features._accumulate(train, np.zeros((n, 1)), rows)
    lam = ridge * float(np.trace(gram)) / n
    factor = _regularized_factor(gram, lam, "phi_train", relative=False)

    def scores(start: int, stop: int) -> np.ndarray:
        # The scale 2^-e of both sides cancels against (Φ'ᵀΦ' + λ'I)⁻¹ = 4^e (ΦᵀΦ + λI)⁻¹.
        solved = scipy.linalg.cho_solve(factor, _scaled(test, start, stop, exponent).T, check_finite=False).T
        result = np.empty((stop - start, n))
        for t_start, t_stop, train_block in _scaled_blocks(train, exponent, rows):
            result[:, t_start:t_stop] = solved @ train_block.T
        return result * weights(start, stop)

    return _write_blocks(scores, test.shape[0], n, block_rows, out, width=train.shape[1])


def linear_datamodeling_score(scores: Any, subsets: Any, subset_margins: Any) -> DatamodelingScore:
    r"""The linear datamodeling score (LDS; Park et al., ICML 2023) of attribution scores.

    For each test input :math:`x`, the margin the scores predict for a network trained on the
    subset :math:`s` of the training set is the sum of its scores over the subset,
    :math:`\hat m_s(x) = \sum_{i \in s} S_{xi}`; the LDS is the Spearman rank correlation over
    the subsets between the predicted and the actual margins :math:`m_s(x)` (of networks retrained
    on each subset), averaged over the test inputs:

    .. math:: \mathrm{LDS} = \frac{1}{N_\text{test}} \sum_x
        \rho_\text{Spearman}\big(\{\hat m_s(x)\}_s, \{m_s(x)\}_s\big).

    Ties share their average rank (as `scipy.stats.spearmanr`). A test input whose predicted or
    actual margins are the same on every subset has no rank correlation: NaN in ``per_test``, left
    out of the mean.

    Args:
      scores: ``(N_test, N_train)`` attribution scores.
      subsets: ``(N_subsets, N_train)`` boolean masks of the training subsets, N_subsets >= 3.
      subset_margins: ``(N_subsets, N_test)`` margins of the network retrained on each subset.

    Returns:
      `DatamodelingScore`: ``mean`` (a float in [-1, 1]) and ``per_test`` (``(N_test,)``).

    Raises:
      ValueError: shapes that do not match (the message names the argument), fewer than 3 subsets,
        non-finite entries, no test input with a defined correlation.
      TypeError: masks that are not boolean, scores or margins that are not real numbers.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import attribution
      >>> scores = np.array([[1.0, 2.0, 4.0]])  # one test input, three training examples
      >>> subsets = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=bool)  # predicted: 3, 5, 6
      >>> attribution.linear_datamodeling_score(scores, subsets, [[0.1], [0.3], [0.2]]).mean
      0.5
    """
    scores = checks.real_array("scores", scores)
    if scores.ndim != 2 or 0 in scores.shape:
        raise checks.UsageError(
            f"`scores` must have shape (N_test, N_train), no axis of size 0; got {scores.shape}."
        )
    n_test, n_train = scores.shape
    masks = np.asarray(subsets)
    if masks.dtype != np.bool_:
        raise checks.UsageTypeError(
            f"`subsets` must be boolean masks of the training examples; got dtype {masks.dtype}. "
            "Pass `subsets.astype(bool)` for 0/1 masks."
        )
    if masks.ndim != 2 or masks.shape[1] != n_train or masks.shape[0] < 3:
        raise checks.UsageError(
            f"`subsets` must have shape (N_subsets, N_train) = (N_subsets, {n_train}) for `scores` of shape "
            f"{scores.shape}, with N_subsets >= 3 (a rank correlation over the subsets); got {masks.shape}."
        )
    actual = _matrix("subset_margins", subset_margins, rows=masks.shape[0], what=f"N_subsets, {n_test}")
    if actual.shape[1] != n_test:
        raise checks.UsageError(
            f"`subset_margins` must have shape (N_subsets, N_test) = {(masks.shape[0], n_test)}; "
            f"got {actual.shape}."
        )
    predicted = masks.astype(np.float64) @ scores.T  # (N_subsets, N_test)
    per_test = _spearman_columns(predicted, actual)
    if np.all(np.isnan(per_test)):
        raise checks.UsageError(
            "The LDS is undefined: for every test input the predicted or the actual margins are the same on "
            "every subset (constant scores, or identical subsets?)."
        )
    return DatamodelingScore(float(np.nanmean(per_test)), per_test)


def _spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho between the columns of `a` and `b` (average ranks for ties): the Pearson
    correlation of the ranks; NaN where a column is constant."""
    ra = scipy.stats.rankdata(a, axis=0)
    rb = scipy.stats.rankdata(b, axis=0)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    norms = np.sqrt((ra**2).sum(axis=0) * (rb**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=0) / norms
    rho[norms == 0] = np.nan
    return np.clip(rho, -1.0, 1.0)


# ---- checks and blocks ---------------------------------------------------------------------------


def _logits_labels(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    logits = checks.real_array("logits", logits)
    if logits.ndim != 2 or logits.shape[1] < 2 or logits.shape[0] == 0:
        raise checks.UsageError(
            f"`logits` must have shape (N, O) with N >= 1 and O >= 2; got {logits.shape}."
        )
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise checks.UsageTypeError(f"`labels` must be integer classes; got dtype {labels.dtype}.")
    if labels.shape != (logits.shape[0],):
        raise checks.UsageError(
            f"`labels` must have shape (N,) = ({logits.shape[0]},) for `logits` of shape {logits.shape}; "
            f"got {labels.shape}."
        )
    bad = (labels < 0) | (labels >= logits.shape[1])
    if bad.any():
        raise checks.UsageError(
            f"`labels` must be classes in [0, {logits.shape[1]}) (O = {logits.shape[1]} logits); got "
            f"{labels[bad][0]} at index {int(np.argmax(bad))}."
        )
    return logits, labels.astype(np.intp)


def _largest_other(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The class of each row's largest logit other than its label, and that logit."""
    others = logits.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    runner_up = np.argmax(others, axis=1)
    return runner_up, others[np.arange(len(labels)), runner_up]


def _ridge(ridge: Any) -> float:
    ridge = checks.positive("ridge", ridge)  # both methods regularize; also a k×k solve for k > N
    return ridge


def _train_kernel_size(k_train_train: Any) -> int:
    shape = np.shape(k_train_train)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise checks.UsageError(
            "`k_train_train` must be a square (N_train, N_train) kernel of the training inputs, "
            f"N_train >= 1; got shape {shape}."
        )
    return shape[0]


def _matrix(name: str, value: Any, *, rows: int, what: str) -> np.ndarray:
    array = checks.real_array(name, value)
    if array.ndim != 2 or array.shape[0] != rows or array.shape[1] == 0:
        raise checks.UsageError(f"`{name}` must have shape ({what}) with {rows} rows; got {array.shape}.")
    return array


def _vector(name: str, value: Any, size: int) -> np.ndarray:
    array = checks.real_array(name, value)
    if array.shape != (size,):
        raise checks.UsageError(f"`{name}` must have shape (N_train,) = ({size},); got {array.shape}.")
    return array


def _same_outputs(name: str, value: np.ndarray, other: str, reference: np.ndarray) -> None:
    if value.shape[1] != reference.shape[1]:
        raise checks.UsageError(
            f"`{name}` must have O = {reference.shape[1]} columns, as `{other}` (shape {reference.shape}); "
            f"got shape {value.shape}."
        )


def _kernel_rows(name: str, value: Any, n_train: int) -> regression_features._Rows:
    rows = regression_features._features(name, value)
    if rows.ndim != 2 or rows.shape[1] != n_train:
        raise checks.UsageError(
            f"`{name}` must have shape (N_test, N_train) = (N_test, {n_train}) (the kernel between the test "
            f"and the {n_train} training inputs); got shape {rows.shape}."
        )
    return rows


def _feature_pair(
    phi_train: Any, phi_test: Any
) -> tuple[regression_features._Rows, regression_features._Rows]:
    train = regression_features._features("phi_train", phi_train)
    test = regression_features._features("phi_test", phi_test)
    if train.ndim != 2 or test.ndim != 2 or test.shape[1] != train.shape[1]:
        raise checks.UsageError(
            f"`phi_test` and `phi_train` must be (N_test, k) and (N_train, k) features with the same k "
            "(flatten Jacobian rows: `phi.reshape(len(phi), -1)`); "
            f"got shapes {test.shape} and {train.shape}."
        )
    return train, test


def _trak_weights(q: np.ndarray, test_readout: Any, train_readout: Any, n_test: int, n_train: int) -> Any:
    """``weights(start, stop)``: the ``(stop - start, N_train)`` factors q_i ⟨r_x, r_i⟩ of a block."""
    if (test_readout is None) != (train_readout is None):
        given, missing = (
            ("test_readout", "train_readout") if train_readout is None else ("train_readout", "test_readout")
        )
        raise checks.UsageError(
            f"`{given}` was given without `{missing}`: pass both readouts (e.g. `margin_readout` of the test "
            "and of the training logits) or neither (scores of a single output)."
        )
    if test_readout is None:
        return lambda start, stop: q[None, :]
    train_r = _matrix("train_readout", train_readout, rows=n_train, what="N_train, O")
    test_r = _matrix("test_readout", test_readout, rows=n_test, what=f"N_test, {train_r.shape[1]}")
    _same_outputs("test_readout", test_r, "train_readout", train_r)
    weighted = train_r * q[:, None]
    return lambda start, stop: test_r[start:stop] @ weighted.T


def _regularized_factor(kernel: np.ndarray, ridge: float, name: str, *, relative: bool = True) -> Any:
    """The Cholesky factor of ``kernel + λI`` (λ = ridge × mean diagonal if `relative`), symmetric
    kernels only; a ValueError naming `name` where it is not positive definite."""
    n = kernel.shape[0]
    if relative:
        # `regression.predict`'s check, at float32's round-off: the kernels come here as float64.
        regression._check_symmetric(kernel, float(np.finfo(np.float32).eps), full=False)
        lam = ridge * float(np.trace(kernel)) / n
    else:
        lam = ridge
    regularized = kernel + lam * np.eye(n)
    try:
        return scipy.linalg.cho_factor(regularized, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise checks.UsageError(
            f"`{name}` plus the ridge (λ = {lam:.3g}) is not positive definite: check that it is a kernel "
            "(a Gram matrix) or pass a larger `ridge`."
        ) from None


def _feature_block_rows(train: regression_features._Rows, block_rows: Any) -> int:
    if block_rows is not None:
        return checks.positive_int("block_rows", block_rows)
    return max(1, BLOCK_BYTES // (8 * train.shape[1]))


def _scaled(rows: regression_features._Rows, start: int, stop: int, exponent: int) -> np.ndarray:
    block = rows.read(start, stop)[0]
    return np.ldexp(block, -exponent, out=block)


def _scaled_blocks(rows: regression_features._Rows, exponent: int, block_rows: int) -> Any:
    for start in range(0, rows.shape[0], block_rows):
        stop = min(start + block_rows, rows.shape[0])
        yield start, stop, _scaled(rows, start, stop, exponent)


def _write_blocks(
    block: Any, n_test: int, n_train: int, block_rows: Any, out: Any, *, width: int = 0
) -> np.ndarray:
    """Scores ``block(start, stop)`` for blocks of test inputs, written into `out` (or a new array)."""
    if block_rows is None:
        block_rows = max(1, BLOCK_BYTES // (8 * max(n_train, width)))
    block_rows = checks.positive_int("block_rows", block_rows)
    if out is None:
        out = np.empty((n_test, n_train))
    elif tuple(getattr(out, "shape", ())) != (n_test, n_train):
        raise checks.UsageError(
            f"`out` must be a writable array of shape (N_test, N_train) = {(n_test, n_train)}; got "
            f"{getattr(out, 'shape', type(out).__name__)}."
        )
    for start in range(0, n_test, block_rows):
        stop = min(start + block_rows, n_test)
        out[start:stop] = block(start, stop)
    return out
