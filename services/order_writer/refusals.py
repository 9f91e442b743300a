"""Why a quote does not become an order: held until its data is fixed, or rejected by M3 for good."""

from __future__ import annotations

from shared.contracts import Problem
from shared.m3 import M3Error


class HoldError(Exception):
    """The order must not be sent until someone fixes the data; `problems` say what."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


class RejectedError(Exception):
    """M3 refused the order for good (business or authorization); goes to the dead letters."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def problem_from(error: M3Error) -> Problem:
    return Problem(
        error_class=error.error_class,
        message=error.message[:2000],
        code=getattr(error, "code", "")[:32],
        field=getattr(error, "field", "")[:32],
        program=error.program[:16],
        transaction=error.transaction[:32],
    )
