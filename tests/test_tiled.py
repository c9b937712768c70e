"""`nt_pntk.tiled.kernel_matrix`: equal to the direct kernel, resumable, sharded, clear about bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import tiled_helpers as th
import zarr

import nt_pntk

# isort: split
import neural_tangents as nt

from nt_pntk import cli
from nt_pntk._src.tiled import compute, planning, storage
from nt_pntk.approximations import Trace
from nt_pntk.tiled import kernel_matrix

HELPERS = str(Path(__file__).parent / "tiled_helpers.py")
RTOL = 3e-6  # float32 Gram sums in another order than NT's contraction, relative to the largest entry
COMMON = dict(tile_size=th.TILE, progress=False)


def assert_close(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= RTOL * scale


@pytest.fixture(scope="module")
def p():
    return th.problem()


@pytest.fixture(scope="module")
def reference(p):
    """The direct (untiled) pNTK, and kernel_matrix's own results in memory (tile 8)."""
    direct = jax.jit(p.pntk_fn)
    return {
        "symmetric": np.asarray(direct(p.x1, None, p.params)),
        "x2": np.asarray(direct(p.x1, p.x2, p.params)),
        "tiled_symmetric": kernel_matrix(p.pntk_fn, p.x1, None, p.params, **COMMON),
    }


def record_count(out: Path) -> int:
    return storage.Record(out).count()


# Equality with the direct kernel ------------------------------------------------------------------


def test_symmetric_pntk_matches_direct_kernel(p, reference):
    k = reference["tiled_symmetric"]
    assert isinstance(k, np.ndarray) and k.dtype == np.float32
    assert_close(k, reference["symmetric"])
    # Tiles below the diagonal are the mirror images of those above, bit for bit.
    assert np.array_equal(k[:8, 8:], k[8:, :8].T)


def test_x2_pntk_matches_direct_kernel(p, reference):
    k = kernel_matrix(p.pntk_fn, p.x1, p.x2, p.params, **COMMON)
    assert k.shape == (th.N1, th.N2)
    assert_close(k, reference["x2"])


@pytest.mark.parametrize("with_x2", [False, True], ids=["x2=None", "x2"])
def test_opaque_function_is_tiled_directly(p, reference, with_x2, monkeypatch):
    calls = []
    monkeypatch.setattr(compute, "run_direct", _spy(compute.run_direct, calls))
    x2 = p.x2 if with_x2 else None
    k = kernel_matrix(th.opaque(p.pntk_fn), p.x1, x2, p.params, **COMMON)
    assert len(calls) == 1
    assert_close(k, reference["x2" if with_x2 else "symmetric"])


def _spy(function, calls):
    def spy(*args, **kwargs):
        calls.append(args[1])  # the plan
        return function(*args, **kwargs)

    return spy


def test_nngp_and_nt_entk(p, monkeypatch):
    """An NNGP (no Jacobians: tiled directly), and NT's traced eNTK as `Trace()` (its Gram features reused),
    each equal to NT's own function."""
    routes = []
    monkeypatch.setattr(compute, "run_direct", _spy(compute.run_direct, routes))
    monkeypatch.setattr(compute, "run_features", _spy(compute.run_features, routes))
    nngp_fn = nt.empirical_nngp_fn(p.model.apply_fn)
    expected = jax.jit(nngp_fn)(p.x1, p.x2, p.params)
    assert_close(kernel_matrix(nngp_fn, p.x1, p.x2, p.params, **COMMON), expected)
    assert routes.pop().mode == "direct"
    trace_fn = Trace().kernel_fn(p.model.apply_fn, vmap_axes=0)
    expected = jax.jit(nt.empirical_ntk_fn(p.model.apply_fn, vmap_axes=0))(p.x1, None, p.params)
    assert_close(kernel_matrix(trace_fn, p.x1, None, p.params, **COMMON), expected)
    assert routes.pop().mode == "features"


