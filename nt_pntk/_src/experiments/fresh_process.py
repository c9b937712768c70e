"""One measurement in a fresh Python process, so that its peak RSS is that measurement's alone.

``run("package.module:function", spec)`` starts ``python -m`` this module, which
calls ``function(spec)`` (`spec` and the result JSON-able) and writes the result
to a file; the parent reads it back. Used by ``compare --rss`` and ``demo``.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


class WorkerFailed(RuntimeError):
    """The fresh process exited with an error (or wrote no result): its exit code and last line."""

    def __init__(self, returncode: int, last_line: str):
        self.returncode, self.last_line = returncode, last_line
        super().__init__(f"exit {returncode}: {last_line}")


def run(function: str, spec: dict[str, Any], *, search_cwd: bool = False) -> dict[str, Any]:
    """``function(spec)`` (``"module:function"``) in a fresh interpreter; its JSON result.

    Args:
      function: the measurement, importable as ``module:function``.
      spec: its JSON-able argument.
      search_cwd: put this process's current folder first on the new process's ``sys.path`` (for
        a user's ``MODULE:FUNCTION`` found there).

    Raises:
      WorkerFailed: a nonzero exit (or no result written), with the last line of its stderr (or
        stdout), 200 characters at most.
    """
    with tempfile.TemporaryDirectory(prefix="nt-pntk-worker-") as tmp:
        result_path = Path(tmp) / "result.json"
        job = {"function": function, "spec": spec, "result_path": str(result_path)}
        if search_cwd:
            job["cwd"] = os.getcwd()
        command = [sys.executable, "-m", __name__, json.dumps(job)]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not result_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise WorkerFailed(proc.returncode, tail[0][:200])
        return json.loads(result_path.read_text())


def _main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    if "cwd" in job and job["cwd"] not in sys.path:
        sys.path.insert(0, job["cwd"])
    module, _, name = job["function"].partition(":")
    result = getattr(importlib.import_module(module), name)(job["spec"])
    Path(job["result_path"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
