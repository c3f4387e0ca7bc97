"""When to try again: exponential delays from ``first`` doubling up to ``cap``, until ``lifetime``."""

from __future__ import annotations


def retry_delay(attempt: int, first: float, cap: float) -> float:
    """Delay after failed attempt number ``attempt`` (1-based): first, 2·first, 4·first, ... ≤ cap."""
    return float(min(cap, first * (2 ** max(0, attempt - 1))))


def next_retry_at(attempt: int, now: float, received_at: float, first: float, cap: float,
                  lifetime: float) -> float | None:
    """The next try's time, or None when the message has outlived the queue lifetime."""
    if now - received_at >= lifetime:
        return None
    return min(now + retry_delay(attempt, first, cap), received_at + lifetime)
