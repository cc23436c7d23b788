"""How an interval is written in every report: 'estimate [low, high]', each number by the caller's format (an AUC
difference in points, a log-steps contrast as a ratio, a similarity to three decimals). The study's report, the
sweep report's effects and its feature-reuse table all write intervals through `interval_text`."""

import math
from collections.abc import Callable


def interval_text(interval, number: Callable[[float], str], missing: str = "—") -> str:
    """'+0.004 [-0.010, +0.018]' for an `analysis.stats.Interval` (or anything with estimate, low, high, defined):
    `number` writes each value; `missing` stands for an interval without an estimate (or None); an estimate without
    an interval (one seed) is written alone. An open side is written as `number` writes +-inf."""
    if interval is None or interval.estimate is None:
        return missing
    text = number(interval.estimate)
    if interval.defined:
        text += f" [{number(interval.low)}, {number(interval.high)}]"
    return text


def signed(digits: int) -> Callable[[float], str]:
    """'+0.004' with `digits` decimals."""
    return lambda value: f"{value:+.{digits}f}"


def points(value: float) -> str:
    """An AUC difference in AUC points: 0.0123 -> '+1.23'."""
    return f"{100 * value:+.2f}"


def ratio(value: float) -> str:
    """A difference of ln steps as the ratio of steps it means: ln 2 -> '×2.00'."""
    return f"×{math.exp(value):.2f}"
