"""The paper's findings end to end on built-in data, offline, on a laptop CPU:

  python -m transfusion_jax.experiments.quickstart --workdir DIR [--mini] [--seeds 0,1,2] [--inits ...]

1. writes a synthetic "natural image" source set (image-folder layout) and a synthetic fundus target set in the
   Kaggle DR / TFDS manual-dir layout (transfusion_jax.data.generate) under DIR/data;
2. pretrains a tiny CBR-Small (widths 8-16-32-32) on the source set and exports it as a transfusion_jax.pretrained
   checkpoint (the stand-in for ImageNet weights);
3. fine-tunes on the target (moderate DR = grade >= 2) from random, transfer, Mean-Var, transfusion of each prefix,
   and synthetic Gabor conv1, over a few seeds (DIR/runs/<init>/seed_<k>);
4. measures CCA(Rand, ImNet) vs CCA(Rand, Rand) per layer, each layer's similarity to its init, relative weight
   change, and draws AUC curves, CCA bars and conv1 filters before/after;
5. writes DIR/report.md. Every number in it is computed from the runs in DIR.

Rerunning with the same DIR skips finished data, runs and analyses (each run's summary.json is its DONE marker).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence

import numpy as np

from transfusion_jax.experiments import run_weights, runs

THRESHOLD = 0.91  # the paper's convergence measure: steps until eval AUC > 0.91 (PAPER.md 7)
MODEL = "cbr_small"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of the quickstart; DEFAULT fits ~10 minutes on 2 CPU cores, MINI is for tests (~1 minute)."""

    widths: tuple = (8, 16, 32, 32)
    image_size: int = 32
    native_size: int = 64  # generated image size (the pipeline resizes to image_size)
    source_train: int = 600
    source_test: int = 100
    source_classes: int = 10
    target_train: int = 800
    target_test: int = 200  # ~70 % of these form the evaluated 'test' (Private) split
    batch_size: int = 32
    pretrain_steps: int = 300
    finetune_steps: int = 100
    eval_every: int = 5  # the resolution of steps-to-threshold
    seeds: tuple = (0, 1, 2)
    inits: tuple = (
        "random",
        "transfer",
        "mean_var",
        "transfusion:layer1",
        "transfusion:layer2",
        "transfusion:layer3",
        "gabor",
    )
    analysis_seeds: int = 3  # seeds used for the (slower) activation-similarity analyses


DEFAULT = Settings()
MINI = Settings(
    widths=(4, 8, 8, 8),
    source_train=64,
    source_test=16,
    target_train=96,
    target_test=48,
    pretrain_steps=10,
    finetune_steps=20,
    eval_every=10,
    seeds=(0,),
    inits=("random", "transfer"),
    analysis_seeds=1,
)


def blocks(settings: Settings) -> tuple:
    return tuple(f"layer{i + 1}" for i in range(len(settings.widths)))


# ---------------------------------------------------------------- data and configs


def make_data(workdir: str, s: Settings) -> dict[str, str]:
    """Generated source and target sets in their real on-disk layouts (skipped if already complete)."""
    from transfusion_jax.data import generate  # noqa: PLC0415

    paths = {"source": os.path.join(workdir, "data", "source"), "target": os.path.join(workdir, "data", "retina")}
    ready = os.path.join(workdir, "data", "READY")
    if not os.path.exists(ready):
        generate.write_source(
            paths["source"],
            s.source_train,
            seed=0,
            size=s.native_size,
            num_classes=s.source_classes,
            num_test=s.source_test,
        )
        generate.write_tfds_dr_manual(
            paths["target"], s.target_train, seed=1, size=s.native_size, num_test=s.target_test
        )
        with open(ready, "w") as f:
            json.dump(dataclasses.asdict(s), f)
    return paths


def _common(config, s: Settings, steps: int, seed: int):
    config.model.name = MODEL
    config.model.overrides.widths = tuple(s.widths)
    config.data.image_size = s.image_size
    config.data.num_workers = 0
    config.batch_size = s.batch_size
    config.num_train_steps = steps
    config.eval_every_steps = s.eval_every
    config.log_every_steps = s.eval_every
    config.checkpoint_every_steps = steps  # one checkpoint, at the end: runs are short, resume is rarely needed
    config.keep_checkpoints = 1
    config.progress_bar = False  # the quickstart prints one line per run instead
    config.export_pretrained = True  # final weights as .npz: the pretrained model, and the analyses' inputs
    config.seed = seed
    return config