@pytest.mark.slow
def test_budget_sets_tile_and_resident_rows(p, reference, monkeypatch):
    plans = []
    monkeypatch.setattr(compute, "run_features", _spy(compute.run_features, plans))
    # A small budget keeps a few row blocks of tile 8 at once; the tiles are the same bits.
    budget = th.row_reuse_budget()
    k = kernel_matrix(p.pntk_fn, p.x1, None, p.params, memory_budget=budget, **COMMON)
    assert 1 <= plans[-1].rows_resident < plans[-1].blocks1 == 5
    assert planning.MARGIN * plans[-1].estimate <= budget
    assert np.array_equal(k, reference["tiled_symmetric"])
    # A large one: every row block resident, each Jacobian computed once.
    kernel_matrix(p.pntk_fn, p.x1, None, p.params, memory_budget="64MiB", **COMMON)
    assert plans[-1].rows_resident == plans[-1].blocks1
    # No tile size: the cheapest tile that fits, here one tile of 37 within 64 MiB...
    k = kernel_matrix(p.pntk_fn, p.x1, None, p.params, memory_budget="64MiB", progress=False)
    assert plans[-1].tile == th.N1
    assert_close(k, reference["symmetric"])
    # ... and smaller tiles within a budget too small for it.
    k = kernel_matrix(p.pntk_fn, p.x1, None, p.params, memory_budget="100KiB", progress=False)
    assert plans[-1].tile < th.N1 and planning.MARGIN * plans[-1].estimate <= 100 * 1024
    assert_close(k, reference["symmetric"])


def test_parse_bytes():
    assert planning.parse_bytes("b", "2GiB") == 2 * 1024**3
    assert planning.parse_bytes("b", "1.5 MB") == 1_500_000
    assert planning.parse_bytes("b", 4096) == 4096
    assert planning.parse_bytes("b", np.int64(4096)) == 4096
    assert planning.parse_bytes("b", None) is None
    assert planning.parse_bytes("b", planning.format_bytes(123456789)) >= 123456789
    # float("1e400") is inf: int(inf) raised OverflowError.
    with pytest.raises(
        ValueError, match=r"^`b` must be a finite number of bytes; got '1e400GiB', which reads as"
    ):
        planning.parse_bytes("b", "1e400GiB")


# Outputs, resume, corruption --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_disk_outputs_equal_memory_and_rerun_recomputes_nothing(p, reference, tmp_path, suffix, count_tiles):
    out = tmp_path / f"k{suffix}"
    k = kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, **COMMON)
    assert isinstance(k, np.memmap) if suffix == ".npy" else isinstance(k, zarr.Array)
    assert np.array_equal(np.asarray(k[:]), reference["tiled_symmetric"])
    assert count_tiles["tiles"] == 15 == record_count(out)
    meta = json.loads((tmp_path / f"k{suffix}.tiles" / "meta.json").read_text())
    assert meta["tile_size"] == th.TILE and meta["mode"] == "features" and meta["shape"] == [37, 37]
    again = kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, **COMMON)
    assert count_tiles["tiles"] == 15  # verified, not recomputed
    assert np.array_equal(np.asarray(again[:]), reference["tiled_symmetric"])
    if suffix == ".npy":
        assert np.array_equal(np.load(out), reference["tiled_symmetric"])


def test_x2_to_zarr(p, reference, tmp_path):
    k = kernel_matrix(p.pntk_fn, p.x1, p.x2, p.params, output=tmp_path / "k.zarr", **COMMON)
    assert k.shape == (th.N1, th.N2) and k.chunks == (th.TILE, th.TILE)
    assert_close(k[:], reference["x2"])


@pytest.mark.slow  # a child process with its own JAX start-up
def test_resume_after_sigkill_is_bitwise_identical(p, reference, tmp_path, count_tiles):
    out = tmp_path / "k.npy"
    child = subprocess.Popen([sys.executable, HELPERS, "slow-run", str(out)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while record_count(out) < 2:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child recorded no tiles in 120 s"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    done_at_kill = record_count(out)
    assert 2 <= done_at_kill < 15  # killed mid-run
    k = kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, **COMMON)
    assert count_tiles["tiles"] == 15 - done_at_kill  # finished tiles were not recomputed
    assert np.array_equal(np.asarray(k), reference["tiled_symmetric"])


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_corrupted_tile_is_recomputed(p, reference, tmp_path, suffix, count_tiles):
    out = tmp_path / f"k{suffix}"
    kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, **COMMON)
    assert count_tiles["tiles"] == 15
    if suffix == ".npy":
        # Tile (1, 3) (rows 8-15, columns 24-31): garbage into its first row, and into the mirror
        # image (below the diagonal) of tile (0, 2).
        with open(out, "rb") as f:
            np.lib.format.read_magic(f)
            np.lib.format.read_array_header_1_0(f)
            data = f.tell()
        with open(out, "r+b") as f:
            for row, col in ((8, 24), (17, 3)):
                f.seek(data + (row * 37 + col) * 4)
                f.write(b"\x7f" * 12)
        recomputed = 2
    else:
        chunk = out / "c" / "1" / "3"  # Zarr v3's chunk key; v2 names it "1.3"
        chunk = chunk if chunk.exists() else out / "1.3"
        assert chunk.is_file()
        chunk.write_bytes(b"not a chunk")
        recomputed = 1
    k = kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, **COMMON)
    assert count_tiles["tiles"] == 15 + recomputed
    assert np.array_equal(np.asarray(k[:]), reference["tiled_symmetric"])


