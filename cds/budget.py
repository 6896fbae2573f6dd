"""A time budget for one evaluation (hardening #4): cooperative deadline checks.

A worker thread cannot be killed, so the budget is kept in two places:

* the web layer stops *waiting* at the deadline and answers the EHR with a clear
  ``EvaluationTimeout`` (503 OperationOutcome) instead of a hang; the thread keeps its
  worker slot until it stops, so abandoned work can never pile up beyond the pool;
* the work itself calls ``check_budget(stage)`` between stages (after the facts, after
  the engine, before each suggestion re-check, before the audit write) and stops there
  with the same error: it never writes an audit record for an answer the EHR did not get.

The deadline lives in a context variable set by the thread that does the work, so the
pipeline needs no extra parameter, and code run without a budget (``cds evaluate``, the
vignettes, the kit) is unaffected.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from cds.errors import EvaluationTimeout

_deadline: ContextVar[tuple[float, float] | None] = ContextVar("cds_budget", default=None)


@contextmanager
def time_budget(deadline: float, seconds: float) -> Iterator[None]:
    """Run the block with a ``time.monotonic()`` deadline (``seconds``: for the message)."""
    token = _deadline.set((deadline, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def timeout_error(seconds: float, stage: str | None = None) -> EvaluationTimeout:
    where = f" (stopped {stage})" if stage else ""
    return EvaluationTimeout(
        f"the evaluation did not finish within its {seconds:g} s budget{where}; no cards "
        "were returned (CDS_EVALUATION_BUDGET_SECONDS)"
    )


def check_budget(stage: str) -> None:
    """Raise ``EvaluationTimeout`` if the current evaluation's deadline has passed."""
    current = _deadline.get()
    if current is not None and time.monotonic() > current[0]:
        raise timeout_error(current[1], stage)
