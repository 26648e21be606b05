"""Crash-loop bookkeeping: exponential back-off between failed starts.

Pure (time is passed in), so the rules are unit-tested without a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from skylift.config import Backoff


@dataclass(slots=True)
class CrashTracker:
    """Counts consecutive failed starts and says when the next start may happen."""

    policy: Backoff
    failures: int = 0
    next_start_at: float = 0.0
    last_reason: str = ""

    def record_failure(self, now: float, reason: str) -> float:
        """Note a failed start; return the delay before the next attempt."""
        self.failures += 1
        delay = min(self.policy.max, self.policy.initial * 2.0 ** (self.failures - 1))
        self.next_start_at = now + delay
        self.last_reason = reason
        return delay

    def record_success(self) -> None:
        self.failures = 0
        self.next_start_at = 0.0
        self.last_reason = ""

    def may_start(self, now: float) -> bool:
        return now >= self.next_start_at

    @property
    def crash_loop(self) -> bool:
        return self.failures >= self.policy.crash_loop_after

    def as_dict(self, now: float) -> dict[str, object]:
        return {
            "failures": self.failures,
            "crash_loop": self.crash_loop,
            "next_start_in": round(max(0.0, self.next_start_at - now), 2),
            "last_reason": self.last_reason,
        }
