"""The quickstart's report.md and its figures, from its runs and analyses (transfusion_jax.experiments.quickstart).

Every number is computed from the runs in the workdir; nothing is assumed. Statistics: mean ± sample std (ddof=1)
over seeds (`report.mean_std`); steps-to-threshold over the runs that reached it, with how many did.
"""

import os
import platform
from collections.abc import Sequence

import jax
import numpy as np

from transfusion_jax.experiments import figures, paper_numbers, runs
from transfusion_jax.experiments.report import markdown_table, mean_std


def _mean_std_text(values: Sequence[float], digits: int = 3) -> str:
    mean, std, _ = mean_std(list(values))
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _layer_stats(items: list[dict[str, float]], layers: Sequence[str]) -> dict[str, list[float]]:
    return {layer: [d[layer] for d in items if layer in d] for layer in layers}


def _top_means(pairs: list[dict], top: Sequence[str]) -> list[float]:
    """Per compared pair, the mean score of the `top` layers (one point of the paper's Fig. 2)."""
    return [float(np.mean([d["per_layer"][layer] for layer in top])) for d in pairs]


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores visible, JAX {jax.__version__} on {jax.default_backend()}"


def _steps_cell(summaries: list[dict]) -> str:
    reached = [float(s) for s in map(runs.test_steps_to_threshold, summaries) if s is not None]
    if not reached:
        return f"not reached (0/{len(summaries)})"
    text = _mean_std_text(reached, 0)
    return text + (f" ({len(reached)}/{len(summaries)} reached)" if len(reached) < len(summaries) else "")


def _steps_mean(summaries: list[dict]) -> float | None:
    reached = [s for s in map(runs.test_steps_to_threshold, summaries) if s is not None]
    return float(np.mean(reached)) if len(reached) == len(summaries) and reached else None


def _findings(q, by_init: dict[str, list[dict]], analysis: dict) -> list[str]:
    """What our numbers say about each of the paper's findings, computed (never assumed)."""
    steps = {init: _steps_mean(by_init[init]) for init in by_init}
    layers = analysis["layers"]
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
    prefixes = ["random"] + [f"transfusion:{b}" for b in layers[:-1]] + ["transfer"]
    if all(p in steps and steps[p] is not None for p in prefixes):
        gains = [steps[a] - steps[b] for a, b in zip(prefixes, prefixes[1:])]
        best = int(np.argmax(gains))
        out.append(
            "- Transfusion (paper: " + paper_numbers.FINDINGS["transfusion"] + "): marginal step savings per "
            "added block "
            + ", ".join(f"{b}: {g:+.0f}" for b, g in zip(layers, gains))
            + f"; largest at {layers[best]}. "
            + verdict(best == 0)
        )
    if "gabor" in steps and steps.get("gabor") is not None and steps.get("random") is not None:
        out.append(
            "- Synthetic Gabor (paper: " + paper_numbers.FINDINGS["gabor"] + f"): random {steps['random']:.0f}"
            f" vs Gabor {steps['gabor']:.0f} steps. " + verdict(steps["gabor"] < steps["random"])
        )
    to_init = analysis.get("to_init", {})
    if "random" in to_init and "transfer" in to_init:
        rnd = {k: np.mean(v) for k, v in _layer_stats(to_init["random"], layers).items()}
        trn = {k: np.mean(v) for k, v in _layer_stats(to_init["transfer"], layers).items()}
        lowest_closest = rnd[layers[0]] >= rnd[layers[-1]] and trn[layers[0]] >= trn[layers[-1]]
        out.append(
            "- Similarity to init (paper: " + paper_numbers.FINDINGS["similarity_to_init"] + "): "
            f"{layers[0]} {rnd[layers[0]]:.3f} (random) / {trn[layers[0]]:.3f} (transfer), {layers[-1]} "
            f"{rnd[layers[-1]]:.3f} / {trn[layers[-1]]:.3f}. " + verdict(lowest_closest)
        )
    if analysis.get("rand_imnet") and analysis.get("rand_rand"):
        top = layers[-2:]
        ri = np.mean(_top_means(analysis["rand_imnet"], top))
        rr = np.mean(_top_means(analysis["rand_rand"], top))
        paper_ri, paper_rr = paper_numbers.FIG2_CCA[q.model]
        out.append(
            f"- CCA of the top two layers: CCA(Rand, ImNet) {ri:.3f} vs CCA(Rand, Rand) {rr:.3f}. The paper "
            f"finds them overlapping for small models (CBR-Small ≈{paper_ri.mean} vs ≈{paper_rr.mean}) and "
            f"Rand-Rand higher for ResNet-50 / Inception-v3."
        )
    return out


