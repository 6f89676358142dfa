"""What the `drat` commands accept: one set of rules for every flag and every config field.

A rule is at once an argparse `type` (it parses a flag's text and refuses a bad value with a
one-line message, which `drat` prints as `drat: error: argument --flag: ...` with exit status 2)
and a check of a value that arrives another way (a config file, the Python API), so a flag and
the config field behind it can never disagree:

    POSITIVE_INT    1, 2, ...               model shapes, sequence length, batch size, steps, threads
    NONNEG_INT      0, 1, ...               warm-up steps, checkpoint interval (0: off), top-k (0: off)
    SEED            0 .. 2**63 - 1          seeds
    FINITE          any finite number       an initial gate logit
    POSITIVE        finite, > 0             learning rates, budgets, caps, gate temperatures
    NONNEG          finite, >= 0            λ, weight decay, gradient clip, sampling temperature
    FRACTION        finite, in [0, 1)       dropout
    OUT_DIR         a folder that can be made or written: not a file, not below a file, writable
    OUT_FILE        a file that can be written: not a folder, not below a file, in a writable folder

NaN and ±inf are never numbers here: `float("inf")` parses, but a learning rate or a λ of inf
trains to NaN. `check_field_types` checks a dataclass's values against its field annotations (a
config file's `steps: "two"`), as the pipeline checks its own config against a JSON schema.
"""

from __future__ import annotations

import argparse
import math
import os
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """A value a command cannot accept; the message says which and why, in one line."""


@dataclass(frozen=True)
class Number:
    """An int or a finite float within optional bounds; see the module docstring."""

    kind: type  # int or float
    low: float | None = None
    low_open: bool = False  # low itself excluded
    high: float | None = None
    high_open: bool = False
    what: str | None = None  # how the rule describes itself, where the bounds say it badly

    @property
    def description(self) -> str:
        if self.what is not None:
            return self.what
        noun = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{noun} in {lo}{self.low:g}, {self.high:g}{hi}"
        if self.low == 0:
            return ("a positive integer" if self.kind is int else "a finite number > 0") if self.low_open \
                else ("a non-negative integer" if self.kind is int else "a finite number >= 0")
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        return noun

    def problem(self, value: Any, shown: str | None = None) -> str | None:
        """What is wrong with `value` under this rule, or None (`shown`: the value as the user wrote it)."""
        got = repr(value) if shown is None else shown
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be {self.description}, got {got} ({type(value).__name__})"
        bad = (self.kind is int and not isinstance(value, int)) or not math.isfinite(value)
        bad = bad or (self.low is not None and (value <= self.low if self.low_open else value < self.low))
        bad = bad or (self.high is not None and (value >= self.high if self.high_open else value > self.high))
        return f"must be {self.description}, got {got}" if bad else None

    def check(self, value: Any, name: str, error: type[Exception] = InputError) -> Any:
        """`value` if the rule accepts it; else `error("<name> must be ..., got ...")`."""
        msg = self.problem(value)
        if msg is not None:
            raise error(f"{name} {msg}")
        return value

    def parse(self, text: str) -> int | float:
        try:
            return int(text) if self.kind is int else float(text)
        except ValueError:
            raise InputError(f"must be {self.description}, got {text!r}") from None

    def __call__(self, text: str) -> int | float:
        """The argparse `type`: the parsed value, or a one-line ArgumentTypeError."""
        try:
            value = self.parse(text)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        msg = self.problem(value, shown=repr(text))
        if msg is not None:
            raise argparse.ArgumentTypeError(msg)
        return value


POSITIVE_INT = Number(int, low=0, low_open=True)
NONNEG_INT = Number(int, low=0)
SEED = Number(int, low=0, high=2**63 - 1, what="an integer in [0, 2**63 - 1]")
FINITE = Number(float)
POSITIVE = Number(float, low=0, low_open=True)
NONNEG = Number(float, low=0)
FRACTION = Number(float, low=0, high=1, high_open=True)


class NumberList:
    """An argparse `type` for comma-separated numbers (`--lambdas 0.05,0.5`), each under `rule`.
    Returns the text as given (empty items skipped by the commands), so callers split it as before."""

    def __init__(self, rule: Number):
        self.rule = rule

    def __call__(self, text: str) -> str:
        for item in text.split(","):
            if not item.strip():
                continue
            try:
                ok = self.rule.problem(self.rule.parse(item)) is None
            except InputError:  # not a number at all
                ok = False
            if not ok:
                raise argparse.ArgumentTypeError(
                    f"must be comma-separated values, each {self.rule.description}; got {item!r} in {text!r}")
        return text


def ARMS(text: str) -> int:
    """An argparse `type` for `--arms`: "store,recompute" (2) or "store,recompute,offload" (3)."""
    arms = [a.strip() for a in text.split(",") if a.strip()]
    if sorted(arms) == ["recompute", "store"]:
        return 2
    if sorted(arms) == ["offload", "recompute", "store"]:
        return 3
    raise argparse.ArgumentTypeError(f"must be store,recompute or store,recompute,offload; got {text!r}")


# ------------------------------------------------------------------------------------- output paths
def out_path_problem(path: str | os.PathLike[str], kind: str) -> str | None:
    """Why `path` cannot be written as a `kind` ("dir" or "file"), or None. Writes nothing: it
    looks at the path, the nearest folder above it that exists, and that folder's permissions."""
    p = Path(path)
    if str(path) == "":
        return "an empty path"
    if p.exists():
        if kind == "dir" and not p.is_dir():
            return f"{p} exists and is not a folder"
        if kind == "file" and p.is_dir():
            return f"{p} is a folder, not a file"
    # the nearest existing ancestor: a path below a file has a file there
    anchor = p if kind == "dir" else p.parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        return f"{p} lies below {anchor}, which is a file"
    if not os.access(anchor, os.W_OK | os.X_OK):
        return f"{p} cannot be written: no write permission in {anchor}"
    return None


def check_out_path(path: str | os.PathLike[str], kind: str, name: str = "--out",
                   error: type[Exception] = InputError) -> str:
    msg = out_path_problem(path, kind)
    if msg is not None:
        raise error(f"{name}: {msg}")
    return str(path)


def _out_type(kind: str):
    def parse(text: str) -> str:
        msg = out_path_problem(text, kind)
        if msg is not None:
            raise argparse.ArgumentTypeError(msg)
        return text

    parse.__name__ = f"out_{kind}"
    return parse


OUT_DIR = _out_type("dir")
OUT_FILE = _out_type("file")


# ------------------------------------------------------------------------------------- dataclass fields
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               type(None): "null"}


def _accepts(hint: Any, value: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True  # a type this layer does not check


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def check_field_types(obj: Any, error: type[Exception] = InputError, what: str = "field") -> None:
    """Refuse a dataclass instance whose values do not have the types its fields are annotated
    with (an int where an int is annotated, a bool for a bool, ...; an int passes for a float)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if not _accepts(hints[f.name], value):
            raise error(f"{what} {f.name} must be {_describe(hints[f.name])}, got {value!r} "
                        f"({type(value).__name__})")


__all__ = ["FINITE", "FRACTION", "NONNEG", "NONNEG_INT", "OUT_DIR", "OUT_FILE", "POSITIVE", "POSITIVE_INT",
           "SEED", "ARMS", "InputError", "Number", "NumberList", "check_field_types", "check_out_path",
           "out_path_problem"]
