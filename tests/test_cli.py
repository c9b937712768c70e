"""The `nt-pntk` command: error handling (one line on stderr and a documented exit code, not a
traceback), start-up without JAX where none is needed, `--version`, the deprecated option names,
and `nt-pntk kernel`'s values.

Most tests call `cli.main` in-process; some run a fresh interpreter or the installed console script.
"""

from __future__ import annotations

import errno
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from reference import entk_from_jacobians, kernel_from_entk

import nt_pntk
from nt_pntk import cli

CONSOLE_SCRIPT = Path(sys.executable).with_name("nt-pntk")
# The fresh interpreters import this checkout's nt_pntk, whatever the environment has installed.
CHECKOUT = str(Path(nt_pntk.__file__).resolve().parents[1])
CHECKOUT_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [CHECKOUT, os.environ.get("PYTHONPATH")])),
}
INTERRUPTED_LINE = "interrupted; finished work is kept on disk, run the same command again to resume"


def error_line(capsys, command: str = "kernel") -> str:
    """The command's stderr, which must be exactly one `nt-pntk <command>: ...` line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"nt-pntk {command}: "), err
    return err


# --- The wrapper, with a stand-in subcommand whose run raises what a test gives it. ---


class ConfigError(ValueError):
    """Like validate's configuration errors: a ValueError carrying its exit code."""

    exit_code = 2


@pytest.fixture
def raising_command(monkeypatch):
    """Registers subcommand `fake` and returns a function setting the exception its run raises."""
    module = types.ModuleType("fake_subcommand")
    module.add_arguments = lambda parser: parser.add_argument("--flag", default=None)

    def run(args):
        raise module.error

    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", (module.__name__, "raises on purpose"))
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)

    def set_error(error: BaseException) -> None:
        module.error = error

    return set_error


@pytest.mark.parametrize(
    ("error", "code", "facts"),
    [
        (cli.UsageError("--flag must be positive; got -1"), 2, ["error: --flag must be positive; got -1"]),
        (ConfigError("sweep[0].widths must increase"), 2, ["error: sweep[0].widths must increase"]),
        (ValueError("the sweep diverged"), 1, ["error: the sweep diverged"]),
        (
            OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/k.npy"),
            1,
            ["error: /data/k.npy: ", os.strerror(errno.ENOSPC)],
        ),
        (
            PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/root/out.csv"),
            1,
            ["error: /root/out.csv: ", os.strerror(errno.EACCES)],
        ),
        (FileNotFoundError("no asv results directory /x"), 1, ["error: no asv results directory /x"]),
        (ValueError("first line\n  second line\n"), 1, ["error: first line second line"]),
    ],
    ids=[
        "usage",
        "exit_code-attribute",
        "failure",
        "disk-full",
        "permission",
        "oserror-message",
        "multiline",
    ],
)
def test_expected_errors_are_one_line_and_an_exit_code(raising_command, capsys, error, code, facts):
    raising_command(error)
    assert cli.main(["fake"]) == code
    err = error_line(capsys, "fake")
    for fact in facts:
        assert fact in err
    assert "Traceback" not in err


def test_usage_error_is_a_value_error_with_exit_code_2():
    assert issubclass(cli.UsageError, ValueError)
    assert cli.UsageError.exit_code == 2


def test_ctrl_c_is_one_line_and_exit_130(raising_command, capsys):
    raising_command(KeyboardInterrupt())
    assert cli.main(["fake", "--flag", "1"]) == 130
    assert capsys.readouterr().err == f"nt-pntk fake: {INTERRUPTED_LINE}\n"


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), KeyError("w"), RuntimeError("boom")])
def test_bugs_keep_their_traceback(raising_command, bug):
    raising_command(bug)
    with pytest.raises(type(bug)):
        cli.main(["fake"])


