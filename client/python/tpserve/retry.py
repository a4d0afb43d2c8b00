"""Retries with exponential backoff, for the calls that are safe to repeat.

Only idempotent calls are retried (Forward, GetModel, ListModels, DownloadWeights, Predict): repeating
one cannot change the server's state. Backward with ACCUMULATE, SgdStep, TrainStep, uploads and creates are never
retried, because a call that failed on the client's side may still have been applied. GetGradient
is not retried either: a server that restarted in between has an empty gradient buffer, and a
retry would return zeros as if nothing had been accumulated.
"""

import random
import time
from dataclasses import dataclass, field

import grpc


@dataclass
class RetryPolicy:
    max_attempts: int = 5              # first call included; 1 = no retries
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0
    jitter: float = 0.2                # each sleep is scaled by a uniform factor in [1 - jitter, 1 + jitter]
    # UNAVAILABLE: the server is down, restarting or unreachable, or a connection broke.
    retryable_codes: frozenset = field(default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE}))

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.backoff_multiplier < 1:
            raise ValueError("RetryPolicy: backoffs must be >= 0 and backoff_multiplier >= 1")

    def backoff_s(self, retry_index):
        """The sleep before retry number `retry_index` (0 for the first retry)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.backoff_multiplier ** retry_index)
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


NO_RETRIES = RetryPolicy(max_attempts=1)


def remaining_s(deadline):
    """Seconds left until the monotonic `deadline` (None: no deadline)."""
    return None if deadline is None else deadline - time.monotonic()
