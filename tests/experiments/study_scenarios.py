"""Constructed studies (study_world) that between them take every branch of the verdicts and gates: the paper's
world, its opposite, the CPU cut, scattered and never-crossing steps, each gate failing, C6 not assessable. Plain
data plus `build`, which takes the world module to build them with: the same scenarios were fed to the code before
the study became a package (tests/experiments/data/study_verdicts_f097dd2.json) and to today's
(test_study_regression.py)."""

SCENARIOS = {
    "paper": {},
    "cpu_cut": {"models_run": ("small",)},
    "opposite": {
        "steps": {"mean_var": 300, "slim": 60, "gabor": 160, "transfusion:layer2": 90},
        "mu": {("large", "full", "transfer"): 2.5, ("small", "full", "transfer"): 2.5},
        "to_init": {
            ("large", "transfer"): [0.95, 0.90, 0.95, 0.90],
            ("small", "transfer"): [0.90, 0.80, 0.80, 0.70],
        },
        "pairs": {("large", "rand_imnet"): 0.70, ("small", "rand_imnet"): 0.45},
    },
    "scattered_mean_var": {"per_seed_steps": {"mean_var": {0: 20, 1: 400, 2: 30, 3: 250, 4: 60}}},
    "mean_var_never_crosses": {"steps": {"mean_var": None}},
    "gabor_and_layer1_never_cross": {"steps": {"gabor": None, "transfusion:layer1": None}},
    "g1_weights_unmoved": {"moved": False},
    "g2_random_features_solve": {"probe": 0.85},
    "g3_random_never_crosses": {"steps": {"random": None}},
    "g3_fails_c5_spans_margin": {"g3_spans": True},
    "g4_unstable_small_transfer": {"unstable": ("small", "full", "transfer")},
    "c6_not_assessable": {"steps": {"transfer": 95, "transfusion:layer2": 60}},
}


def build(spec: dict, w):
    """(config, measures, similarity, diagnostics) of one scenario, built with study_world module `w`."""
    c = w.config(spec.get("models_run", ("small", "large")))
    steps = dict(spec.get("steps", {}))
    for init, by_seed in spec.get("per_seed_steps", {}).items():
        steps[init] = lambda key, by_seed=by_seed: by_seed[key.seed]
    measures = w.g3_fails_c5_spans_its_margin(c) if spec.get("g3_spans") else w.world(c, steps=steps, mu=spec.get("mu"))
    if "unstable" in spec:  # the group's last evaluations swing more than its seeds differ
        for key, run in measures.items():
            if (key.model, key.data, key.init) == spec["unstable"]:
                last = sorted(run.curve)[-5:]
                run.curve.update({s: run.final_val_auc + (0.05 if i % 2 else -0.05) for i, s in enumerate(last)})
    sim = w.similar(c, to_init=spec.get("to_init"), pairs=spec.get("pairs"))
    diag = w.diagnostics(c, moved=spec.get("moved", True), probe=spec.get("probe", 0.6))
    return c, measures, sim, diag


# ---------------------------------------------------------------- what is compared: every number and string


def _number(x):
    if x is None:
        return None
    x = float(x)
    return x if x == x and abs(x) != float("inf") else repr(x)


def _interval(i):
    if i is None:
        return None
    return {"estimate": _number(i.estimate), "low": _number(i.low), "high": _number(i.high), "n": i.n,
            "method": i.method}  # fmt: skip


def _verdict(v) -> dict:
    return {
        "claim": v.claim,
        "scope": v.scope,
        "contrast": v.contrast,
        "measure": v.measure,
        "kind": v.kind,
        "margin": v.margin,
        "interval": _interval(v.interval),
        "verdict": v.verdict,
        "why": v.why,
        "checks": [[name, _verdict(c)] for name, c in v.checks],
        "parts": [_verdict(p) for p in v.parts],
        "notes": list(v.notes),
    }


def _gate(g) -> dict:
    out = {"gate": g.gate, "scope": g.scope, "passed": g.passed, "detail": g.detail}
    if g.gate == "G4":  # the only gate whose numbers the old code kept (as a dict); the new keeps a record
        values = g.values if isinstance(g.values, dict) else {"within": g.values.within, "across": g.values.across}
        out.update(within=values["within"], across=values["across"])
    return out


def record(result) -> dict:
    """Every verdict (with its checks and parts), gate and secondary number of a StudyVerdicts, as plain JSON."""
    return {
        "verdicts": [_verdict(v) for v in result.verdicts],
        "gates": [_gate(g) for g in result.gates],
        "secondary": [
            {
                "name": s.name,
                "scope": s.scope,
                "measure": s.measure,
                "interval": _interval(s.interval),
                "margin": s.margin,
                "outcome": s.outcome,
            }
            for s in result.secondary
        ],  # fmt: skip
    }