def pretrain_config(paths: dict[str, str], s: Settings):
    """The source-task pretraining: CBR on the 10-class image folder, Adam 1e-3 (a stand-in for ImageNet)."""
    from transfusion_jax.train import config_lib  # noqa: PLC0415

    c = _common(config_lib.base_config(), s, s.pretrain_steps, seed=0)
    c.data.name = "image_folder"
    c.data.root = paths["source"]
    c.train_split, c.eval_split = "train", "test"
    c.eval_every_steps = max(s.eval_every, s.pretrain_steps // 5)
    return c


def finetune_config(paths: dict[str, str], s: Settings, init: str, seed: int, pretrained: str):
    """The target task as configs/retina.py sets it up (moderate DR, Adam 1e-3), at quickstart size."""
    from transfusion_jax.train import config_lib  # noqa: PLC0415

    c = _common(config_lib.retina_config(MODEL, init), s, s.finetune_steps, seed)
    c.data.root = paths["target"]
    c.train_split, c.eval_split = "train", "test"
    c.pretrained = "" if init == "random" else pretrained  # gabor uses it only to scale the filters
    c.auc_threshold = THRESHOLD
    return c


def run_dir(workdir: str, init: str, seed: int) -> str:
    return os.path.join(workdir, "runs", runs.init_dirname(init), f"seed_{seed}")


# ---------------------------------------------------------------- training


def train_all(workdir: str, paths: dict[str, str], s: Settings, log=print) -> dict:
    """Pretrain, then every (init, seed); prints a line per run; returns {'pretrained', 'runs', 'seconds'}."""
    jobs = [("pretrain", None)] + [(init, seed) for init in s.inits for seed in s.seeds]
    pretrained = os.path.join(workdir, "runs", "pretrain", "pretrained.npz")
    seconds, summaries = {}, {}
    for n, (init, seed) in enumerate(jobs, 1):
        if init == "pretrain":
            config, wd, label = pretrain_config(paths, s), os.path.dirname(pretrained), "pretrain on source"
        else:
            config, wd = finetune_config(paths, s, init, seed, pretrained), run_dir(workdir, init, seed)
            label = f"fine-tune {init} seed {seed}"
        log(f"[{n}/{len(jobs)}] {label} ...")
        summary = runs.run(config, wd)
        seconds[f"{init}/{seed}"] = summary["seconds"]
        summaries[(init, seed)] = summary
        if init == "pretrain":
            accuracy = (summary["final_eval"] or {}).get("accuracy", float("nan"))
            took = "skipped (finished before)" if summary["skipped"] else f"{summary['seconds']:.1f}s"
            log(f"[{n}/{len(jobs)}] {label}: source accuracy {accuracy:.3f}, {took}")
        else:
            log(f"[{n}/{len(jobs)}] {label}: {runs.describe(summary)}")
    return {"pretrained": pretrained, "summaries": summaries, "seconds": seconds}


# ---------------------------------------------------------------- analyses


def eval_curve(workdir: str) -> dict[int, float]:
    """step -> eval AUC of one run, from its metrics.jsonl."""
    from transfusion_jax.train.writer import read_records  # noqa: PLC0415

    return {
        r["step"]: r["auc"]
        for r in read_records(os.path.join(workdir, "metrics.jsonl"))
        if r["split"] == "eval" and isinstance(r.get("auc"), float)
    }


def _scores(result: dict) -> dict[str, float]:
    key = "per_layer" if "per_layer" in result else "similarity"
    return {layer: float(v["score"]) for layer, v in result[key].items()}


def analyse(workdir: str, paths: dict[str, str], s: Settings, pretrained: str, log=print) -> dict:
    """CCA(Rand, ImNet) vs CCA(Rand, Rand) per layer (Fig. 2), similarity to init per layer and relative weight
    change (Fig. 3 / 5.3); SVCCA (99 % variance) with spatial positions as datapoints. Cached in analysis.json."""
    from transfusion_jax.analysis import paper, weights  # noqa: PLC0415

    out_path = os.path.join(workdir, "analysis", "analysis.json")
    if os.path.exists(out_path):
        with open(out_path) as f:
            return json.load(f)
    weights_of = {
        (init, seed): run_weights.RunWeights(run_dir(workdir, init, seed)) for init in s.inits for seed in s.seeds
    }
    apply = weights_of[(s.inits[0], s.seeds[0])].apply
    layers = list(blocks(s))
    batches = run_weights.eval_batches(weights_of[(s.inits[0], s.seeds[0])].config, s.batch_size)
    seeds = list(s.seeds[: s.analysis_seeds])
    result = {
        "method": "svcca",
        "layers": layers,
        "num_images": int(sum(len(b) for b in batches)),
        "rand_imnet": [],
        "rand_rand": [],
        "to_init": {},
        "weight_change": {},
    }
    if "transfer" in s.inits and "random" in s.inits:
        for seed in seeds:
            log(f"analysis: CCA(Rand, ImNet) seed {seed}")
            r = paper.top_layers_similarity(
                apply, weights_of[("random", seed)].final(), weights_of[("transfer", seed)].final(), batches, layers
            )
            result["rand_imnet"].append({"seeds": [seed, seed], "per_layer": _scores(r)})
        for i, a in enumerate(seeds):
            for b in seeds[i + 1 :]:
                log(f"analysis: CCA(Rand, Rand) seeds {a}, {b}")
                r = paper.top_layers_similarity(
                    apply, weights_of[("random", a)].final(), weights_of[("random", b)].final(), batches, layers
                )
                result["rand_rand"].append({"seeds": [a, b], "per_layer": _scores(r)})
    for init in [i for i in ("random", "transfer") if i in s.inits]:
        for seed in seeds:
            log(f"analysis: similarity to init, {init} seed {seed}")
            r = paper.similarity_to_init(
                apply, weights_of[(init, seed)].initial(), weights_of[(init, seed)].final(), batches, layers
            )
            result["to_init"].setdefault(init, []).append(_scores(r))
    for init in s.inits:
        result["weight_change"][init] = [
            weights.relative_weight_change(
                weights_of[(init, seed)].initial()["params"], weights_of[(init, seed)].final()["params"]
            )
            for seed in s.seeds
        ]
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    return result


def draw_filters(workdir: str, paths: dict[str, str], s: Settings, pretrained: str) -> dict[str, str]:
    """conv1 filters at init and after fine-tuning (paper Fig. 5) for random, transfer and Gabor, seed s.seeds[0]."""
    from transfusion_jax.analysis import filters  # noqa: PLC0415

    seed, out = s.seeds[0], {}
    os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
    for init in [i for i in ("random", "transfer", "gabor") if i in s.inits]:
        run = run_weights.RunWeights(run_dir(workdir, init, seed))
        for when, variables in (("init", run.initial()), ("final", run.final())):
            path = os.path.join(workdir, "figures", f"filters_{init}_{when}.png")
            filters.save_filter_grid(variables, path, blocks=blocks(s), ncols=8, scale=10)
            out[f"{init}_{when}"] = path
    return out


# ---------------------------------------------------------------- report


def _mean_std_text(values: Sequence[float], digits: int = 3) -> str:
    from transfusion_jax.experiments.report import mean_std  # noqa: PLC0415

    mean, std, n = mean_std(list(values))
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _layer_stats(items: list[dict[str, float]], layers: Sequence[str]) -> dict[str, list[float]]:
    return {layer: [d[layer] for d in items if layer in d] for layer in layers}


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import jax  # noqa: PLC0415

    return f"{model}, {os.cpu_count()} cores visible, JAX {jax.__version__} on {jax.default_backend()}"


def _steps_cell(summaries: list[dict]) -> str:
    reached = [float(x["steps_to_threshold"]) for x in summaries if x.get("steps_to_threshold") is not None]
    if not reached:
        return f"not reached (0/{len(summaries)})"
    text = _mean_std_text(reached, 0)
    return text + (f" ({len(reached)}/{len(summaries)} reached)" if len(reached) < len(summaries) else "")


def _steps_mean(summaries: list[dict]) -> float | None:
    reached = [x["steps_to_threshold"] for x in summaries if x.get("steps_to_threshold") is not None]
    return float(np.mean(reached)) if len(reached) == len(summaries) and reached else None


def _table(header, lines) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(str, l)) + " |" for l in lines
    ]


