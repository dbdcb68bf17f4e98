"""Verifiable rewards: answer extraction, verifiers, and a time-limited worker pool.

Public API:
  Reward, REASONS                     the verdict type (score, reason, extracted, detail)
  Verifier                            batched verifier of one kind ("math", "math_strict",
                                      "integer", "exact", "choice", "format", "countdown") with its pool
  RoutedVerifier                      a mixed batch, each item with its own kind, one pool
  RewardFunctions                     your fn(prompts, completions, **columns) -> list[float], weighted,
                                      each call time-limited in the pool (upt_jax.rewards.functions)
  VerifierPool                        worker processes with a hard per-item time limit
  verify_math, verify_integer, verify_exact, verify_choice, verify_format, verify_countdown, prepare_math
  math_equivalent                     math-verify equivalence of two extracted answers
  extract_answer, last_boxed, extract_choice, parse_integer, strip_math_delimiters
"""

from upt_jax.rewards.extract import (
    extract_answer,
    extract_choice,
    last_boxed,
    parse_integer,
    strip_math_delimiters,
)
from upt_jax.rewards.functions import RewardFunctions
from upt_jax.rewards.math_equiv import math_equivalent
from upt_jax.rewards.pool import VerifierPool
from upt_jax.rewards.types import REASONS, Reward
from upt_jax.rewards.verifiers import (
    KINDS,
    RoutedVerifier,
    Verifier,
    prepare_math,
    verify_choice,
    verify_countdown,
    verify_exact,
    verify_format,
    verify_integer,
    verify_math,
)

__all__ = [
    "KINDS",
    "REASONS",
    "Reward",
    "RewardFunctions",
    "RoutedVerifier",
    "Verifier",
    "VerifierPool",
    "extract_answer",
    "extract_choice",
    "last_boxed",
    "math_equivalent",
    "parse_integer",
    "prepare_math",
    "strip_math_delimiters",
    "verify_choice",
    "verify_countdown",
    "verify_exact",
    "verify_format",
    "verify_integer",
    "verify_math",
]