def test_traceback_env_var_shows_the_traceback_too(raising_command, monkeypatch, capsys):
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    raising_command(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/k.npy"))
    assert cli.main(["fake"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in run" in err  # the frame that raised
    assert err.splitlines()[-1] == f"nt-pntk fake: error: /data/k.npy: {os.strerror(errno.ENOSPC)}"


@pytest.mark.parametrize("argv", [["--help"], ["kernel", "--help"]])
def test_help_documents_exit_codes_and_the_traceback_switch(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.main(argv)
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    assert "NT_PNTK_TRACEBACK=1" in out
    assert "exits with 2" in out and "exits with 1" in out and "130" in out


def test_figure1_goes_through_the_wrapper(monkeypatch, tmp_path, capsys):
    from nt_pntk._src.experiments import figure1

    def full_disk(**options):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "figure1.csv"))

    monkeypatch.setattr(figure1, "measure", full_disk)
    assert cli.main(["figure1", "--output", str(tmp_path)]) == 1
    assert f"{tmp_path / 'figure1.csv'}: {os.strerror(errno.ENOSPC)}" in error_line(capsys, "figure1")


# --- `nt-pntk kernel`: bad arguments are found before any work, with the path or name in the message. ---


def kernel_args(tmp_path: Path, *options: str) -> list[str]:
    return [
        "kernel",
        "--width",
        "8",
        "--depth",
        "1",
        "--no-progress",
        "--output",
        str(tmp_path / "k.npy"),
        *options,
    ]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Module `user_nets` (on sys.path) with a conv net, a function needing arguments, a non-network."""
    (tmp_path / "user_nets.py").write_text(
        textwrap.dedent(
            """
            from neural_tangents import stax

            def conv():
                return stax.serial(stax.Conv(4, (3, 3)), stax.Flatten(), stax.Dense(2))

            def needs_width(width):
                return stax.serial(stax.Dense(width))

            def not_a_network():
                return 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_nets", None)  # another test's module of that name
    yield "user_nets"
    sys.modules.pop("user_nets", None)


def test_kernel_missing_input(tmp_path, capsys):
    missing = tmp_path / "nothere.npy"
    assert cli.main(kernel_args(tmp_path, "--input", str(missing))) == 2
    assert f"--input {missing} does not exist" in error_line(capsys)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"1,2,3\n4,5,6\n", "is not a .npy file (it lacks NumPy's header)"),
        ("truncated", "is not a readable .npy array: "),
        ("object", "is not a readable .npy array: "),
        ("strings", "holds a <U3 array of shape (2,)"),
    ],
)
def test_kernel_unreadable_input(tmp_path, capsys, content, message):
    path = tmp_path / "x.npy"
    if content == "truncated":
        np.save(path, np.zeros((5, 64), np.float32))
        path.write_bytes(path.read_bytes()[:150])
    elif content == "object":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content == "strings":
        np.save(path, np.array(["abc", "def"]))
    else:
        path.write_bytes(content)
    assert cli.main(kernel_args(tmp_path, "--input", str(path))) == 2
    err = error_line(capsys)
    assert f"--input {path} {message}" in err
    assert "numpy.save" in err


def test_kernel_cnn_on_flat_inputs(tmp_path, capsys):
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((5, 64), np.float32))
    assert cli.main(kernel_args(tmp_path, "--model", "cnn", "--input", str(flat))) == 2
    err = error_line(capsys)
    assert "--model cnn needs images of shape (N, height, width, channels)" in err
    assert "the inputs have shape (5, 64)" in err
    assert not (tmp_path / "k.npy").exists()


def test_kernel_user_network_that_cannot_take_the_inputs(tmp_path, capsys, user_module):
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((5, 64), np.float32))
    assert cli.main(kernel_args(tmp_path, "--function", f"{user_module}:conv", "--input", str(flat))) == 2
    err = error_line(capsys)
    assert f"{user_module}:conv cannot take inputs of shape (64,)" in err
    assert "IndexError" in err


@pytest.mark.parametrize(
    ("function", "facts"),
    [
        ("nosuchmod:f", ["cannot import module 'nosuchmod' named in --function 'nosuchmod:f'"]),
        (
            "json:nosuchattr",
            ["module 'json' (", "has no attribute 'nosuchattr'", "--function 'json:nosuchattr'"],
        ),
        ("USER:needs_width", ["must name a function of no arguments", "'width'"]),
        ("USER:not_a_network", ["USER:not_a_network() must return (init_fn, apply_fn); got int"]),
        ("no_colon", ["--function must be MODULE:FUNCTION", "'no_colon'"]),
    ],
)
def test_kernel_bad_function(tmp_path, capsys, user_module, function, facts):
    function = function.replace("USER", user_module)
    assert cli.main(kernel_args(tmp_path, "--function", function)) == 2
    err = error_line(capsys)
    for fact in facts:
        assert fact.replace("USER", user_module) in err