def _findings(s: Settings, by_init: dict[str, list[dict]], analysis: dict) -> list[str]:
    """What our numbers say about each of the paper's findings, computed (never assumed)."""
    from transfusion_jax.experiments import paper_numbers  # noqa: PLC0415

    steps = {init: _steps_mean(by_init[init]) for init in by_init}
    out = []

    def verdict(ok: bool) -> str:
        return f"**{'Consistent with' if ok else 'Differs from'} the paper** here."

    if {"random", "transfer", "mean_var"} <= set(steps) and None not in (
        steps["random"],
        steps["transfer"],
        steps["mean_var"],
    ):
        ok = steps["transfer"] <= steps["mean_var"] < steps["random"]  # faster than random, not than transfer
        out.append(
            "- Mean-Var (paper: " + paper_numbers.FINDINGS["mean_var"] + "): steps to threshold random "
            f"{steps['random']:.0f}, Mean-Var {steps['mean_var']:.0f}, transfer {steps['transfer']:.0f}. " + verdict(ok)
        )
    prefixes = ["random"] + [f"transfusion:{b}" for b in blocks(s)[:-1]] + ["transfer"]
    if all(p in steps and steps[p] is not None for p in prefixes):
        gains = [steps[a] - steps[b] for a, b in zip(prefixes, prefixes[1:])]
        best = int(np.argmax(gains))
        out.append(
            "- Transfusion (paper: " + paper_numbers.FINDINGS["transfusion"] + "): marginal step savings per "
            "added block "
            + ", ".join(f"{b}: {g:+.0f}" for b, g in zip(blocks(s), gains))
            + f"; largest at {blocks(s)[best]}. "
            + verdict(best == 0)
        )
    if "gabor" in steps and steps.get("gabor") is not None and steps.get("random") is not None:
        out.append(
            "- Synthetic Gabor (paper: " + paper_numbers.FINDINGS["gabor"] + f"): random {steps['random']:.0f}"
            f" vs Gabor {steps['gabor']:.0f} steps. " + verdict(steps["gabor"] < steps["random"])
        )
    to_init = analysis.get("to_init", {})
    if "random" in to_init and "transfer" in to_init:
        layers = analysis["layers"]
        rnd = {k: np.mean(v) for k, v in _layer_stats(to_init["random"], layers).items()}
        trn = {k: np.mean(v) for k, v in _layer_stats(to_init["transfer"], layers).items()}
        lowest_closest = rnd[layers[0]] >= rnd[layers[-1]] and trn[layers[0]] >= trn[layers[-1]]
        out.append(
            "- Similarity to init (paper: " + paper_numbers.FINDINGS["similarity_to_init"] + "): "
            f"{layers[0]} {rnd[layers[0]]:.3f} (random) / {trn[layers[0]]:.3f} (transfer), {layers[-1]} "
            f"{rnd[layers[-1]]:.3f} / {trn[layers[-1]]:.3f}. " + verdict(lowest_closest)
        )
    if analysis.get("rand_imnet") and analysis.get("rand_rand"):
        top = analysis["layers"][-2:]
        ri = np.mean([np.mean([d["per_layer"][l] for l in top]) for d in analysis["rand_imnet"]])
        rr = np.mean([np.mean([d["per_layer"][l] for l in top]) for d in analysis["rand_rand"]])
        paper_ri, paper_rr = paper_numbers.FIG2_CCA[MODEL]
        out.append(
            f"- CCA of the top two layers: CCA(Rand, ImNet) {ri:.3f} vs CCA(Rand, Rand) {rr:.3f}. The paper "
            f"finds them overlapping for small models (CBR-Small ≈{paper_ri.mean} vs ≈{paper_rr.mean}) and "
            f"Rand-Rand higher for ResNet-50 / Inception-v3."
        )
    return out


