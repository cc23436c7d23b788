"""The paper's claims as the study tests them (docs/study.md §6): one entry per claim and scope, in the report's
order, and the secondary numbers reported without a verdict. Adding a claim is adding an entry here (and, if no
measure of `contrasts.MEASURES` fits, its measure there); tests/experiments/test_study_claims.py shows one added.

An entry: the claim's id and the paper's words; its scope (a row of the report); its measure and the contrast's
terms in that measure's terms (`contrasts`), in words too; the margin it is read against (a field of the design's
`margins`); its kind, the direction the paper states ('equivalent': inside +-margin; 'greater': above +margin;
`analysis.stats.CLAIMS`); the gates that can override it (G1: "not testable"; G3, G4: "inconclusive"; G2: a note;
`verdicts`); whether the measure's other variants are shown beside it; and, for a few claims, a precondition or
parts. Text and init names may name the claim model's blocks: {first}, {last}, {b1}, {b2}, ...
"""

import dataclasses

from transfusion_jax.experiments.study.design import MODELS

FINDINGS = {
    "C1": "With plenty of data, transfer and random init reach comparable performance.",
    "C2a": "Transfer helps more with little data.",
    "C2b": "... and mainly for large models.",
    "C3a": "Larger models change less through training.",
    "C3b": "The lowest layers change least.",
    "C4": "Feature reuse is mostly restricted to the lowest (two) layers.",
    "R": "Large models: random-init representations are more similar to each other than to transfer-trained ones; "
    "small models: they overlap.",
    "C5": "Mean-Var init speeds convergence over random init.",
    "C6": "Transfusing the lowest blocks gives most of the convergence speed-up of full transfer.",
    "C7": "Slim (pretrained lowest blocks, a halved random top) matches full transfer.",
    "C8": "Synthetic Gabor filters in conv1 have the same effect as pretrained conv1 weights.",
}


@dataclasses.dataclass(frozen=True)
class Precondition:
    """A contrast whose interval must come out `outcome` (`stats.outcome`) for the claim to be assessable; otherwise
    the verdict is "not assessable": '<failure> (<contrast>: <found>), so <claim> is not assessable (...)'."""

    measure: str
    terms: tuple
    contrast: str
    what: str
    failure: str
    outcome: str = "better"


@dataclasses.dataclass(frozen=True)
class AllParts:
    """A claim of several parts: contradicted if any part is, supported if all are; the reasons in words."""

    contradicted: str
    supported: str
    otherwise: str


@dataclasses.dataclass(frozen=True)
class Claim:
    id: str
    finding: str  # the paper's words
    scope: str  # the report's row: 'small model', 'large model', 'large - small model'
    measure: str  # a key of contrasts.MEASURES
    terms: tuple  # the contrast, in the measure's terms
    contrast: str  # the contrast in words
    margin: str  # a field of the design's margins
    kind: str  # 'equivalent' | 'greater' (analysis.stats.CLAIMS): the direction the paper states
    model: str = ""  # the model whose gates G1-G3 apply and whose blocks the text names ('': none)
    gates: tuple[str, ...] = ()  # the gates that can override the verdict
    beside: bool = True  # the measure's other variants shown beside the verdict
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
        )


def _groups(model: str, data: str, *signed_inits) -> tuple:
    """((c_a, model, data, a), (c_b, model, data, b), ...) from (c_a, a), (c_b, b), ...: one training set's groups."""
    return tuple((c, model, data, init) for c, init in signed_inits)


RANDOM = ((1, "random"),)
REUSE = ((1, "transfer"), (-1, "random"))  # reuse(l) = sim_init(l | transfer) - sim_init(l | random)
STEPS_GATES = ("G2", "G3")


def _c1(m):
    return Claim(
        "C1", FINDINGS["C1"], f"{m} model", "auc", _groups(m, "full", (1, "transfer"), (-1, "random")),
        "AUC(transfer) - AUC(random), full data", "auc", "equivalent", gates=("G4",),
    )  # fmt: skip


def _c2a(m):
    terms = _groups(m, "small", (1, "transfer"), (-1, "random")) + _groups(m, "full", (-1, "transfer"), (1, "random"))
    return Claim(
        "C2a", FINDINGS["C2a"], f"{m} model", "auc", terms,
        "[AUC(transfer) - AUC(random)] small data - [same] full data", "auc", "greater", gates=("G4",),
    )  # fmt: skip


C2B = Claim(
    "C2b", FINDINGS["C2b"], "large - small model", "auc",
    _groups("large", "small", (1, "transfer"), (-1, "random"))
    + _groups("small", "small", (-1, "transfer"), (1, "random")),
    "[AUC(transfer) - AUC(random)] small data: large - small model", "auc", "greater", gates=("G4",),
)  # fmt: skip

C3A = Claim(
    "C3a", FINDINGS["C3a"], "large - small model", "sim_to_init",
    ((1, "large", RANDOM, "all"), (-1, "small", RANDOM, "all")),
    "mean over layers of sim_init, random init, full data", "similarity", "greater",
)  # fmt: skip


def _c3b(m):
    return Claim(
        "C3b", FINDINGS["C3b"], f"{m} model", "sim_to_init", ((1, m, RANDOM, "first"), (-1, m, RANDOM, "last")),
        "sim_init({first}) - sim_init({last}), random init, full data", "similarity", "greater", model=m,
    )  # fmt: skip


