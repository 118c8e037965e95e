"""What a run comes to: its ``RunStatus`` and its ``RunResult`` (figures, samples, environment,
ledger), the same for a queue backend's run (``queues.run.runner``) and an in-process approach's
(``queues.run.approaches``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from queues.measurement.histograms import IntervalSample
from queues.measurement.ledger import LedgerResult
from queues.workload.spec import WorkloadSpec


class RunStatus(StrEnum):
    """How a run ended; the values are the Django ``Run.Status`` values of the same names."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class RunResult:
    run_id: str
    spec: WorkloadSpec
    status: RunStatus
    error: str | None
    summary: dict[str, Any]
    samples: list[IntervalSample]
    environment: dict[str, Any]
    ledger: LedgerResult
