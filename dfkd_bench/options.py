"""Values of the command line's options and of a grid file's keys, parsed by the same
functions so a value means the same and fails the same in both: a comma-separated
string (``--seeds 0,1``) or a YAML list (``seeds: [0, 1]``), each item read as its text
(``0.5``, ``"a"`` and ``true`` are not integers in either)."""
from __future__ import annotations

from typing import Any

from .errors import UserError

DEVICES = ("auto", "cpu", "cuda")

# Help of the options every command that reads data or the teacher zoo shares (run, sweep, teachers).
DATA_ROOT_WHAT = ("a data set's own folder (holding cifar-10-batches-py/, or train/ and test/) or the folder above "
                  "it (holding cifar10/ ...)")
DATA_ROOT_DEFAULT = "$DFKD_BENCH_DATA, else <cache>/data"
CACHE_WHAT, CACHE_DEFAULT = "teacher zoo and data cache", "$DFKD_BENCH_CACHE, else ~/.cache/dfkd-bench"
DATA_ROOT_HELP = f"{DATA_ROOT_WHAT} (default {DATA_ROOT_DEFAULT})"
CACHE_HELP = f"{CACHE_WHAT} (default {CACHE_DEFAULT})"


def items(value: Any) -> list:
    """A comma-separated string, a list, or one scalar, as a list of items."""
    if value is None:
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _integer(item: Any) -> int:
    if isinstance(item, (list, dict)):
        raise ValueError(item)
    return int(str(item).strip())  # str first: 0.5 and True are not integers, "3" is


def integers(value: Any, what: str, expected: str) -> list[int]:
    """``value``'s items as integers; a ``UserError`` naming ``what`` and ``expected``
    otherwise."""
    try:
        return [_integer(item) for item in items(value)]
    except ValueError:
        raise UserError(f"{what} {value!r}: expected {expected}") from None


def seeds(value: Any, what: str = "--seeds") -> list[int]:
    return integers(value, what, "comma-separated integers, e.g. 0,1,2")


def scales(value: Any, what: str = "--data-scale") -> list[int]:
    return integers(value, what, "comma-separated positive integers, e.g. 500,2500,5000")


def positive_int(value: Any, what: str) -> int:
    try:
        number = _integer(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UserError(f"{what} {value!r}: expected a positive integer")
    return number


def device(value: Any, what: str = "--device") -> str:
    if value not in DEVICES:
        raise UserError(f"{what} {value!r}: expected one of {', '.join(DEVICES)}")
    return value


def names(value: Any, what: str) -> list[str]:
    """Names (data sets, pairs, methods): non-empty strings."""
    found = items(value)
    for item in found:
        if not isinstance(item, str) or not item:
            raise UserError(f"{what} {value!r}: expected names, e.g. a comma-separated string or a list of strings")
    return found


def text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"{what} {value!r}: expected a non-empty string")
    return value