def test_kernel_output_in_a_missing_folder(tmp_path, capsys):
    output = tmp_path / "no" / "such" / "k.npy"
    argv = [*kernel_args(tmp_path), "--output", str(output)]  # the last --output wins
    assert cli.main(argv) == 2
    assert f"--output {output}: its folder {output.parent} does not exist" in error_line(capsys)


def test_kernel_output_in_a_read_only_folder(tmp_path, capsys, monkeypatch):
    # chmod cannot take write permission from root (as in CI containers), so os.access says it.
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != read_only and real_access(p, mode))
    output = read_only / "k.npy"
    assert cli.main([*kernel_args(tmp_path), "--output", str(output)]) == 2
    assert f"--output {output}: its folder {read_only} is not writable" in error_line(capsys)


def tiny_inputs(tmp_path: Path, n: int = 4) -> str:
    """A .npy of `n` flat inputs (the FC flattens them), so that no test loads the digits."""
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(n, 5)).astype(np.float32))
    return str(path)


def test_kernel_disk_full_names_the_output(tmp_path, capsys, monkeypatch):
    from nt_pntk import tiled

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a failed write raises it: no path

    monkeypatch.setattr(tiled, "kernel_matrix", full_disk)
    assert cli.main(kernel_args(tmp_path, "--input", tiny_inputs(tmp_path))) == 1
    err = error_line(capsys)
    assert f"error: {tmp_path / 'k.npy'}: {os.strerror(errno.ENOSPC)}" in err


def test_kernel_ctrl_c(tmp_path, capsys, monkeypatch):
    from nt_pntk import tiled

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tiled, "kernel_matrix", interrupted)
    assert cli.main(kernel_args(tmp_path, "--input", tiny_inputs(tmp_path))) == 130
    assert capsys.readouterr().err == f"nt-pntk kernel: {INTERRUPTED_LINE}\n"


# --- The installed console script. ---


def test_console_script_usage_error(tmp_path):
    missing = tmp_path / "nothere.npy"
    argv = [str(CONSOLE_SCRIPT), *kernel_args(tmp_path, "--input", str(missing))]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=CHECKOUT_ENV)
    assert proc.returncode == 2
    assert proc.stderr == f"nt-pntk kernel: error: --input {missing} does not exist; " + (
        "pass a .npy file of examples along axis 0 (numpy.save)\n"
    )


@pytest.mark.slow
def test_console_script_sigint_on_a_long_job(tmp_path):
    """A real Ctrl-C during the computation: one line, exit 130, and the finished tiles kept."""
    output = tmp_path / "k.npy"
    argv = [str(CONSOLE_SCRIPT), "kernel", "--width", "64", "--n", "6000", "--tile-size", "256"]
    argv += ["--no-progress", "--output", str(output)]

    # A shell runs background jobs with SIGINT ignored, and a child inherits that (pytest started
    # with `cmd &`): a small launcher restores the default disposition, as in a terminal, and execs
    # the command. Not `preexec_fn`: it forces a fork of this multithreaded (JAX) process.
    launcher = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    # `with` closes the pipes whatever happens (an early failure must not leak them).
    with subprocess.Popen(
        [sys.executable, "-c", launcher, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CHECKOUT_ENV,
    ) as child:
        try:
            assert child.stdout.readline().startswith("pntk of fc"), child.stderr.read()
            done = Path(f"{output}.tiles") / "done"  # one marker per finished tile
            deadline = time.monotonic() + 240
            while not any(done.glob("*.json")) and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.1)
            assert child.poll() is None, "the job finished before it could be interrupted"
            child.send_signal(signal.SIGINT)
            _, err = child.communicate(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == 130
    assert err == f"nt-pntk kernel: {INTERRUPTED_LINE}\n"
    assert any(done.glob("*.json"))


# --- Start-up: what needs no JAX imports none (JAX, NT and SciPy take seconds to import). ---

HEAVY_MODULES = ("jax", "jaxlib", "neural_tangents", "scipy")


def run_fresh(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter; it must print what the test checks."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=CHECKOUT_ENV
    )


def imports_after(argv: list[str]) -> str:
    """Code that runs `nt-pntk ARGV` and then prints the heavy modules it imported."""
    return textwrap.dedent(
        f"""
        import sys
        from nt_pntk.cli import main
        try:
            code = main({argv!r})
        except SystemExit as e:
            code = e.code
        heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY_MODULES)!r})
        print("EXIT", code, "HEAVY", ",".join(heavy), file=sys.stderr)
        """
    )


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], *([command, "--help"] for command in cli.SUBCOMMANDS)],
    ids=lambda argv: " ".join(argv),
)
def test_help_and_version_import_no_jax(argv):
    proc = run_fresh(imports_after(argv))
    assert proc.stderr.splitlines()[-1] == "EXIT 0 HEAVY ", proc.stderr


