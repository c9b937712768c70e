r"""Trainability at initialization: training-free scores from a kernel's spectrum (TE-NAS-style).

Gradient descent on the squared loss moves a wide network's outputs on a batch by
:math:`\dot f = -\eta\, \Theta\, (f - y)`: the error along the kernel's eigenvector
:math:`v_i` decays as :math:`e^{-\eta \lambda_i t}`. The largest learning rate that
stays stable is :math:`\eta < 2 / \lambda_\max`, so the slowest direction decays at
the rate :math:`\lambda_\min / \lambda_\max = 1/\kappa`. TE-NAS (Chen, Gong & Wang,
ICLR 2021) ranks architectures at initialization by the condition number
:math:`\kappa = \lambda_\max / \lambda_\min` of their eNTK on a minibatch, **lower
is more trainable**; here the same scores come from any kernel: an N×N
approximation (the pNTK, the trace) or the full eNTK as its NO×NO matrix.

The pNTK stands for :math:`K \otimes I_O`, whose eigenvalues are K's repeated O
times: its :math:`\lambda_\max`, :math:`\lambda_\min` and :math:`\kappa` are K's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nt_pntk._src import checks, measure
from nt_pntk._src.kernels import spectra


@dataclasses.dataclass(frozen=True)
class TrainabilityScores:
    r"""The spectral scores of one kernel on one minibatch, and what they cost.

    Attributes:
      lambda_max: the largest eigenvalue :math:`\lambda_\max`.
      lambda_min: the smallest eigenvalue :math:`\lambda_\min` (≤ 0 when the kernel
        is singular in float64).
      condition_number: :math:`\kappa = \lambda_\max / \lambda_\min`, TE-NAS's score:
        lower is more trainable; ``inf`` when :math:`\lambda_\min \le 0`.
      mean_eigenvalue: :math:`\operatorname{tr} K / n`, the mean of the eigenvalues.
      size: n, the kernel's side: N for an N×N kernel, NO for the eNTK.
      kernel_s: seconds of one compiled call of the kernel function (NaN when the
        kernel was given, not computed).
      compile_s: seconds to trace and compile the kernel function (NaN likewise).
      eigen_s: seconds of the float64 eigendecomposition.
    """

    lambda_max: float
    lambda_min: float
    condition_number: float
    mean_eigenvalue: float
    size: int
    kernel_s: float
    compile_s: float
    eigen_s: float


@dataclasses.dataclass(frozen=True)
class RankCorrelation:
    """Kendall's τ between scores and accuracies, with a bootstrap interval over the networks.

    Attributes:
      tau: Kendall's τ-b (``scipy.stats.kendalltau``) on all the networks.
      p_value: its two-sided p-value (no correlation as the null hypothesis).
      low: the lower end of the bootstrap percentile interval.
      high: the upper end.
      n: the number of networks.
    """

    tau: float
    p_value: float
    low: float
    high: float
    n: int


def scores_from_kernel(kernel: Any) -> TrainabilityScores:
    r"""The trainability scores of a kernel already computed on a minibatch.

    .. math::
        \lambda_\max, \quad \lambda_\min, \quad
        \kappa = \lambda_\max / \lambda_\min, \quad \bar\lambda = \operatorname{tr} K / n,

    from the eigenvalues of `nt_pntk.spectra.spectrum` (``numpy.linalg.eigvalsh`` in
    float64 of the symmetric part). An ``(N, N, O, O)`` eNTK is taken as the NO×NO
    matrix (n = NO); an N×N kernel K as itself (the spectrum of :math:`K \otimes I_O`
    has the same extremes).

    Args:
      kernel: an ``(N, N)`` kernel or an ``(N, N, O, O)`` eNTK (NT's ``trace_axes=()``
        layout), real and finite.

    Returns:
      `TrainabilityScores` with ``kernel_s`` and ``compile_s`` NaN.

    Raises:
      ValueError: a kernel of another shape, empty, or with NaN or infinite entries.
      TypeError: a kernel that is not an array of real numbers.

    Example:
      >>> import numpy as np
      >>> from nt_pntk import trainability
      >>> s = trainability.scores_from_kernel(np.diag([4.0, 2.0, 0.5]))
      >>> s.lambda_max, s.lambda_min, s.condition_number, s.mean_eigenvalue
      (4.0, 0.5, 8.0, 2.1666666666666665)
    """
    return _scores(kernel, "kernel", kernel_s=math.nan, compile_s=math.nan)


def scores(kernel_fn: Callable, x: Any, params: Any, **apply_fn_kwargs: Any) -> TrainabilityScores:
    r"""The trainability scores of a network's kernel on the minibatch ``x``, timed.

    Computes :math:`K = ` ``kernel_fn(x, None, params, **apply_fn_kwargs)`` under
    ``jax.jit`` (compiled once, then one timed call), then `scores_from_kernel`.
    ``kernel_fn`` is any kernel function with NT's calling convention: an N×N
    approximation's (``nt_pntk.empirical_pntk_fn(f)``,
    ``approximations.Trace().kernel_fn(f)``) or the full eNTK's
    (``approximations.FullENTK().kernel_fn(f)``, whose ``(N, N, O, O)`` output is
    scored as the NO×NO matrix).

    Sign conventions: :math:`\kappa \ge 1`, lower is more trainable (TE-NAS ranks
    networks by :math:`-\kappa`); a larger :math:`\lambda_\min` means a faster
    slowest direction. A singular kernel (:math:`\lambda_\min \le 0` in float64, e.g.
    the eNTK when NO exceeds the number of parameters) has :math:`\kappa = \infty`:
    the worst score, tied with every other singular kernel. A nearly singular one
    has a large finite :math:`\kappa` that mostly measures round-off.

    Args:
      kernel_fn: ``kernel_fn(x1, x2, params, **kwargs)`` returning an ``(N, N)``
        kernel or an ``(N, N, O, O)`` eNTK.
      x: the minibatch (N inputs).
      params: the network's parameters (at initialization, for TE-NAS's scores).
      **apply_fn_kwargs: passed to ``kernel_fn``.

    Returns:
      `TrainabilityScores`.

    Raises:
      TypeError: ``kernel_fn`` not callable.
      ValueError: a kernel with NaN or infinite entries (the network's outputs or
        gradients overflow at these parameters), or of a shape other than
        ``(N, N)`` or ``(N, N, O, O)``.

    Example:
      >>> import jax
      >>> import nt_pntk
      >>> from nt_pntk import trainability
      >>> from nt_pntk.experiments import models
      >>> m = models.get_model("fc", width=64, outputs=10, depth=2)
      >>> _, params = m.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
      >>> x = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 1))
      >>> s = trainability.scores(nt_pntk.empirical_pntk_fn(m.apply_fn), x, params)
      >>> s.size, s.condition_number >= 1.0, s.lambda_min > 0.0
      (16, True, True)
    """
    import jax

    if not callable(kernel_fn):
        raise checks.UsageTypeError(
            f"`kernel_fn` must be a kernel function kernel_fn(x1, x2, params), such as "
            f"nt_pntk.empirical_pntk_fn(f); got {kernel_fn!r} of type {type(kernel_fn).__name__}."
        )

    def kernel_of(x: Any, params: Any) -> Any:
        return kernel_fn(x, None, params, **apply_fn_kwargs)

    compiled, compile_s = measure.compile_timed(kernel_of, x, params)
    start = time.perf_counter()
    kernel = jax.block_until_ready(compiled(x, params))
    kernel_s = time.perf_counter() - start
    bad = ~np.isfinite(np.asarray(kernel))
    if bad.any():
        raise ValueError(
            f"the kernel of the network at these parameters has {int(bad.sum())} NaN or infinite "
            f"entries of {bad.size}: its outputs or gradients overflow on `x` (check the "
            "initialization's scale, or compute in float64 with jax_enable_x64); no spectrum to score."
        )
    with checks.computed_values():  # a refused shape is the kernel function's, not the caller's argument
        return _scores(kernel, "kernel_fn(x, None, params)", kernel_s=kernel_s, compile_s=compile_s)


def _scores(kernel: Any, name: str, *, kernel_s: float, compile_s: float) -> TrainabilityScores:
    start = time.perf_counter()
    spectrum = spectra._spectrum(name, kernel)
    eigen_s = time.perf_counter() - start
    eigenvalues = spectrum.eigenvalues
    return TrainabilityScores(
        lambda_max=spectrum.lambda_max,
        lambda_min=spectrum.lambda_min,
        condition_number=spectrum.condition_number,
        mean_eigenvalue=float(eigenvalues.mean()),
        size=len(eigenvalues),
        kernel_s=kernel_s,
        compile_s=compile_s,
        eigen_s=eigen_s,
    )


def kendall_tau(
    scores: Sequence[float] | np.ndarray,
    accuracies: Sequence[float] | np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RankCorrelation:
    r"""Kendall's τ between networks' scores and their trained accuracies, with a bootstrap interval.

    .. math::
        \tau = \frac{n_c - n_d}{\sqrt{(n_0 - n_1)(n_0 - n_2)}},

    τ-b (``scipy.stats.kendalltau``): :math:`n_c` concordant and :math:`n_d`
    discordant pairs of networks, :math:`n_0 = n(n-1)/2`, :math:`n_1, n_2` the pairs
    tied in the scores and in the accuracies. The interval is the bootstrap
    percentile interval over the networks: ``resamples`` draws of n networks with
    replacement (draws where τ is undefined, all scores or accuracies tied, are
    left out). For the condition number a *negative* τ is the expected sign (lower
    κ, higher accuracy). Scores may be ``inf`` (a singular kernel's κ): they rank
    above every finite score.

    Args:
      scores: one score per network, real, not NaN.
      accuracies: one accuracy per network, finite.
      resamples: bootstrap draws, at least 1.
      confidence: the interval's level, in (0, 1).
      seed: NumPy's generator's seed for the draws.

    Returns:
      `RankCorrelation`.

    Raises:
      ValueError: arrays that are not 1-D, of different lengths or of fewer than 2
        networks, NaN scores, non-finite accuracies, ``confidence`` outside (0, 1).
      TypeError: non-numeric arrays, ``resamples`` or ``seed`` not an int.

    Example:
      >>> from nt_pntk import trainability
      >>> r = trainability.kendall_tau([1.0, 3.0, 2.0, 4.0], [0.9, 0.7, 0.8, 0.6], resamples=200)
      >>> r.tau, r.n
      (-1.0, 4)
    """
    from scipy import stats

    score = checks.real_array("scores", scores, finite=False)
    accuracy = checks.real_array("accuracies", accuracies)
    resamples = checks.positive_int("resamples", resamples)
    confidence = checks.finite("confidence", confidence)
    seed = checks.seed("seed", seed)
    if not 0 < confidence < 1:
        raise checks.UsageError(f"`confidence` must be in (0, 1), e.g. 0.95; got confidence={confidence}.")
    if score.ndim != 1 or accuracy.shape != score.shape or len(score) < 2:
        raise checks.UsageError(
            "`scores` and `accuracies` must be 1-D arrays of the same length, one entry per network, at "
            f"least 2; got shapes {score.shape} and {accuracy.shape}."
        )
    if np.isnan(score).any():
        raise checks.UsageError(
            f"`scores` must not be NaN; got {int(np.isnan(score).sum())} NaN entries (inf is allowed)."
        )
    # Ranks, not values: scipy's τ sees the same order, and inf scores tie among themselves only.
    score_ranks = stats.rankdata(score)
    full = stats.kendalltau(score_ranks, accuracy)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(score), size=(resamples, len(score)))
    taus = np.array([_tau_or_nan(score_ranks[d], accuracy[d]) for d in draws])
    taus = taus[~np.isnan(taus)]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(taus, [tail, 100 - tail]) if len(taus) else (math.nan, math.nan)
    return RankCorrelation(
        tau=float(full.statistic), p_value=float(full.pvalue), low=float(low), high=float(high), n=len(score)
    )


def _tau_or_nan(a: np.ndarray, b: np.ndarray) -> float:
    if np.all(a == a[0]) or np.all(b == b[0]):  # τ undefined (scipy would warn)
        return math.nan
    from scipy import stats

    return float(stats.kendalltau(a, b).statistic)
