"""pytest-benchmark micro-benchmarks: single compiled kernel calls at small sizes.

Not collected by the normal test run (``norecursedirs`` in pyproject.toml).
``pytest tests/benchmarks --benchmark-only`` times them; ``pytest tests/benchmarks
--benchmark-disable`` (scripts/test.sh) runs each body once as a plain test. The scaling
over N, O and width across commits is asv's job (asv_bench/).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
import pytest

import nt_pntk
from nt_pntk._src.bench import asv_results as bench_report
from nt_pntk.experiments import models

N, OUT, WIDTH = 8, 10, 64


@pytest.fixture(scope="module")
def fc():
    model = models.get_model("fc", width=WIDTH, outputs=OUT)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, 8, 8, 1))
    x = jax.random.normal(jax.random.PRNGKey(1), (N, 8, 8, 1))
    return model, params, x


def _compiled(kernel_fn, x, params):
    return jax.jit(lambda x, p: kernel_fn(x, None, p)).lower(x, params).compile()


@pytest.mark.parametrize("implementation", [1, 2, 3])
def test_pntk_fc(benchmark, fc, implementation):
    model, params, x = fc
    compiled = _compiled(
        nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0, implementation=implementation), x, params
    )
    result = benchmark(lambda: compiled(x, params).block_until_ready())
    assert result.shape == (N, N)


@pytest.mark.parametrize("implementation", [1, 2, 3])
def test_full_entk_fc(benchmark, fc, implementation):
    model, params, x = fc
    kernel_fn = nt.empirical_ntk_fn(model.apply_fn, trace_axes=(), vmap_axes=0, implementation=implementation)
    compiled = _compiled(kernel_fn, x, params)
    result = benchmark(lambda: compiled(x, params).block_until_ready())
    assert result.shape == (N, N, OUT, OUT)


def test_pntk_equals_ntk_of_summed_logits(benchmark, fc):
    """The pNTK through `empirical_pntk_fn` against the NTK of f's summed logits: same numbers."""
    model, params, x = fc
    compiled = _compiled(nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0), x, params)
    g = nt_pntk.summed_logits_fn(model.apply_fn)
    expected = nt.empirical_ntk_fn(g, vmap_axes=0)(x, None, params)
    result = benchmark(lambda: compiled(x, params).block_until_ready())
    np.testing.assert_allclose(result, jnp.squeeze(expected), rtol=1e-4, atol=1e-5)


def test_kernel_matrix_fc(benchmark, fc):
    """The tiled path on 128 inputs in 64-tiles (skipped where nt_pntk.tiled is absent)."""
    tiled = pytest.importorskip("nt_pntk.tiled")
    model, params, _ = fc
    x = jax.random.normal(jax.random.PRNGKey(2), (128, 8, 8, 1))
    fn = nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0)
    result = benchmark(lambda: tiled.kernel_matrix(fn, x, None, params, tile_size=64, progress=False))
    assert np.shape(result) == (128, 128)


def test_fit_exponents(benchmark):
    """The report's fits on a synthetic frame of 7 points × 9 kernels × 4 metrics."""
    import pandas as pd

    rows = []
    points = [
        (16, 10, 128),
        (32, 10, 128),
        (64, 10, 128),
        (16, 1, 128),
        (16, 100, 128),
        (16, 10, 32),
        (16, 10, 512),
    ]
    for metric in ("time", "peakmem", "temp_bytes", "total_bytes"):
        for kernel in ("entk", "trace", "pntk"):
            for implementation in ("1", "2", "3"):
                for n, outputs, width in points:
                    value = 1e-6 * n**2 * outputs ** (1.5 if kernel == "entk" else 0) * width
                    rows.append(
                        {
                            "commit": "c" * 40,
                            "env": "existing-py",
                            "date": 0,
                            "metric": metric,
                            "suite": "fc",
                            "kernel": kernel,
                            "implementation": implementation,
                            "n": n,
                            "outputs": outputs,
                            "width": width,
                            "value": value,
                        }
                    )
    frame = pd.DataFrame(rows)
    fits = benchmark(bench_report.fit_exponents, frame)
    assert len(fits) == 4 * 9 * 3
    entk_o = fits[(fits["kernel"] == "entk") & (fits["axis"] == "O")]["exponent"]
    np.testing.assert_allclose(entk_o, 1.5)
