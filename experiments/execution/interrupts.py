"""SIGINT and SIGTERM while a command executes runs: cancel the run cleanly, exit 128 + signal.

The first signal only sets a flag, which the runner's cancel probe reads (``services.run_execute``
takes it as ``interrupted``): the run then ends through its normal cancel path, with its workers
stopped, its queue removed, its counts stored and its report printed. A second signal raises
``KeyboardInterrupt`` at once, for a user who will not wait; ``run_execute`` still stores the
run as failed before it propagates, so no row stays ``running``.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CAUGHT = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """Call it for why the run must stop (``"interrupted by SIGINT"``), or ``None``."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> str | None:
        return f"interrupted by {signal.Signals(self.signum).name}" if self.signum else None

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + (self.signum or 0)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"interrupted again by {signal.Signals(signum).name}")
        self.signum = signum

    @contextmanager
    def caught(self) -> Iterator[Interrupts]:
        """Handle SIGINT and SIGTERM in the block (the main thread only), as before after it."""
        previous = {signum: signal.signal(signum, self._handle) for signum in CAUGHT}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