# Devices and processes ----------------------------------------------------------------------------


@pytest.mark.slow  # a child process with its own JAX start-up
def test_four_devices_equal_one(tmp_path):
    result = tmp_path / "four.npz"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, HELPERS, "devices", str(result)], env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    four = np.load(result)
    assert int(four["device_count"]) == 4
    one = th.device_results()
    for name, k in one.items():
        assert np.array_equal(four[name], k), name


@pytest.mark.slow  # two child processes with their own JAX start-up
def test_two_processes_share_one_output(p, reference, tmp_path):
    """jax.distributed with 2 processes of 2 CPU devices each, writing one Zarr array."""
    out = tmp_path / "k.zarr"
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [
        subprocess.Popen(
            [sys.executable, HELPERS, "process", str(i), "2", str(port), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr.decode()[-3000:]
        assert "of 2: 2 devices, (37, 37)" in stdout.decode() and "features (37, 256)" in stdout.decode()
    assert record_count(out) == 15
    phi = nt_pntk.feature_matrix(th.sketch_fn(), p.x1, p.params, progress=False)
    assert np.array_equal(zarr.open_array(str(out) + ".phi.zarr", mode="r")[:], phi)
    assert np.array_equal(zarr.open_array(str(out), mode="r")[:], reference["tiled_symmetric"])


# Progress -----------------------------------------------------------------------------------------


def test_progress_bar(p, capsys):
    kernel_matrix(p.pntk_fn, p.x1, p.x2, p.params, tile_size=th.TILE, progress=True)
    err = capsys.readouterr().err
    assert "kernel_matrix" in err and "15/15" in err and "tile/s" in err
    kernel_matrix(p.pntk_fn, p.x1, p.x2, p.params, tile_size=th.TILE, progress=False)
    assert capsys.readouterr().err == ""


# Bad input ----------------------------------------------------------------------------------------


def test_output_of_other_inputs_is_not_overwritten(p, tmp_path):
    out = tmp_path / "k.npy"
    kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, **COMMON)
    before = out.read_bytes()
    with pytest.raises(ValueError, match=r"x1 differs .*Nothing was overwritten"):
        kernel_matrix(p.pntk_fn, p.x1 + 1, None, p.params, output=out, **COMMON)
    with pytest.raises(ValueError, match=r"holds a \(37, 37\) float32 kernel, these inputs give \(36, 36\)"):
        kernel_matrix(p.pntk_fn, p.x1[:36], None, p.params, output=out, **COMMON)
    with pytest.raises(ValueError, match=r"it was computed with x2=None"):
        kernel_matrix(p.pntk_fn, p.x1, p.x1, p.params, output=out, **COMMON)
    with pytest.raises(ValueError, match=r"params differs"):
        params = [tuple(a * 2 for a in layer) for layer in p.params]
        kernel_matrix(p.pntk_fn, p.x1, None, params, output=out, **COMMON)
    with pytest.raises(ValueError, match=r"started with tile_size=8, not 16"):
        kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, tile_size=16, progress=False)
    assert out.read_bytes() == before


def test_foreign_file_is_not_overwritten(p, tmp_path):
    out = tmp_path / "k.npy"
    np.save(out, np.zeros((37, 37), np.float32))
    before = out.read_bytes()
    with pytest.raises(ValueError, match=r"not written by kernel_matrix .*nothing was overwritten"):
        kernel_matrix(p.pntk_fn, p.x1, None, p.params, output=out, **COMMON)
    assert out.read_bytes() == before


@pytest.mark.slow  # compiles and measures the programs of several tile sizes
def test_budget_below_one_row_names_the_minimum(p):
    with pytest.raises(ValueError, match=r"below the minimum of .* one row of the smallest tile") as info:
        kernel_matrix(p.pntk_fn, p.x1[:10], None, p.params, memory_budget=1000, progress=False)
    minimum = re.search(r"Pass memory_budget='([^']+)'", str(info.value)).group(1)
    # The minimum it names is enough (tile 1, two resident rows).
    k = kernel_matrix(p.pntk_fn, p.x1[:10], None, p.params, memory_budget=minimum, progress=False)
    assert_close(k, jax.jit(p.pntk_fn)(p.x1[:10], None, p.params))
    with pytest.raises(ValueError, match=r"below the minimum .* a tile of tile_size=8"):
        kernel_matrix(th.opaque(p.pntk_fn), p.x1, None, p.params, memory_budget="4KiB", **COMMON)


def test_non_finite_inputs_name_the_first_bad_row(p):
    x1 = p.x1.copy()
    x1[5, 2, 3, 0] = np.nan
    x1[9, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"`x1` has a non-finite value .* in row 5 .*2 of 37 rows"):
        kernel_matrix(p.pntk_fn, x1, None, p.params, **COMMON)
    x2 = p.x2.copy()
    x2[2, 0, 0, 0] = -np.inf
    with pytest.raises(ValueError, match=r"`x2` has a non-finite value .* in row 2 "):
        kernel_matrix(p.pntk_fn, p.x1, x2, p.params, **COMMON)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(output="k.txt"), ValueError, r"`output` must end in \.npy .* or \.zarr .*; got 'k\.txt'"),
        (dict(output=3), TypeError, r"`output` must be None \(in memory\) or a path ending in .*; got 3\."),
        (dict(memory_budget="lots"), ValueError, r"`memory_budget` must be .* such as '2GiB'.*; got 'lots'"),
        (
            dict(memory_budget=2.5e9),
            TypeError,
            r"`memory_budget` must be an int .*; got 2500000000\.0 of type float\.",
        ),
        (dict(memory_budget=0), ValueError, r"`memory_budget` must be a positive number of bytes; got 0\."),
        (
            dict(memory_budget=[1]),
            TypeError,
            r"`memory_budget` must be an int number of bytes or a string .*; got \[1\] of type list\.",
        ),
        (dict(tile_size=0), ValueError, r"`tile_size` must be an int >= 1; got tile_size=0\."),
        (dict(tile_size=8.0), TypeError, r"`tile_size` must be an int; got 8\.0 of type float\."),
    ],
)
def test_bad_arguments(p, kwargs, error, match):
    with pytest.raises(error, match=match):
        kernel_matrix(p.pntk_fn, p.x1, None, p.params, **{"progress": False, **kwargs})


