"""Loading a user's app: ``module:attribute`` names the Engine (or a factory of one)."""

from __future__ import annotations

import importlib
import os
import sys

from engine.engine import Engine
from engine.errors import JobchartsError


class AppNotLoaded(JobchartsError):
    """``--app`` names no importable Engine."""


def load_app(spec: str) -> Engine:
    """Import ``module:attribute`` (from the current directory too) and return the Engine."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise AppNotLoaded(f"cannot import {module_name!r}: {error}") from error
    except SyntaxError as error:
        where = f"{error.filename}:{error.lineno}"
        raise AppNotLoaded(f"cannot import {module_name!r}: {error.msg} at {where}") from error
    except Exception as error:  # the app's own code failed while importing
        raise AppNotLoaded(
            f"importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from error
    target = getattr(module, attr or "engine", None)
    if callable(target) and not isinstance(target, Engine):
        try:  # a factory function returning the engine
            target = target()
        except Exception as error:
            raise AppNotLoaded(
                f"{spec!r} is callable but calling it with no arguments failed: {error}"
            ) from error
    if not isinstance(target, Engine):
        raise AppNotLoaded(f"{spec!r} is not a jobcharts Engine (found {type(target).__name__})")
    return target
