"""The paper's claims as the study tests them (docs/study.md, round 7 §6): one entry per claim and scope, in the
report's order, and the secondary numbers reported without a verdict. Adding a claim is adding an entry to `table`
(and, if no measure of `contrasts.MEASURES` fits, its measure there); tests/experiments/test_study_claims.py shows one
added.

An entry: the claim's id and the paper's words; its scope (a row of the report); its measure and the contrast's
terms in that measure's terms (`contrasts`), in words too; its rule (`analysis.stats.Rule`: 'equivalence' inside
+-margin, 'directional' excluding 0 in the stated direction with a smallest effect of interest, 'noninferiority'
above a bound built into the contrast) and the design field its margin comes from (`margins` for equivalence,
`sesoi` for directional claims); the gates that can override it (G1: "not testable"; G3, G4: "inconclusive"; G2: a
note; `verdicts`); whether the measure's other variants are shown beside it; the contrasts that explain it, shown
beside it with their own intervals (C5: the kernels' scale and the rest); and, for a few claims, a precondition or
parts. Text and init names may name the claim model's blocks: {first}, {last}, {b1}, {b2}, ...
"""

import dataclasses

from transfusion_jax.experiments.study.design import MODELS

FINDINGS = {
    "C1": "With plenty of data, transfer and random init reach comparable performance.",
    "C2a": "Transfer helps more with little data.",
    "C2b": "... and mainly for large models.",
    "C3a": "Larger models change less through training.",
    "C3b": "The lowest layers change least, in large models most of all.",
    "C4": "Feature reuse is mostly restricted to the lowest (two) layers.",
    "R": "For the CBRs, random-init representations are as similar to each other as to transfer-trained ones.",
    "C5": "Mean-Var init speeds convergence over random init.",
    "C6": "Transfusing the lowest blocks gives most of the convergence speed-up of full transfer.",
    "C7": "Slim (pretrained lowest blocks, a halved random top) matches full transfer.",
    "C8": "Synthetic Gabor filters in conv1 have the same effect as pretrained conv1 weights.",
}


@dataclasses.dataclass(frozen=True)
class Precondition:
    """A contrast that must come out "supported" under its directional rule for the claim to be assessable;
    otherwise the verdict is "not assessable": '<failure> (<contrast>: <verdict>), so <claim> is not assessable'."""

    measure: str
    terms: tuple
    contrast: str
    what: str
    failure: str


@dataclasses.dataclass(frozen=True)
class AllParts:
    """A claim of several parts: contradicted if any part is, supported if all are; the reasons in words."""

    contradicted: str
    supported: str
    otherwise: str


@dataclasses.dataclass(frozen=True)
class Number:
    """A contrast reported with its interval and where it lies against the margin, without a verdict: a secondary
    number of the design, or one that explains a claim (shown beside it)."""

    name: str
    scope: str
    measure: str  # a key of contrasts.MEASURES
    terms: tuple


@dataclasses.dataclass(frozen=True)
class Claim:
    id: str
    finding: str  # the paper's words
    scope: str  # the report's row: 'small model', 'large model', 'large - small model'
    measure: str  # a key of contrasts.MEASURES
    terms: tuple  # the contrast, in the measure's terms
    contrast: str  # the contrast in words
    kind: str  # analysis.stats.RULES
    margin: str = ""  # a field of the design's `margins` (equivalence) or `sesoi` (directional); none: 0
    direction: int = 1  # directional / non-inferiority: +1 the contrast is claimed positive, -1 negative
    model: str = ""  # the model whose gates G1-G3 apply and whose blocks the text names ('': none)
    gates: tuple[str, ...] = ()  # the gates that can override the verdict
    beside: bool = True  # the measure's other variants shown beside the verdict
    explained: tuple[Number, ...] = ()  # contrasts shown beside it that split its effect
    precondition: Precondition | None = None
    parts: tuple["Claim", ...] = ()  # a claim judged from parts (C7), combined by `combine`
    combine: AllParts | None = None

    def resolved(self, layers: dict[str, list[str]]) -> "Claim":
        """The entry with {first}, {last}, {b1}, ... filled in from its model's block names."""
        if not self.model:
            return self
        names = layers[self.model]
        fields = {"first": names[0], "last": names[-1], **{f"b{i + 1}": n for i, n in enumerate(names)}}

        def fill(x):
            if isinstance(x, str):
                return x.format(**fields)
            return tuple(fill(y) for y in x) if isinstance(x, tuple) else x

        return dataclasses.replace(
            self,
            terms=fill(self.terms),
            contrast=fill(self.contrast),
            parts=tuple(p.resolved(layers) for p in self.parts),
            explained=tuple(dataclasses.replace(n, terms=fill(n.terms), name=fill(n.name)) for n in self.explained),
        )

    def margin_of(self, c) -> float:
        """The number the rule reads the interval against."""
        if not self.margin:
            return 0.0
        return float((c.margins if self.kind == "equivalence" else c.sesoi)[self.margin])


