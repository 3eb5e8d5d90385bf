"""Teacher-student pairs, named ``TEACHER-STUDENT``."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError
from .registry import MODELS, PAIRS


@dataclass(frozen=True)
class Pair:
    teacher: str
    student: str
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.teacher}-{self.student}"


def _add(teacher: str, student: str, note: str) -> None:
    pair = Pair(teacher, student, note)
    PAIRS.register(pair.name, pair)


_add("cnn_m", "cnn_s", "embedded digits quickstart; seconds on a CPU")

# The data set a run uses when none is given, and the pair it defaults to.
DEFAULT_DATASET = "digits"
DEFAULT_PAIR = {"digits": "cnn_m-cnn_s"}


def resolve_pair(name: str | None, dataset: str) -> Pair:
    """A registered pair, or any ``T-S`` of two known architectures (``timm:`` too)."""
    if name is None:
        name = DEFAULT_PAIR.get(dataset.split(":", 1)[0], "resnet34-resnet18")
    if name in PAIRS:
        return PAIRS.get(name)
    teacher, sep, student = name.partition("-")
    known = lambda a: a.startswith("timm:") or a in MODELS  # noqa: E731
    if sep and known(teacher) and known(student):
        return Pair(teacher, student, "ad hoc")
    raise UserError(f"unknown pair {name!r}; known pairs: {', '.join(PAIRS.names())} "
                    f"(or TEACHER-STUDENT of the architectures {', '.join(MODELS.names())})")
