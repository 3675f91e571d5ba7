"""The book's one rule for putting a comparison into words.

A is *ahead of* B only when the 95% interval of the paired difference A - B (over the same songs, or the
same items) lies wholly above zero, *behind* B when it lies wholly below, and *tied with* B otherwise: a
difference of means alone never gives a direction. Every chapter words its comparisons with
:func:`relation` and :func:`sentence`, so a sentence cannot say "ahead" where the interval beside it
says "cannot tell". Where only a difference of two numbers exists (one excerpt, one run), :func:`change`
words it by its sign and size ("improves by 0.50 dB", "loses 0.44 dB", "changes by less than 0.1 dB").
"""
from __future__ import annotations

import math

AHEAD, BEHIND, TIED = "ahead of", "behind", "tied with"


def relation(low: float, high: float) -> str:
    """:data:`AHEAD`, :data:`BEHIND` or :data:`TIED` from the 95% interval ``[low, high]`` of A - B.

    An interval that touches zero, or that is not known (NaN), is a tie: no direction without evidence.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return TIED
    if low > high:
        raise ValueError(f"an interval needs low <= high, got [{low}, {high}]")
    if low > 0:
        return AHEAD
    if high < 0:
        return BEHIND
    return TIED


def sentence(a: str, b: str, diff: float, low: float, high: float, unit: str = "dB") -> str:
    """``"A is behind B by 0.31 dB (paired 95% interval -0.52 to -0.10 dB)"``, or ``"A is tied with B
    (paired difference +0.06 dB, 95% interval -1.41 to +1.29 dB)"``."""
    rel = relation(low, high)
    interval = f"95% interval {low:+.2f} to {high:+.2f} {unit}"
    if rel == TIED:
        return f"{a} is {TIED} {b} (paired difference {diff:+.2f} {unit}, {interval})"
    return f"{a} is {rel} {b} by {abs(diff):.2f} {unit} (paired {interval})"


def top_sentence(names: list[str], best_mean: float, what: str = "learned system", unit: str = "dB") -> str:
    """The top group (:func:`flowsep.comparison.leaders`, best mean first) in words: one leader, or a group
    that the run cannot order."""
    if not names:
        raise ValueError("a top group has at least one member")
    if len(names) == 1:
        return f"the best {what} here is {names[0]}: every other {what} is behind it"
    return (f"{', '.join(names[:-1])} and {names[-1]} share the top: none of them is ahead of another, so this "
            f"run cannot order them ({names[0]} has the highest mean, {best_mean:.2f} {unit})")


#: below this size (in the unit of the numbers) a difference of two numbers is worded as no change
SMALL = 0.1


def change(diff: float, unit: str = "dB", small: float = SMALL) -> str:
    """Words for a difference of two numbers where no interval exists (one excerpt, one run): they follow
    its sign and size, ``"improves by 0.50 dB"``, ``"loses 0.44 dB"`` or ``"changes by less than 0.1 dB"``.
    A difference that is not a number (a score is missing) gives no direction either."""
    if not math.isfinite(diff):
        return "cannot be compared (a score is missing)"
    if abs(diff) < small:
        return f"changes by less than {small:g} {unit}"
    return f"improves by {diff:.2f} {unit}" if diff > 0 else f"loses {-diff:.2f} {unit}"


def listing(names) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    names = [str(n) for n in names]
    if not names:
        raise ValueError("a listing needs at least one name")
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def changes(diffs, unit: str = "dB", small: float = SMALL) -> str:
    """Each item's difference in words (:func:`change`), e.g. ``"vocals improves by 0.50 dB, bass loses
    0.20 dB and drums changes by less than 0.1 dB"``; ``diffs`` maps names to differences."""
    return listing(f"{name} {change(d, unit, small)}" for name, d in dict(diffs).items())


def gained_lost(diffs, small: float = SMALL) -> tuple[list, list]:
    """``(gained, lost)``: the names whose difference is at least ``small`` above zero, and at least ``small``
    below, in the order given (the others changed by less than ``small``, or have no number)."""
    diffs = dict(diffs)
    gained = [k for k, d in diffs.items() if math.isfinite(d) and d >= small]
    lost = [k for k, d in diffs.items() if math.isfinite(d) and d <= -small]
    return gained, lost