def write(
    workdir: str,
    q,
    trained: dict,
    curves: dict[str, list[dict[int, float]]],
    analysis: dict,
    filter_paths: dict[str, str],
    timing: dict,
) -> str:
    """DIR/report.md plus its PNGs under DIR/figures; returns the report's path.

    trained: quickstart.train_all's result; curves: init -> per seed {step: test AUC}; analysis: quickstart.analyse's
    result; filter_paths: quickstart.draw_filters's result; timing: wall / user / system seconds, and 'skipped'.
    """
    fig_dir = os.path.join(workdir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    by_init = {init: [trained["summaries"][(init, seed)] for seed in q.seeds] for init in q.inits}
    main_inits = [i for i in ("random", "transfer", "mean_var", "gabor") if i in q.inits]
    prefix_inits = ["random"] + [i for i in q.inits if i.startswith("transfusion:")] + ["transfer"]
    prefix_inits = [i for i in prefix_inits if i in q.inits]
    figures.auc_curves(
        {i: curves[i] for i in main_inits},
        os.path.join(fig_dir, "auc_curves.png"),
        q.threshold,
        "Test AUC (mean over seeds, min-max shaded)",
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
        f"- Source task (ImageNet stand-in): {q.source_train} generated images of {q.source_classes} shape/colour "
        f"classes (`generate source` layout), {q.pretrain_steps} steps of Adam 1e-3.",
        f"- Target task (Retina stand-in): {q.target_train} generated fundus images in the Kaggle DR / TFDS manual "
        f"layout, binary moderate DR (grade >= 2); the 'validation' split (Kaggle Public) selects the step, the "
        f"'test' split (Private, {analysis['num_images']} images) is only reported.",
        f"- Model: CBR-Small at widths {tuple(q.widths)} (7x7 kernels), {q.image_size}x{q.image_size} inputs, batch "
        f"{q.batch_size}, Adam 1e-3, {q.finetune_steps} fine-tuning steps, eval every {q.eval_every} steps; "
        f"seeds {list(q.seeds)}.",
        f"- Convergence: steps until the test AUC is first above {q.threshold} (the paper's measure), resolution "
        f"{q.eval_every} steps.",
        "",
    ]
    random_auc = [a for a in map(runs.final_test_auc, by_init.get("random", [])) if a is not None]
    if random_auc:
        mean = float(np.mean(random_auc))
        lines += [
            "## Is the synthetic task learnable?",
            "",
            f"From random init the final test AUC is {_mean_std_text(random_auc)}: "
            + (
                "the task is learnable well above AUC 0.9."
                if mean > 0.93
                else "**below the level needed for meaningful comparisons; the numbers below are not conclusive.**"
            ),
            "",
        ]
    rows = []
    for init in q.inits:
        finals = [a for a in map(runs.final_test_auc, by_init[init]) if a is not None]
        selected = [a for a in map(runs.selected_test_auc, by_init[init]) if a is not None]
        rows.append(
            [init, len(by_init[init]), _mean_std_text(finals), _mean_std_text(selected), _steps_cell(by_init[init])]
        )
    lines += [
        "## Final AUC and convergence per init (paper Table 1, Fig. 6; docs/paper.md §4.4)",
        "",
        *markdown_table(
            [
                "init",
                "runs",
                "final test AUC (mean ± std)",
                "test AUC at the validation-selected step",
                f"steps to test AUC > {q.threshold}",
            ],
            rows,
        ),
        "",
        "![AUC curves](figures/auc_curves.png)",
        "",
    ]
    if len(prefix_inits) > 2:
        figures.auc_curves(
            {i: curves[i] for i in prefix_inits},
            os.path.join(fig_dir, "auc_curves_transfusion.png"),
            q.threshold,
            "Weight transfusion: pretrained prefix up to each block",
        )
        rows = []
        for init in prefix_inits:
            upto = {"random": "none (random)", "transfer": f"{layers[-1]} (= full transfer)"}.get(
                init, init.split(":")[-1]
            )
            rows.append(
                [upto, _steps_cell(by_init[init]), _mean_std_text(list(map(runs.final_test_auc, by_init[init])))]
            )
        lines += [
            "## Weight transfusion (docs/paper.md §4.6): pretrained up to block, rest random",
            "",
            *markdown_table(["pretrained prefix", f"steps to test AUC > {q.threshold}", "final test AUC"], rows),
            "",
            "![Transfusion curves](figures/auc_curves_transfusion.png)",
            "",
        ]
    if analysis["rand_imnet"] and analysis["rand_rand"]:
        ri = _layer_stats([d["per_layer"] for d in analysis["rand_imnet"]], layers)
        rr = _layer_stats([d["per_layer"] for d in analysis["rand_rand"]], layers)
        figures.grouped_bars(
            {
                "CCA(Rand, ImNet)": {layer: np.mean(ri[layer]) for layer in layers},
                "CCA(Rand, Rand)": {layer: np.mean(rr[layer]) for layer in layers},
            },
            os.path.join(fig_dir, "cca_per_layer.png"),
            "SVCCA similarity",
            "Trained networks compared per layer",
            errors={
                "CCA(Rand, ImNet)": {layer: np.std(ri[layer]) for layer in layers},
                "CCA(Rand, Rand)": {layer: np.std(rr[layer]) for layer in layers},
            },
        )
        top = layers[-2:]
        lines += [
            "## Representations: CCA(Rand, ImNet) vs CCA(Rand, Rand) (paper Fig. 2)",
            "",
            f"SVCCA (99 % variance), spatial positions as datapoints (≤ 16 per image), over the "
            f"{analysis['num_images']} test images. Rand-ImNet pairs: random vs transfer at the same seed "
            f"({len(analysis['rand_imnet'])}); Rand-Rand pairs: two random seeds ({len(analysis['rand_rand'])}).",
            "",
            *markdown_table(
                ["layer", "CCA(Rand, ImNet)", "CCA(Rand, Rand)"],
                [[layer, _mean_std_text(ri[layer]), _mean_std_text(rr[layer])] for layer in layers]
                + [
                    [
                        f"top two ({', '.join(top)}) mean",
                        _mean_std_text(_top_means(analysis["rand_imnet"], top)),
                        _mean_std_text(_top_means(analysis["rand_rand"], top)),
                    ]
                ],
            ),
            "",
            "![CCA per layer](figures/cca_per_layer.png)",
            "",
        ]
    if analysis["to_init"]:
        stats = {init: _layer_stats(items, layers) for init, items in analysis["to_init"].items()}
        figures.grouped_bars(
            {init: {layer: np.mean(v[layer]) for layer in layers} for init, v in stats.items()},
            os.path.join(fig_dir, "similarity_to_init.png"),
            "SVCCA(init, final)",
            "Similarity of each layer to its initialisation",
        )
        lines += [
            "## Similarity of each layer to its initialisation (docs/paper.md §5.3)",
            "",
            *markdown_table(
                ["layer"] + list(stats),
                [[layer] + [_mean_std_text(stats[i][layer]) for i in stats] for layer in layers],
            ),
            "",
            "![Similarity to init](figures/similarity_to_init.png)",
            "",
        ]
    change = analysis["weight_change"]
    names = list(dict.fromkeys(k for items in change.values() for d in items for k in d))
    figures.grouped_bars(
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
        "## Relative weight change ||W_T - W_0|| / ||W_0|| per block (docs/paper.md §5.3)",
        "",
        *markdown_table(
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
            *markdown_table(
                ["init", "at init", "after fine-tuning"],
                [
                    [init, f"![](figures/filters_{init}_init.png)", f"![](figures/filters_{init}_final.png)"]
                    for init in ("random", "transfer", "gabor")
                    if f"{init}_init" in filter_paths
                ],
            ),
            "",
        ]
    findings = _findings(q, by_init, analysis)
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