def test_version_names_the_package_and_its_dependencies():
    from nt_pntk._version import __version__

    proc = subprocess.run(
        [sys.executable, "-m", "nt_pntk.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env=CHECKOUT_ENV,
    )
    assert proc.returncode == 0, proc.stderr
    expected = [f"nt-pntk {__version__}"]
    expected.append(
        ", ".join(
            f"{name} {importlib.metadata.version(name)}" for name in ("jax", "jaxlib", "neural-tangents")
        )
    )
    assert proc.stdout.splitlines() == expected
    assert jax.__version__ in expected[1]  # the metadata read is the module in use


def test_version_of_a_missing_distribution(monkeypatch, capsys):
    real_version = importlib.metadata.version

    def without_jaxlib(name):
        if name == "jaxlib":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", without_jaxlib)
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert "jaxlib not installed" in capsys.readouterr().out


# --- One vocabulary: the former option names still work, warn once and are hidden from --help. ---


# (command, old argv, new argv, the parsed attribute, its value)
RENAMED_OPTIONS = [
    ("validate", ["--out", "runs/x"], ["--output", "runs/x"], "output", "runs/x"),
    ("figure1", ["--out", "figs"], ["--output", "figs"], "output", Path("figs")),
    ("figure1", ["--outs", "3", "4"], ["--outputs", "3", "4"], "outputs", [3, 4]),
    ("demo", ["--out", "d.csv"], ["--csv", "d.csv"], "csv", Path("d.csv")),
    ("demo", ["--outs", "5"], ["--outputs", "5"], "outputs", [5]),
    ("compare", ["--out", "7"], ["--outputs", "7"], "outputs", 7),
    ("kernel", ["--out-dim", "7"], ["--outputs", "7"], "outputs", 7),
    ("kernel", ["--kernel", "ntk"], ["--kernel", "trace"], "kernel", "trace"),
]


@pytest.mark.parametrize(
    ("command", "old", "new", "value", "expected"),
    RENAMED_OPTIONS,
    ids=[f"{command} {' '.join(old)}" for command, old, *_ in RENAMED_OPTIONS],
)
def test_deprecated_option_names(capsys, command, old, new, value, expected):
    required = ["--output", "k.npy"] if command == "kernel" and new[0] != "--output" else []
    parse = cli.build_parser(command).parse_args
    args = parse([command, *required, *old])
    assert getattr(args, value) == expected
    option = " ".join(old) if old[0] == "--kernel" else old[0]
    fix = " ".join(new) if new[0] == "--kernel" else new[0]
    assert capsys.readouterr().err == (f"nt-pntk {command}: warning: {option} is deprecated; use {fix}\n")
    assert getattr(parse([command, *required, *new]), value) == expected  # the new name: silent
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):
        parse([command, "--help"])
    shown = capsys.readouterr().out
    assert new[0] in shown
    hidden = old[1] if old[0] == "--kernel" else old[0]  # `ntk` is no listed choice either
    assert not re.search(rf"(?<![\w-]){re.escape(hidden)}(?![\w-])", shown), shown


