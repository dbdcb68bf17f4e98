"""A user's reward module, as a researcher would write one beside their data (used by
tests/rewards/test_functions.py and the newcomer test): plain functions
``fn(prompts, completions, **columns) -> list[float]`` that read dataset columns."""

import time


def bonus(prompts, completions, bonus, **_):
    """The row's ``bonus`` column, whatever was sampled: each question's rewards are known in advance."""
    return [float(b) for b in bonus]


def length_penalty(prompts, completions, **_):
    """−(characters of the completion) / 100."""
    return [-len(c) / 100 for c in completions]


def hang_when_asked(prompts, completions, hang=None, **_):
    """0.5, except on rows whose ``hang`` column is true: there it never returns."""
    if hang and hang[0]:
        while True:
            time.sleep(0.05)
    return [0.5] * len(completions)


def broken(prompts, completions, **_):
    """Returns a string: not a reward."""
    return ["high"] * len(completions)
