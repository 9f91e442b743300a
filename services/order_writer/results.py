"""What order-writer tells quote-ingest when a quote does not become an order: the OrderResult of a refusal, and of a
quote given up on after its retries (so the quote in QuoteWerks says so instead of waiting forever)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from shared.contracts import OrderResult, Problem, QuoteApproved
from shared.platform.consuming import RETRIES_EXHAUSTED, Failure

REPLAY_HINT = "m3bridge dead-letters replay --service order-writer"


def refused(quote: QuoteApproved, problems: Sequence[Problem]) -> OrderResult:
    """M3 or the mapping refused the quote for good: failed, with the reasons."""
    return OrderResult(
        doc_no=quote.doc_no,
        revision=quote.revision,
        outcome="failed",
        problems=list(problems),
        decided_at=datetime.now(UTC),
    )


def given_up(quote: QuoteApproved, failure: Failure) -> OrderResult:
    """The quote was dead-lettered after its attempts (M3 away for long, or an unexpected error): held, not failed,
    since the ledger keeps what was done and a replay resumes it."""
    why = "M3 did not answer in time" if failure.error_class == RETRIES_EXHAUSTED else "it could not be processed"
    problem = Problem(
        error_class="transient" if failure.error_class == RETRIES_EXHAUSTED else "validation",
        message=f"not finished after {failure.attempts} attempt(s), {why} ({failure.error_message[:300]}); "
        f"kept as a dead letter, an operator can resume it with `{REPLAY_HINT}`",
    )
    return OrderResult(
        doc_no=quote.doc_no, revision=quote.revision, outcome="held", problems=[problem], decided_at=datetime.now(UTC)
    )