def write_report(
    workdir: str, s: Settings, trained: dict, analysis: dict, filter_paths: dict[str, str], timing: dict
) -> str:
    """DIR/report.md plus its PNGs under DIR/figures; returns the report's path."""
    from transfusion_jax.experiments import plots  # noqa: PLC0415

    fig_dir = os.path.join(workdir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    by_init = {init: [trained["summaries"][(init, seed)] for seed in s.seeds] for init in s.inits}
    curves = {init: [eval_curve(run_dir(workdir, init, seed)) for seed in s.seeds] for init in s.inits}
    main_inits = [i for i in ("random", "transfer", "mean_var", "gabor") if i in s.inits]
    prefix_inits = ["random"] + [i for i in s.inits if i.startswith("transfusion:")] + ["transfer"]
    prefix_inits = [i for i in prefix_inits if i in s.inits]
    plots.auc_curves(
        {i: curves[i] for i in main_inits},
        os.path.join(fig_dir, "auc_curves.png"),
        THRESHOLD,
        "Eval AUC (mean over seeds, min-max shaded)",
    )
    layers = analysis["layers"]
    lines = [
        "# Transfusion quickstart report",
        "",
        f"Everything below was computed from the runs in `{os.path.abspath(workdir)}` by "
        f"`python -m transfusion_jax.experiments.quickstart` (nothing is hard-coded; rerun to regenerate).",
        "",
        "## Setup",
        "",
        f"- Machine: {machine()}.",
        f"- Wall time of the invocation that wrote this report: {timing['wall']:.0f} s (CPU user "
        f"{timing['user']:.0f} s, system {timing['system']:.0f} s); time spent training in this invocation: "
        f"{sum(trained['seconds'].values()):.0f} s"
        + (" (some runs were finished before and skipped)." if timing.get("skipped") else "."),
        f"- Source task (ImageNet stand-in): {s.source_train} generated images of {s.source_classes} shape/colour "
        f"classes (`generate source` layout), {s.pretrain_steps} steps of Adam 1e-3.",
        f"- Target task (Retina stand-in): {s.target_train} generated fundus images in the Kaggle DR / TFDS manual "
        f"layout, binary moderate DR (grade >= 2); evaluated on the 'test' split "
        f"({analysis['num_images']} images).",
        f"- Model: CBR-Small at widths {tuple(s.widths)} (7x7 kernels), {s.image_size}x{s.image_size} inputs, batch "
        f"{s.batch_size}, Adam 1e-3, {s.finetune_steps} fine-tuning steps, eval every {s.eval_every} steps; "
        f"seeds {list(s.seeds)}.",
        f"- Convergence: steps until eval AUC first reaches {THRESHOLD} (the paper's measure), resolution "
        f"{s.eval_every} steps.",
        "",
    ]
    random_auc = [x["final_eval"]["auc"] for x in by_init.get("random", []) if x.get("final_eval")]
    if random_auc:
        mean = float(np.mean(random_auc))
        lines += [
            "## Is the synthetic task learnable?",
            "",
            f"From random init the final eval AUC is {_mean_std_text(random_auc)}: "
            + (
                "the task is learnable well above AUC 0.9."
                if mean > 0.93
                else "**below the level needed for meaningful comparisons; the numbers below are not conclusive.**"
            ),
            "",
        ]
    rows = []
    for init in s.inits:
        finals = [x["final_eval"]["auc"] for x in by_init[init] if x.get("final_eval")]
        rows.append(
            [
                init,
                len(by_init[init]),
                _mean_std_text(finals),
                _mean_std_text([x["best_auc"] for x in by_init[init]]),
                _steps_cell(by_init[init]),
            ]
        )
    lines += [
        "## Final AUC and convergence per init (paper Table 1, Fig. 6, PAPER.md 4.4)",
        "",
        *_table(["init", "runs", "final AUC (mean ± std)", "best AUC", f"steps to AUC {THRESHOLD}"], rows),
        "",
        "![AUC curves](figures/auc_curves.png)",
        "",
    ]
    if len(prefix_inits) > 2:
        plots.auc_curves(
            {i: curves[i] for i in prefix_inits},
            os.path.join(fig_dir, "auc_curves_transfusion.png"),
            THRESHOLD,
            "Weight transfusion: pretrained prefix up to each block",
        )
        rows = []
        for init in prefix_inits:
            upto = {"random": "none (random)", "transfer": f"{layers[-1]} (= full transfer)"}.get(
                init, init.split(":")[-1]
            )
            rows.append(
                [upto, _steps_cell(by_init[init]), _mean_std_text([x["final_eval"]["auc"] for x in by_init[init]])]
            )
        lines += [
            "## Weight transfusion (PAPER.md 4.6): pretrained up to block, rest random",
            "",
            *_table(["pretrained prefix", f"steps to AUC {THRESHOLD}", "final AUC"], rows),
            "",
            "![Transfusion curves](figures/auc_curves_transfusion.png)",
            "",
        ]
    if analysis["rand_imnet"] and analysis["rand_rand"]:
        ri = _layer_stats([d["per_layer"] for d in analysis["rand_imnet"]], layers)
        rr = _layer_stats([d["per_layer"] for d in analysis["rand_rand"]], layers)
        plots.grouped_bars(
            {
                "CCA(Rand, ImNet)": {l: np.mean(ri[l]) for l in layers},
                "CCA(Rand, Rand)": {l: np.mean(rr[l]) for l in layers},
            },
            os.path.join(fig_dir, "cca_per_layer.png"),
            "SVCCA similarity",
            "Trained networks compared per layer",
            errors={
                "CCA(Rand, ImNet)": {l: np.std(ri[l]) for l in layers},
                "CCA(Rand, Rand)": {l: np.std(rr[l]) for l in layers},
            },
        )
        top = layers[-2:]
        lines += [
            "## Representations: CCA(Rand, ImNet) vs CCA(Rand, Rand) (paper Fig. 2)",
            "",
            f"SVCCA (99 % variance), spatial positions as datapoints (≤ 16 per image), over the "
            f"{analysis['num_images']} eval images. Rand-ImNet pairs: random vs transfer at the same seed "
            f"({len(analysis['rand_imnet'])}); Rand-Rand pairs: two random seeds ({len(analysis['rand_rand'])}).",
            "",
            *_table(
                ["layer", "CCA(Rand, ImNet)", "CCA(Rand, Rand)"],
                [[l, _mean_std_text(ri[l]), _mean_std_text(rr[l])] for l in layers]
                + [
                    [
                        f"top two ({', '.join(top)}) mean",
                        _mean_std_text([np.mean([d["per_layer"][l] for l in top]) for d in analysis["rand_imnet"]]),
                        _mean_std_text([np.mean([d["per_layer"][l] for l in top]) for d in analysis["rand_rand"]]),
                    ]
                ],
            ),
            "",
            "![CCA per layer](figures/cca_per_layer.png)",
            "",
        ]
    if analysis["to_init"]:
        stats = {init: _layer_stats(items, layers) for init, items in analysis["to_init"].items()}
        plots.grouped_bars(
            {init: {l: np.mean(v[l]) for l in layers} for init, v in stats.items()},
            os.path.join(fig_dir, "similarity_to_init.png"),
            "SVCCA(init, final)",
            "Similarity of each layer to its initialisation",
        )
        lines += [
            "## Similarity of each layer to its initialisation (PAPER.md 5.3)",
            "",
            *_table(["layer"] + list(stats), [[l] + [_mean_std_text(stats[i][l]) for i in stats] for l in layers]),
            "",
            "![Similarity to init](figures/similarity_to_init.png)",
            "",
        ]
    change = analysis["weight_change"]
    names = list(dict.fromkeys(k for items in change.values() for d in items for k in d))
    plots.grouped_bars(
        {
            init: {k: np.mean([d[k] for d in items]) for k in names}
            for init, items in change.items()
            if init in ("random", "transfer", "mean_var", "gabor")
        },
        os.path.join(fig_dir, "weight_change.png"),
        "||W_T - W_0|| / ||W_0||",
        "Relative weight change per block",
    )
    lines += [
        "## Relative weight change ||W_T - W_0|| / ||W_0|| per block (PAPER.md 5.3)",
        "",
        *_table(
            ["init"] + names,
            [[init] + [_mean_std_text([d[k] for d in items]) for k in names] for init, items in change.items()],
        ),
        "",
        "![Weight change](figures/weight_change.png)",
        "",
    ]
    if filter_paths:
        lines += [
            "## conv1 filters before / after fine-tuning (paper Fig. 5)",
            "",
            *_table(
                ["init", "at init", "after fine-tuning"],
                [
                    [init, f"![](figures/filters_{init}_init.png)", f"![](figures/filters_{init}_final.png)"]
                    for init in ("random", "transfer", "gabor")
                    if f"{init}_init" in filter_paths
                ],
            ),
            "",
        ]
    findings = _findings(s, by_init, analysis)
    if findings:
        lines += [
            "## The paper's findings, checked on these runs",
            "",
            *findings,
            "",
            "This is a miniature, synthetic setting (tiny model, 32 px, a hundred steps): agreement or "
            "disagreement here is a smoke test of the machinery, not evidence about the paper's claims.",
            "",
        ]
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


# ---------------------------------------------------------------- entry point


def run_quickstart(workdir: str, s: Settings = DEFAULT, log=print) -> str:
    """Everything, resumable; returns the path of report.md."""
    start, cpu = time.perf_counter(), os.times()
    workdir = os.path.abspath(workdir)  # configs record paths under it; keep them valid from any directory
    os.makedirs(workdir, exist_ok=True)
    log(f"quickstart in {workdir}: {len(s.inits)} inits x {len(s.seeds)} seeds + pretraining")
    paths = make_data(workdir, s)
    trained = train_all(workdir, paths, s, log)
    analysis = analyse(workdir, paths, s, trained["pretrained"], log)
    log("drawing figures and writing the report")
    filter_paths = draw_filters(workdir, paths, s, trained["pretrained"])
    now = os.times()
    timing = {
        "wall": time.perf_counter() - start,
        "user": now.user - cpu.user + now.children_user - cpu.children_user,
        "system": now.system - cpu.system,
        "skipped": any(x["skipped"] for x in trained["summaries"].values()),
    }
    path = write_report(workdir, s, trained, analysis, filter_paths, timing)
    with open(os.path.join(workdir, "timings.jsonl"), "a") as f:
        f.write(json.dumps({**timing, "runs": trained["seconds"]}) + "\n")
    log(f"done in {timing['wall']:.0f} s: {path}")
    return path


def enable_compile_cache(workdir: str) -> None:
    """Every fine-tuning run compiles the same programs; a persistent cache (transfusion_jax.train.compile_cache)
    makes that once per quickstart: DIR/jax_cache, unless JAX_COMPILATION_CACHE_DIR is set (e.g. one cache shared
    by several workdirs)."""
    from transfusion_jax.train import compile_cache  # noqa: PLC0415

    compile_cache.enable(os.path.join(os.path.abspath(workdir), "jax_cache"), min_compile_seconds=0.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transfusion_jax.experiments.quickstart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--mini", action="store_true", help="tiny sizes for a ~1 minute smoke test")
    parser.add_argument("--seeds", default="", help="comma-separated seeds (default 0,1,2; --mini: 0)")
    parser.add_argument("--inits", default="", help="comma-separated init schemes (default: all of the quickstart's)")
    parser.add_argument("--steps", type=int, default=0, help="fine-tuning steps (default 100; --mini 20)")
    args = parser.parse_args(argv)
    s = MINI if args.mini else DEFAULT
    if args.seeds:
        s = dataclasses.replace(s, seeds=tuple(int(x) for x in args.seeds.split(",") if x))
    if args.inits:
        s = dataclasses.replace(s, inits=tuple(x for x in args.inits.split(",") if x))
    if args.steps:
        s = dataclasses.replace(s, finetune_steps=args.steps)
    enable_compile_cache(args.workdir)
    run_quickstart(args.workdir, s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