def _c4(m):
    return Claim(
        "C4", FINDINGS["C4"], f"{m} model", "sim_to_init", ((1, m, REUSE, "lower half"), (-1, m, REUSE, "upper half")),
        "reuse(l) = sim_init(l | transfer) - sim_init(l | random); mean over the lower half of the layers - mean over "
        "the upper half", "similarity", "greater",
    )  # fmt: skip


def _r(m, kind):
    return Claim(
        "R", FINDINGS["R"], f"{m} model", "seed_pairs",
        ((1, m, "rand_rand", "upper half"), (-1, m, "rand_imnet", "upper half")),
        "mean sim(R_i, R_j) over seeds i < j - mean sim(R_i, T_j) over seeds i != j, upper half of the layers",
        "similarity", kind,
    )  # fmt: skip


def _c5(m):
    return Claim(
        "C5", FINDINGS["C5"], f"{m} model", "log_steps", _groups(m, "full", (1, "random"), (-1, "mean_var")),
        "ln steps(random) - ln steps(mean_var), full data", "log_steps", "greater", model=m, gates=("G1", *STEPS_GATES),
    )  # fmt: skip


C6 = Claim(
    "C6", FINDINGS["C6"], "large model", "log_steps",
    _groups("large", "full", (1, "random"), (-2, "transfusion:{b2}"), (1, "transfer")),
    "ln steps(random) - 2 ln steps(transfusion:{b2}) + ln steps(transfer): the speed-up of the lower half minus that "
    "of the upper half, full data", "log_steps", "greater", model="large", gates=STEPS_GATES,
    precondition=Precondition(
        "log_steps", _groups("large", "full", (1, "random"), (-1, "transfer")),
        "ln steps(random) - ln steps(transfer)", "transfer's own speed-up",
        "Transfer itself does not speed convergence here",
    ),
)  # fmt: skip

C7 = Claim(
    "C7", FINDINGS["C7"], "large model", "auc+log_steps", (),
    "AUC(slim) - AUC(transfer) and ln steps(slim) - ln steps(transfer), full data", "auc", "equivalent",
    model="large",
    parts=(
        Claim(
            "C7", FINDINGS["C7"], "large model", "auc", _groups("large", "full", (1, "slim"), (-1, "transfer")),
            "AUC(slim) - AUC(transfer)", "auc", "equivalent", gates=("G4",),
        ),
        Claim(
            "C7", FINDINGS["C7"], "large model", "log_steps", _groups("large", "full", (1, "slim"), (-1, "transfer")),
            "ln steps(slim) - ln steps(transfer)", "log_steps", "equivalent", model="large", gates=STEPS_GATES,
        ),
    ),
    combine=AllParts(
        "a part is better or worse than transfer", "both parts equivalent",
        "not both parts equivalent, neither contradicted",
    ),
)  # fmt: skip

C8 = Claim(
    "C8", FINDINGS["C8"], "large model", "log_steps", _groups("large", "full", (1, "gabor"), (-1, "transfusion:{b1}")),
    "ln steps(gabor) - ln steps(transfusion:{b1}), full data", "log_steps", "equivalent", model="large",
    gates=("G1", *STEPS_GATES),
)  # fmt: skip

CLAIMS: tuple[Claim, ...] = (
    *map(_c1, MODELS),
    *map(_c2a, MODELS),
    C2B,
    C3A,
    *map(_c3b, MODELS),
    *map(_c4, MODELS),
    _r("large", "greater"),
    _r("small", "equivalent"),
    *map(_c5, MODELS),
    C6,
    C7,
    C8,
)


# ---------------------------------------------------------------- secondary numbers (docs/study.md §6)


@dataclasses.dataclass(frozen=True)
class Number:
    """A contrast the design reports with its interval and where it lies against the margin, without a verdict."""

    name: str
    scope: str
    measure: str  # 'auc' | 'log_steps'
    terms: tuple


def _per_model(m) -> list[Number]:
    scope = f"{m} model"

    def number(measure: str, data: str, a: str, b: str, suffix: str = "") -> Number:
        name = f"AUC({a}) - AUC({b})" if measure == "auc" else f"ln steps({a}) - ln steps({b})"
        return Number(name + suffix, scope, measure, _groups(m, data, (1, a), (-1, b)))

    return [
        number("log_steps", "full", "random", "transfer"),
        number("auc", "full", "mean_var", "transfer"),
        number("log_steps", "full", "transfer", "mean_var"),
        *(number("auc", data, "transfer", "random", f", {data} data") for data in ("full", "small")),
    ]


def secondary(layers: dict[str, list[str]]) -> list[Number]:
    """The secondary numbers: per model, transfer's and Mean-Var's effects; for the large model, the marginal
    speed-up of transfusing each further block (random, transfusion of block 1, 1-2, ..., transfer) and Gabor's."""
    chain = ["random"] + [f"transfusion:{b}" for b in layers.get("large", [])[:-1]] + ["transfer"]
    marginal = [
        Number(f"marginal speed-up: ln steps({a}) - ln steps({b})", "large model", "log_steps",
               _groups("large", "full", (1, a), (-1, b)))
        for a, b in zip(chain, chain[1:])
    ]  # fmt: skip
    gabor = Number("ln steps(random) - ln steps(gabor)", "large model", "log_steps",
                   _groups("large", "full", (1, "random"), (-1, "gabor")))  # fmt: skip
    return [n for m in MODELS for n in _per_model(m)] + marginal + [gabor]
