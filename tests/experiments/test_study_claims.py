"""The claims are a table: adding a claim is one entry (and, if no measure fits, its measure), and it is judged,
gated and reported like the others, with no other code touched."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from study_world import LABELS, config, diagnostics, similar, verdicts_of, world

from transfusion_jax.analysis import stats
from transfusion_jax.experiments.study import report
from transfusion_jax.experiments.study.claims import CLAIMS, Claim
from transfusion_jax.experiments.study.contrasts import MEASURES, Measure, Variant, auc_interval, missing_runs
from transfusion_jax.experiments.study.gates import group_of

EARLY_STEP = 30


def test_a_claim_on_an_existing_measure_is_one_entry(tmp_path):
    """C9 (made up): with little data transfer helps the small model. One entry; its verdict is the AUC contrast's,
    G4 overrides it like any AUC claim's, and the report's table shows it with its words."""
    c9 = Claim(
        "C9", "With little data, transfer helps the small model.", "small model", "auc",
        ((1, "small", "small", "transfer"), (-1, "small", "small", "random")),
        "AUC(transfer) - AUC(random), small data", "auc", "greater", gates=("G4",),
    )  # fmt: skip
    c = config()
    measures = world(c)
    result, by = verdicts_of(c, measures, claims=CLAIMS + (c9,))
    v = by["C9", "small model"]
    want = auc_interval(measures, LABELS, c9.terms, c.confidence)
    assert (v.interval.estimate, v.interval.low, v.interval.high) == (want.estimate, want.low, want.high)
    assert v.verdict == stats.verdict(want, c.margins.auc, "greater")[0] == "supported"
    assert [x.claim for x in result.verdicts[:-1]] == [x.id for x in CLAIMS]  # the others unchanged, in order
    timing = report.Timing(1.0, 1.0, (0.0, 0.0), 0, 0)
    text = open(report.write(str(tmp_path), c, result, measures, diagnostics(c), similar(c), {}, timing)).read()
    row = next(line for line in report.verdicts_block(text).splitlines() if line.startswith("| C9 |"))
    assert "With little data, transfer helps the small model." in row and "**supported**" in row


def _early_values(ev, terms, step: int) -> list[float]:
    """Per seed: sum_t c_t validation AUC of group t at the first evaluation at or after `step`."""
    seeds = sorted(set.intersection(*(set(group_of(ev.measures, m, d, i)) for _, m, d, i in terms)))
    values = []
    for s in seeds:
        runs = [(coef, group_of(ev.measures, m, d, i)[s]) for coef, m, d, i in terms]
        values.append(sum(coef * run.curve[min(k for k in run.curve if k >= step)] for coef, run in runs))
    return values


EARLY_AUC = Measure(
    "auc",
    lambda c: [Variant("early")],
    lambda ev, terms, _: stats.t_interval(_early_values(ev, terms, EARLY_STEP), ev.c.confidence),
    missing_runs,
)


def test_a_claim_with_a_new_measure_is_one_entry_plus_the_measure():
    """C10 (made up): transfer is ahead early in training, read from the validation curve at step 30: a measure
    registered beside the others and one entry. Its interval is the t interval of the per-seed differences (by hand
    below), and the gates it names apply to it."""
    c10 = Claim(
        "C10", "Early in training, transfer is ahead of random init.", "large model", "early_auc",
        ((1, "large", "full", "transfer"), (-1, "large", "full", "random")),
        f"validation AUC at step {EARLY_STEP}: transfer - random, full data", "auc", "greater", gates=("G4",),
    )  # fmt: skip
    c = config()
    measures = world(c)
    registry = {**MEASURES, "early_auc": EARLY_AUC}
    _, by = verdicts_of(c, measures, claims=(c10,), registry=registry)
    v = by["C10", "large model"]
    step = min(s for s in measures[next(iter(measures))].curve if s >= EARLY_STEP)
    diffs = [
        measures[k].curve[step] - measures[dataclasses.replace(k, init="random")].curve[step]
        for k in measures
        if (k.model, k.data, k.init) == ("large", "full", "transfer")
    ]
    half = scipy_stats.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / math.sqrt(len(diffs))
    assert v.interval.estimate == pytest.approx(np.mean(diffs), abs=1e-12)
    assert (v.interval.low, v.interval.high) == pytest.approx((np.mean(diffs) - half, np.mean(diffs) + half))
    assert v.verdict == "supported" and v.measure == "auc" and v.finding.startswith("Early in training")
    # The cut: the entry needs no code to say what was not run.
    _, cut = verdicts_of(config(("small",)), claims=(c10,), registry=registry)
    assert cut["C10", "large model"].verdict.startswith("not run")