def _groups(model: str, data: str, *signed_inits) -> tuple:
    """((c_a, model, data, a), (c_b, model, data, b), ...) from (c_a, a), (c_b, b), ...: one training set's groups."""
    return tuple((c, model, data, init) for c, init in signed_inits)


RANDOM = ((1, "random"),)
REUSE = ((1, "transfer"), (-1, "random"))  # reuse(l) = sim_init(l | transfer) - sim_init(l | random)
STEPS_GATES = ("G2", "G3")


def _c1(m):
    return Claim(
        "C1", FINDINGS["C1"], f"{m} model", "auc", _groups(m, "full", (1, "transfer"), (-1, "random")),
        "AUC(transfer) - AUC(random), full data", "equivalence", "auc", gates=("G4",),
    )  # fmt: skip


def _c2a(m):
    terms = _groups(m, "small", (1, "transfer"), (-1, "random")) + _groups(m, "full", (-1, "transfer"), (1, "random"))
    return Claim(
        "C2a", FINDINGS["C2a"], f"{m} model", "auc", terms,
        "[AUC(transfer) - AUC(random)] small data - [same] full data", "directional", "auc", gates=("G4",),
    )  # fmt: skip


C2B = Claim(
    "C2b", FINDINGS["C2b"], "large - small model", "auc",
    _groups("large", "small", (1, "transfer"), (-1, "random"))
    + _groups("small", "small", (-1, "transfer"), (1, "random")),
    "[AUC(transfer) - AUC(random)] small data: large - small model", "directional", "auc", gates=("G4",),
)  # fmt: skip

C3A = Claim(
    "C3a", FINDINGS["C3a"], "large - small model", "adjusted_sim_to_init",
    ((1, "large", RANDOM, "all"), (-1, "small", RANDOM, "all")),
    "mean over layers of sim_init minus its unrelated-network null, random init, full data: large - small model",
    "directional", "similarity",
)  # fmt: skip

C3B = Claim(
    "C3b", FINDINGS["C3b"], "large - small model", "adjusted_sim_to_init",
    ((1, "large", RANDOM, "lower half"), (-1, "large", RANDOM, "upper half"),
     (-1, "small", RANDOM, "lower half"), (1, "small", RANDOM, "upper half")),
    "[adjusted sim_init, lower half - upper half of the layers]: large - small model, random init, full data",
    "directional", "similarity",
)  # fmt: skip


def _c4(m):
    return Claim(
        "C4", FINDINGS["C4"], f"{m} model", "adjusted_sim_to_init",
        ((1, m, REUSE, "lower half"), (-1, m, REUSE, "upper half")),
        "reuse(l) = adjusted sim_init(l | transfer) - adjusted sim_init(l | random); mean over the lower half of the "
        "layers - mean over the upper half", "directional", "similarity",
    )  # fmt: skip


def _r(m):
    return Claim(
        "R", FINDINGS["R"], f"{m} model", "seed_pairs",
        ((1, m, "rand_rand", "upper half"), (-1, m, "rand_imnet", "upper half")),
        "mean sim(R_i, R_j) over seeds i < j - mean sim(R_i, T_j) over seeds i != j, upper half of the layers",
        "equivalence", "similarity",
    )  # fmt: skip


def _c5(m):
    scale = Number("scale: ln steps(random) - ln steps(random_scaled)", f"{m} model", "log_steps",
                   _groups(m, "full", (1, "random"), (-1, "random_scaled")))  # fmt: skip
    rest = Number("the rest: ln steps(random_scaled) - ln steps(mean_var)", f"{m} model", "log_steps",
                  _groups(m, "full", (1, "random_scaled"), (-1, "mean_var")))  # fmt: skip
    return Claim(
        "C5", FINDINGS["C5"], f"{m} model", "log_steps", _groups(m, "full", (1, "random"), (-1, "mean_var")),
        "ln steps(random) - ln steps(mean_var), full data", "directional", "log_steps", model=m,
        gates=("G1", *STEPS_GATES), explained=(scale, rest),
    )  # fmt: skip


