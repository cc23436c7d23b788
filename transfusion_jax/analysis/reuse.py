"""The feature-reuse decomposition of Matsoukas et al. (CVPR 2022), with intervals over seeds.

Three inits of one model on one dataset (and data size): RI (random), WT (weight transfer: `transfer`) and ST
(statistics transfer: our `mean_var`). Per metric (final AUC, steps-to-threshold, ...):
  gain  = WT - RI                   what transfer buys (sign-flipped for lower-is-better metrics such as steps)
  share = (WT - ST) / (WT - RI)     the part of the gain that Mean-Var does not recover, i.e. that needs the
                                    pretrained features themselves: the share explained by feature reuse.
WT, ST, RI are means over seeds. The share is a ratio of two estimated differences, so its interval is Fieller's
(1954): the set of ratios r for which WT - ST - r (WT - RI) is not significantly different from 0. Why Fieller and
not a bootstrap over seeds: with the 3-5 seeds a study affords, a bootstrap has few distinct resamples and
undercovers; Fieller's interval is exact under normality and says by itself when no interval exists. It is bounded
exactly when the gain's t interval (same variance, same quantile) excludes 0; otherwise the share is reported as
"undefined": with no clear gain there is nothing to apportion.

Variances (both are stated in the result):
  paired=True    seeds are matched across inits (seed i of WT, ST and RI share data order and head init): per-seed
                 differences, their sample covariance, df = n - 1. Pairing removes the seed-to-seed noise the three
                 runs share.
  paired=False   independent groups: Var(mean) = s^2 / n per init; the two differences share WT's mean, hence their
                 covariance s_WT^2 / n_WT; df is the smaller Welch-Satterthwaite df of the two differences
                 (conservative).
The gain's interval is the t interval of WT - RI under the same choice, from the very variance, df and quantile that
Fieller's interval uses (so "bounded share" and "gain excludes 0" agree exactly). Paired, that is
`analysis.stats.t_interval` of the per-seed differences (tested equal); unpaired it is Welch's, which stats does not
need, so the computation stays here once for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats

INITS = ("WT", "ST", "RI")


def _values(name: str, values: Sequence[float | None]) -> np.ndarray:
    x = np.array([np.nan if v is None else v for v in values], np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"{name} needs at least 2 seeds (a variance over seeds), got {x.size}.")
    return x


def _welch_df(parts: list[tuple[float, int]]) -> float:
    """Welch-Satterthwaite df of a sum of independent mean variances (s^2 / n, n)."""
    num = sum(v for v, _ in parts) ** 2
    den = sum(v**2 / (n - 1) for v, n in parts)
    return float(num / den) if den > 0 else float("inf")


def _moments(wt, st, ri, paired: bool) -> tuple[float, float, float, float, float, float]:
    """(a, b, Var a, Var b, Cov(a, b), df) for a = mean(WT - ST), b = mean(WT - RI)."""
    if paired:
        if not wt.size == st.size == ri.size:
            raise ValueError(
                f"paired=True needs as many seeds of each init, got WT {wt.size}, ST {st.size}, RI {ri.size}."
            )
        da, db = wt - st, wt - ri
        cov = np.cov(da, db, ddof=1) / wt.size
        return float(da.mean()), float(db.mean()), float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1]), wt.size - 1.0
    vw, vs, vr = (np.var(x, ddof=1) / x.size for x in (wt, st, ri))
    df = min(_welch_df([(vw, wt.size), (vs, st.size)]), _welch_df([(vw, wt.size), (vr, ri.size)]))
    return float(wt.mean() - st.mean()), float(wt.mean() - ri.mean()), vw + vs, vw + vr, vw, df


def fieller_interval(
    a: float, b: float, var_a: float, var_b: float, cov: float, t: float
) -> tuple[float, float] | None:
    """Fieller's interval for a / b: {r : (a - r b)^2 <= t^2 (var_a - 2 r cov + r^2 var_b)}, or None when that set
    is not a bounded interval (b^2 <= t^2 var_b: the denominator is not significantly different from 0)."""
    quad = b * b - t * t * var_b
    if quad <= 0:
        return None
    half = a * b - t * t * cov
    disc = max(half * half - quad * (a * a - t * t * var_a), 0.0)
    root = np.sqrt(disc)
    return float((half - root) / quad), float((half + root) / quad)


def decompose(
    wt: Sequence[float | None],
    st: Sequence[float | None],
    ri: Sequence[float | None],
    *,
    higher_is_better: bool = True,
    paired: bool = True,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Gain of transfer (WT - RI) and the share of it due to feature reuse, (WT - ST) / (WT - RI), per-seed values in.

    Values may be None/NaN (e.g. a run that never reached the AUC threshold): the result is then "undefined" with the
    reason, never a number computed from the runs that happened to finish. Returns a JSON-ready dict.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    groups = {name: _values(name, v) for name, v in zip(INITS, (wt, st, ri))}
    result: dict[str, Any] = {
        "means": {name: float(np.mean(x)) for name, x in groups.items()},
        "n": {name: int(x.size) for name, x in groups.items()},
        "paired": paired,
        "confidence": confidence,
        "higher_is_better": higher_is_better,
        "interval_method": "t interval (gain); Fieller (share)",
    }
    missing = {name: int(np.isnan(x).sum()) for name, x in groups.items() if np.isnan(x).any()}
    if missing:
        reason = "runs without a value (e.g. never reached the threshold): " + ", ".join(
            f"{k} {v} of {groups[k].size}" for k, v in missing.items()
        )
        return {**result, "means": None, "gain": None, "share": {"status": "undefined", "reason": reason}}
    a, b, var_a, var_b, cov, df = _moments(groups["WT"], groups["ST"], groups["RI"], paired)
    t = float(scipy.stats.t.ppf(0.5 + confidence / 2, df))
    sign = 1.0 if higher_is_better else -1.0
    half_width = t * np.sqrt(var_b)
    gain_ci = sorted((sign * (b - half_width), sign * (b + half_width)))
    result["gain"] = {"estimate": sign * b, "ci": [float(v) for v in gain_ci], "df": df}
    interval = fieller_interval(a, b, var_a, var_b, cov, t)
    if interval is None:
        result["share"] = {
            "status": "undefined",
            "estimate": None,
            "ci": None,
            "reason": f"the gain's {confidence:.0%} interval includes 0: no clear gain to apportion",
        }
    else:
        result["share"] = {"status": "defined", "estimate": a / b, "ci": list(interval), "df": df}
    return result
