"""Plain config values (YAML data) against Python type hints: does it fit, what should it be."""

from __future__ import annotations

import functools
import inspect
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union


def conforms(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` (plain YAML data) has the type ``hint``; None where it cannot tell."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    if origin in (Union, types.UnionType):
        answers = [conforms(value, a) for a in args]
        return True if True in answers else None if None in answers else False
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, list):
            return False
        return all(conforms(v, args[0]) is not False for v in value) if args else True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (Path, os.PathLike):
        return isinstance(value, str)
    if inspect.isclass(hint):  # e.g. an Accelerator object: config values are never those
        return False
    return None


def describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        parts = list(dict.fromkeys(p for p in parts if p))
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (list, tuple):
        return (
            f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
            if args
            else "a list"
        )
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if hint in (Path, os.PathLike):
        return "a path"
    return ""


@functools.cache
def signature(target: str) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """The parameters and type hints of the class or function a ``_target_`` names."""
    from hydra.utils import get_object

    cls = get_object(target)
    params = dict(inspect.signature(cls).parameters)
    try:
        hints = typing.get_type_hints(cls.__init__ if inspect.isclass(cls) else cls)
    except Exception:  # hints that do not evaluate on this Python: check names only
        hints = {}
    return params, hints
