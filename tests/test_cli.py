"""The `nt-pntk` command's error handling: one line on stderr and a documented exit code, not a traceback.

Most tests call `cli.main` in-process; two run the installed console script.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest

from nt_pntk import cli

CONSOLE_SCRIPT = Path(sys.executable).with_name("nt-pntk")
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

    def full_disk(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "figure1.csv"))

    monkeypatch.setattr(figure1, "measure", full_disk)
    assert cli.main(["figure1", "--out", str(tmp_path)]) == 1
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
    monkeypatch.delitem(sys.modules, "user_nets", raising=False)
    return "user_nets"


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


def test_kernel_disk_full_names_the_output(tmp_path, capsys, monkeypatch):
    from nt_pntk import tiled

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a failed write raises it: no path

    monkeypatch.setattr(tiled, "kernel_matrix", full_disk)
    assert cli.main(kernel_args(tmp_path, "--n", "4")) == 1
    err = error_line(capsys)
    assert f"error: {tmp_path / 'k.npy'}: {os.strerror(errno.ENOSPC)}" in err


def test_kernel_ctrl_c(tmp_path, capsys, monkeypatch):
    from nt_pntk import tiled

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tiled, "kernel_matrix", interrupted)
    assert cli.main(kernel_args(tmp_path, "--n", "4")) == 130
    assert capsys.readouterr().err == f"nt-pntk kernel: {INTERRUPTED_LINE}\n"


# --- The installed console script. ---


def test_console_script_usage_error(tmp_path):
    missing = tmp_path / "nothere.npy"
    argv = [str(CONSOLE_SCRIPT), *kernel_args(tmp_path, "--input", str(missing))]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
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
    # with `cmd &`): the child gets the default disposition back, as in a terminal.
    def interruptible() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    # `with` closes the pipes whatever happens (an early failure must not leak them).
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible
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