def test_deprecated_alias_keeps_the_default_when_unused():
    args = cli.build_parser("demo").parse_args(["demo"])
    assert args.outputs == [10, 100] and args.csv is None


@pytest.mark.parametrize("argv", [["compare", "--output", "5"], ["demo", "--output", "x"]])
def test_option_names_are_never_abbreviated(argv, capsys):
    """`--output` (a path) must not be read as a prefix of `--outputs` (O)."""
    with pytest.raises(SystemExit) as exited:
        cli.build_parser(argv[0]).parse_args(argv)
    assert exited.value.code == 2
    assert "unrecognized arguments: --output" in capsys.readouterr().err


def test_deprecated_python_m_figure1_still_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "nt_pntk.figure1", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=CHECKOUT_ENV,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: nt-pntk figure1") and "--output" in proc.stdout
    assert proc.stderr == (
        "nt-pntk figure1: warning: python -m nt_pntk.figure1 is deprecated; use nt-pntk figure1\n"
    )


# --- `nt-pntk kernel`: the values it writes, against per-example Jacobians in float64. ---


def _reference_kernels(x: np.ndarray, outputs: int, width: int = 8) -> dict[str, np.ndarray]:
    """The pNTK and NT's trace kernel of the command's FC (depth 1, seed 0) from `jax.jacrev`."""
    from jax.flatten_util import ravel_pytree

    from nt_pntk.experiments import models

    model = models.get_model("fc", width=width, outputs=outputs, depth=1)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, *x.shape[1:]))  # float32, as the command's
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        flat, unravel = ravel_pytree(jax.tree.map(lambda a: np.asarray(a, np.float64), params))
        jacobians = jax.vmap(
            jax.jacrev(lambda p, xi: model.apply_fn(unravel(p), xi[None])[0]), in_axes=(None, 0)
        )(flat, np.asarray(x, np.float64))
        j = np.asarray(jacobians)  # (N, O, P)
    finally:
        jax.config.update("jax_enable_x64", previous)
    summed = j.sum(axis=1) / np.sqrt(outputs)  # the gradient of Σ_o f_o / √O
    return {
        "pntk": summed @ summed.T,
        "trace": kernel_from_entk(entk_from_jacobians(j), "trace"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["pntk", pytest.param("trace", marks=pytest.mark.slow)])
def test_kernel_command_writes_the_kernel(tmp_path, capsys, kernel):
    x = tiny_inputs(tmp_path, n=6)
    output = tmp_path / f"{kernel}.npy"
    argv = ["kernel", "--width", "8", "--depth", "1", "--outputs", "3", "--kernel", kernel]
    assert cli.main([*argv, "--input", x, "--no-progress", "--output", str(output)]) == 0
    assert capsys.readouterr().out.startswith(f"{kernel} of fc (width 8, depth 1, 3 outputs) on 6 inputs")
    value = np.load(output)
    references = _reference_kernels(np.load(x), 3)
    expected = references[kernel]
    assert value.shape == (6, 6) and value.dtype == np.float32
    np.testing.assert_allclose(value, expected, rtol=0, atol=3e-5 * np.abs(expected).max())
    other = references["trace" if kernel == "pntk" else "pntk"]
    assert np.abs(value - other).max() > 1e-3 * np.abs(other).max()  # the two kernels differ here


@pytest.mark.parametrize(
    ("implementation", "route"), [("3", "structured"), ("1", "rows"), ("2", "direct(2)")]
)
def test_kernel_plan_prints_the_route_and_writes_nothing(tmp_path, capsys, implementation, route):
    x = tiny_inputs(tmp_path, n=40)
    argv = ["kernel", "--width", "64", "--depth", "2", "--input", x, "--implementation", implementation]
    before = sorted(tmp_path.iterdir())
    assert cli.main([*argv, "--plan"]) == 0
    out = capsys.readouterr().out
    assert f"route: {route} (implementation=" in out
    assert "kernel 40×40" in out and "per device" in out
    assert sorted(tmp_path.iterdir()) == before


def test_kernel_auto_plan_compares_the_feature_routes(tmp_path, capsys):
    x = tiny_inputs(tmp_path, n=40)
    assert cli.main(["kernel", "--width", "64", "--depth", "2", "--input", x, "--plan"]) == 0
    out = capsys.readouterr().out
    assert "(AUTO: the cheapest by XLA's cost analysis)" in out
    assert re.search(r"\* structured +[0-9.e+-]+ s \(features", out)  # 64-wide layers: factors win
    assert re.search(r"\n +rows +[0-9.e+-]+ s \(features", out)


def test_kernel_plan_shows_the_sketched_alternative(tmp_path, capsys):
    x = tiny_inputs(tmp_path, n=40)
    assert cli.main(["kernel", "--width", "64", "--depth", "2", "--input", x, "--plan"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"sketched alternative \(--sketch 4096: .*\): estimated [0-9.e+-]+ s \(features", out)


def test_kernel_sketch_writes_the_features_and_their_gram(tmp_path, capsys):
    """--sketch K --features PHI: Φ (N, K) on disk, the kernel ΦΦᵀ, the exact pNTK within K^-1/2; resumes."""
    x = tiny_inputs(tmp_path, n=6)
    phi_path, output = tmp_path / "phi.npy", tmp_path / "k.zarr"
    argv = ["kernel", "--width", "32", "--depth", "1", "--outputs", "3", "--input", x, "--no-progress"]
    argv += ["--sketch", "4096", "--features", str(phi_path), "--output", str(output)]
    for _ in range(2):  # the second run finds both finished
        assert cli.main(argv) == 0
        assert "(6, 4096) float32 features in" in capsys.readouterr().out
    phi = np.load(phi_path).astype(np.float64)
    import zarr

    k = zarr.open_array(str(output), mode="r")[:]
    np.testing.assert_allclose(k, phi @ phi.T, rtol=1e-5, atol=1e-5 * np.abs(k).max())
    exact = _reference_kernels(np.load(x), 3, width=32)["pntk"]
    assert np.linalg.norm(k - exact) / np.linalg.norm(exact) < 0.1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--features", "phi.npy"], "--features needs --sketch K"),
        (["--sketch", "0"], "`--sketch` must be an int >= 1; got --sketch=0"),
        (["--sketch", "8", "--features", "phi.txt"], "--features must end in .npy or .zarr"),
    ],
)
def test_kernel_sketch_options_are_checked(tmp_path, capsys, options, message):
    assert cli.main(kernel_args(tmp_path, "--input", tiny_inputs(tmp_path), *options)) == 2
    assert message in error_line(capsys)