def test_kernel_that_is_not_two_dimensional(p):
    full = nt.empirical_ntk_fn(p.model.apply_fn, trace_axes=(), vmap_axes=0)  # (n1, n2, 3, 3)
    with pytest.raises(ValueError, match=r"must return an \(n1, n2\) array.* \(2, 3, 3, 3\)"):
        kernel_matrix(full, p.x1, None, p.params, **COMMON)


def test_mismatched_x2(p):
    with pytest.raises(ValueError, match=r"must agree in every axis but the batch axis"):
        kernel_matrix(p.pntk_fn, p.x1, p.x2[:, :4], p.params, **COMMON)


# The command --------------------------------------------------------------------------------------


@pytest.mark.slow  # the command end to end: digits, model, tiles on disk, twice
def test_kernel_command(p, tmp_path, capsys):
    from nt_pntk.cli import kernel as _kernel_cmd

    out = tmp_path / "k.npy"
    argv = ["kernel", "--model", "fc", "--width", "16", "--depth", "1", "--outputs", "3", "--n", "30"]
    argv += ["--output", str(out), "--tile-size", "8", "--no-progress", "--seed", "1"]
    assert cli.main(argv) == 0
    assert "(30, 30) float32 kernel" in capsys.readouterr().out
    x = _kernel_cmd.digits(30, seed=1)
    _, params = p.model.init_fn(jax.random.PRNGKey(1), (-1, 8, 8, 1))
    assert_close(np.load(out), jax.jit(p.pntk_fn)(x, None, params))
    # Run again: resumed (here: already finished), same file.
    assert cli.main(argv) == 0
    # A .npy input, and an output that holds something else: exit code 2 and a message.
    np.save(tmp_path / "x.npy", p.x1)
    argv_input = [*argv[:9], "--input", str(tmp_path / "x.npy"), *argv[11:]]
    assert cli.main(argv_input) == 2
    assert "holds another kernel" in capsys.readouterr().err


def test_digits_augmented_beyond_1797():
    from nt_pntk.cli import kernel as _kernel_cmd
    from nt_pntk.experiments.data import load_digits_images

    x = _kernel_cmd.digits(4000, seed=0)
    images, _ = load_digits_images()
    assert x.shape == (4000, 8, 8, 1) and x.dtype == np.float32 and np.all(np.isfinite(x))
    assert np.array_equal(x[:1797], images)
    assert not np.any(np.all(x[1797:3594] == images, axis=(1, 2, 3)))  # no exact copies
    assert len(np.unique(x.reshape(4000, -1), axis=0)) == 4000