def _c6(share: float) -> Claim:
    """Share s of transfer's speed-up that transfusing the lower half gives, S = [ln R - ln T2] / [ln R - ln T], at
    least `share`: S >= s  <=>  (1 - s) ln R - ln T2 + s ln T >= 0 (for a positive speed-up of transfer, the
    precondition), a linear contrast read against 0."""
    return Claim(
        "C6", FINDINGS["C6"], "large model", "log_steps",
        _groups("large", "full", (1 - share, "random"), (-1, "transfusion:{b2}"), (share, "transfer")),
        f"{1 - share:g} ln steps(random) - ln steps(transfusion:{{b2}}) + {share:g} ln steps(transfer) >= 0: "
        f"transfusing the lower half gives at least {share:.0%} of transfer's speed-up, full data",
        "noninferiority", model="large", gates=STEPS_GATES,
        precondition=Precondition(
            "log_steps", _groups("large", "full", (1, "random"), (-1, "transfer")),
            "ln steps(random) - ln steps(transfer)", "transfer's own speed-up",
            "Transfer itself does not speed convergence here",
        ),
    )  # fmt: skip


C7 = Claim(
    "C7", FINDINGS["C7"], "large model", "auc+log_steps", (),
    "AUC(slim) - AUC(transfer) and ln steps(slim) - ln steps(transfer), full data", "equivalence", "auc",
    model="large",
    parts=(
        Claim(
            "C7", FINDINGS["C7"], "large model", "auc", _groups("large", "full", (1, "slim"), (-1, "transfer")),
            "AUC(slim) - AUC(transfer)", "equivalence", "auc", gates=("G4",),
        ),
        Claim(
            "C7", FINDINGS["C7"], "large model", "log_steps", _groups("large", "full", (1, "slim"), (-1, "transfer")),
            "ln steps(slim) - ln steps(transfer)", "equivalence", "log_steps", model="large", gates=STEPS_GATES,
        ),
    ),
    combine=AllParts(
        "a part is better or worse than transfer", "both parts equivalent",
        "not both parts equivalent, neither contradicted",
    ),
)  # fmt: skip

C8 = Claim(
    "C8", FINDINGS["C8"], "large model", "log_steps", _groups("large", "full", (1, "gabor"), (-1, "transfusion:{b1}")),
    "ln steps(gabor) - ln steps(transfusion:{b1}), full data", "equivalence", "log_steps", model="large",
    gates=("G1", *STEPS_GATES),
)  # fmt: skip


def table(c) -> tuple[Claim, ...]:
    """Every claim of the design `c` (its numbers: C6's share), in the report's order."""
    return (
        *map(_c1, MODELS),
        *map(_c2a, MODELS),
        C2B,
        C3A,
        C3B,
        *map(_c4, MODELS),
        *map(_r, MODELS),
        *map(_c5, MODELS),
        _c6(float(c.share)),
        C7,
        C8,
    )


# ---------------------------------------------------------------- secondary numbers (docs/study.md §6)


def _per_model(m) -> list[Number]:
    scope = f"{m} model"

    def number(measure: str, data: str, a: str, b: str, suffix: str = "") -> Number:
        name = f"AUC({a}) - AUC({b})" if measure == "auc" else f"ln steps({a}) - ln steps({b})"
        return Number(name + suffix, scope, measure, _groups(m, data, (1, a), (-1, b)))

    within = Number(  # the within-model C3b of round 6, now beside its null rather than a claim
        "adjusted sim_init, lowest - highest layer, random init",
        scope,
        "adjusted_sim_to_init",
        ((1, m, RANDOM, "first"), (-1, m, RANDOM, "last")),
    )
    return [
        number("log_steps", "full", "random", "transfer"),
        number("auc", "full", "mean_var", "transfer"),
        number("log_steps", "full", "transfer", "mean_var"),
        *(number("auc", data, "transfer", "random", f", {data} data") for data in ("full", "small")),
        within,
    ]


def secondary(layers: dict[str, list[str]]) -> list[Number]:
    """The secondary numbers: per model, transfer's and Mean-Var's effects and the within-model change of the lowest
    against the highest layer; for the large model, the marginal speed-up of each transfused prefix and Gabor's."""
    large = layers.get("large", [])
    chain = ["random"] + [f"transfusion:{b}" for b in large[:2]] + ["transfer"]
    marginal = [
        Number(f"marginal speed-up: ln steps({a}) - ln steps({b})", "large model", "log_steps",
               _groups("large", "full", (1, a), (-1, b)))
        for a, b in zip(chain, chain[1:])
    ]  # fmt: skip
    gabor = Number("ln steps(random) - ln steps(gabor)", "large model", "log_steps",
                   _groups("large", "full", (1, "random"), (-1, "gabor")))  # fmt: skip
    return [n for m in MODELS for n in _per_model(m)] + marginal + [gabor]