def test_kernel_without_output_or_plan(tmp_path, capsys):
    x = tiny_inputs(tmp_path, n=4)
    assert cli.main(["kernel", "--input", x]) == 2
    assert "--output is required" in error_line(capsys)


# --- The library's checks speak for every option; user code failing is one line (exit 1). ---


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # It used to compute the depth-0 network (no hidden layer) with exit code 0.
        (["--depth", "-1"], "`depth` must be an int in [1, 1,000] (hidden layers); got depth=-1."),
        (["--depth", "100000"], "`depth` must be an int in [1, 1,000] (hidden layers); got depth=100000."),
        (
            ["--width", "0"],
            "`width` must be an int in [1, 2,147,483,647] (hidden units or channels); got width=0.",
        ),
        (
            ["--outputs", "0"],
            "`outputs` must be an int in [1, 2,147,483,647] (the network's outputs O); got outputs=0.",
        ),
        (["--memory-budget", "1e400GiB"], "`memory_budget` must be a finite number of bytes; got '1e400GiB'"),
        (["--model", "mlp"], "`--model` must be one of ['cnn', 'fc', 'resnet', 'wide_resnet']; got 'mlp'"),
    ],
)
def test_kernel_sizes_are_checked_by_the_library(tmp_path, capsys, options, message):
    assert cli.main(kernel_args(tmp_path, "--input", tiny_inputs(tmp_path), *options)) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "k.npy").exists()


