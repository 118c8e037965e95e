"""Waiting in tests: ``wait_until``, the one way a test waits for something to happen."""

from __future__ import annotations

import time

import pytest


def wait_until(predicate, timeout_s: float, what: str, *, interval_s: float = 0.02):
    """Call ``predicate`` until it returns something truthy, and return that; fail naming
    ``what`` after ``timeout_s``. Tests wait for an observable condition with this instead of
    sleeping for a guessed time, which a loaded machine can always outlast."""
    deadline = time.monotonic() + timeout_s
    while True:
        if value := predicate():
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}", pytrace=False)
        time.sleep(interval_s)
