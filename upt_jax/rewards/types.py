"""The result type shared by every verifier."""

from __future__ import annotations

import dataclasses

__all__ = ["Reward", "REASONS"]

# Reasons a verifier gives. `correct` is the only one with score 1 for binary verifiers.
REASONS = (
    "correct",  # matches the reference
    "wrong",  # an answer was found and does not match
    "no_answer",  # nothing could be extracted
    "too_long",  # the extracted answer exceeds the length bound
    "bad_format",  # format verifier: the required structure is missing
    "timeout",  # the worker ran past the time limit and was killed
    "worker_died",  # the worker process died (crash, out of memory) on this item
    "error",  # the verifier raised; the exception type is in `detail`
    "bad_reference",  # the reference itself is malformed (a data error), e.g. a non-integer
    # reference for the integer verifier; what it is is in `detail`
)


@dataclasses.dataclass(frozen=True)
class Reward:
    """A verifier's verdict on one model output.

    Attributes:
      score: the reward, 1.0 or 0.0 for the binary verifiers.
      reason: one of `REASONS`.
      extracted: the answer taken from the output (None when there was none).
      detail: free-form extra information (e.g. the exception type on ``error``).
    """

    score: float
    reason: str
    extracted: str | None = None
    detail: str | None = None

    @property
    def correct(self) -> bool:
        return self.reason == "correct"
