"""The user's own code, named on the command line as ``MODULE:FUNCTION``: loading it, and its failures.

A failure of the user's code (importing their module raised, their builder or
``init_fn`` raised) is a `UserCodeError`: one line naming it and its exception,
exit code 1 (a failure, not a usage error). A ``MODULE:FUNCTION`` that names
nothing is a `checks.UsageError` (exit code 2).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

from nt_pntk._src.checks import UsageError


class UserCodeError(RuntimeError):
    """The user's own code (a module, a network builder, an ``init_fn``) raised: one line naming
    it and its exception, and exit code 1 (a failure, not a usage error)."""

    exit_code = 1


def user_code_error(what: str, error: BaseException) -> UserCodeError:
    """`UserCodeError` for `what` (e.g. "importing module 'nets'") having raised `error`.

    The line names the exception and where it was raised (the user's file and line).
    """
    where = ""
    if isinstance(error, SyntaxError) and error.filename:
        where = f" ({error.filename}, line {error.lineno})"
    elif error.__traceback__ is not None:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = f" ({frame.filename}, line {frame.lineno})"
    text = error.msg if isinstance(error, SyntaxError) else str(error)  # str() repeats the place
    message = text.strip().splitlines()[0] if text and text.strip() else ""
    return UserCodeError(f"{what} failed with {type(error).__name__}: {message}{where}")


def load_user_function(spec: str, option: str) -> Any:
    """The function named by ``MODULE:FUNCTION`` in `option` (the current folder is searched first).

    Raises:
      UsageError: `spec` is not MODULE:FUNCTION, the module is not found, or it has no such function.
      UserCodeError: importing the module raised (its code failed: a SyntaxError, an error it raised).
    """
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise UsageError(f"{option} must be MODULE:FUNCTION, e.g. mymodels:build; got {spec!r}")
    # The console script's sys.path lacks the current folder that `python -m` would have.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise UsageError(
                f"cannot import module {module_name!r} named in {option} {spec!r}: {e}; put it in the "
                "current folder or on PYTHONPATH"
            ) from e
        raise user_code_error(f"importing module {module_name!r} named in {option} {spec!r}", e) from e
    except Exception as e:  # the module's own code: a SyntaxError, an error raised at import
        raise user_code_error(f"importing module {module_name!r} named in {option} {spec!r}", e) from e
    function = getattr(module, function_name, None)
    if not callable(function):
        what = "has no attribute" if function is None else "has a non-callable"
        raise UsageError(
            f"module {module_name!r} ({getattr(module, '__file__', '?')}) {what} {function_name!r} named in "
            f"{option} {spec!r}"
        )
    return function