def test_kernel_parameters_that_cannot_fit_are_refused_before_init(tmp_path, capsys, monkeypatch):
    from nt_pntk._src.tiled import planning

    monkeypatch.setattr(planning, "free_bytes", lambda device: 2**30)  # 1 GiB free, whatever the machine
    argv = kernel_args(tmp_path, "--input", tiny_inputs(tmp_path), "--width", str(10**8))
    assert cli.main(argv) == 2
    # depth 1: 5·10^8 + 10^8 + 10·10^8 + 10 float32 parameters.
    assert (
        "the parameters of fc (width 100000000, depth 1, 10 outputs) need 6GiB, more than the 1GiB of memory "
        "free on cpu; use a smaller --width, --depth or --outputs" in error_line(capsys)
    )


SEED_MESSAGE = (
    "error: `--seed` must be an int in [0, 2**32) (a seed of JAX's and NumPy's random generators, "
    "which ignore higher bits or refuse negative seeds); got --seed={}."
)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70])
@pytest.mark.parametrize("command", ["kernel", "compare", "demo", "figure1"])
def test_one_seed_rule_in_every_subcommand(tmp_path, capsys, command, seed):
    # kernel exited 1 with NumPy's message for -1 and with an OverflowError for 2**70; demo accepted -1.
    argv = [command, "--seed", str(seed)]
    if command in ("kernel", "figure1"):
        argv += ["--output", str(tmp_path / ("k.npy" if command == "kernel" else "fig"))]
    assert cli.main(argv) == 2
    assert error_line(capsys, command) == f"nt-pntk {command}: {SEED_MESSAGE.format(seed)}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("source", "exception"),
    [
        ("raise RuntimeError('no GPU here')\n", "RuntimeError: no GPU here"),
        ("def build(:\n    pass\n", "SyntaxError: "),
        ("import a_dependency_that_is_not_installed\n", "ModuleNotFoundError: No module named 'a_dependency"),
    ],
)
def test_kernel_function_module_that_fails_on_import(tmp_path, monkeypatch, capsys, source, exception):
    (tmp_path / "failing_nets.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("failing_nets", None)
    assert cli.main(kernel_args(tmp_path, "--function", "failing_nets:build")) == 1  # their code failed
    err = error_line(capsys)
    assert (
        f"importing module 'failing_nets' named in --function 'failing_nets:build' failed with {exception}"
        in err
    )
    assert f"({tmp_path / 'failing_nets.py'}, line 1)" in err


USER_CODE = """
import jax.numpy as jnp
from neural_tangents import stax

def raises():
    raise RuntimeError("the builder broke")

def init_raises():
    def init_fn(key, shape):
        raise RuntimeError("init broke")
    return init_fn, lambda params, x: x

def without_parameters():
    return stax.serial(stax.Flatten(), stax.Relu())
"""


@pytest.mark.parametrize(
    ("function", "code", "facts"),
    [
        (
            "raises",
            1,
            ["--function user_code:raises: calling raises() failed with RuntimeError: the builder broke ("],
        ),
        ("init_raises", 1, ["the init_fn of user_code:init_raises failed with RuntimeError: init broke ("]),
        # It used to be NumPy's "at least one array or dtype is required".
        ("without_parameters", 2, ["`params` must hold at least one array; got [(), ()], which holds none"]),
    ],
)
def test_kernel_user_code_that_fails(tmp_path, monkeypatch, capsys, function, code, facts):
    (tmp_path / "user_code.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_code", None)
    argv = kernel_args(tmp_path, "--input", tiny_inputs(tmp_path), "--function", f"user_code:{function}")
    assert cli.main(argv) == code
    err = error_line(capsys)
    for fact in facts:
        assert fact in err
    assert not (tmp_path / "k.npy").exists()


def test_kernel_auto_prints_no_debug_lines(tmp_path, capfd):
    # NT's AUTO printed "impl=1, flops=8056.0" for each implementation it compared.
    argv = kernel_args(tmp_path, "--input", tiny_inputs(tmp_path), "--implementation", "0")
    assert cli.main(argv) == 0
    out, err = capfd.readouterr()
    assert "impl=" not in out + err and "flops" not in out + err
    assert out.splitlines()[-1].startswith("(4, 4) float32 kernel in ")
    k = np.load(tmp_path / "k.npy")
    assert k.shape == (4, 4) and np.all(np.isfinite(k))
