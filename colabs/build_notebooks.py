"""Writes the three Colab notebooks of colabs/ from the cell sources below, so they are reviewed as code.

  python colabs/build_notebooks.py          # rewrite colabs/*.ipynb
  python colabs/build_notebooks.py --check  # exit 1 if a notebook differs from what this file builds

Each notebook runs top to bottom at mini scale on a CPU (MINI = True: tiny CBRs on generated data, a minute or two)
and at full scale when MINI = False, pointed at the real data (DATA_ROOT) and ImageNet checkpoints (PRETRAINED),
on a GPU/TPU runtime. The mini path and the full path share every analysis cell; only where runs come from differs
(the quickstart's functions vs `transfusion_jax.experiments.sweep` over configs/*.py).
"""

import os
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
INSTALL = """\
# Colab: fetch the project (its configs/ are needed too) and install it; skipped when transfusion_jax is importable.
REPO_URL = ""  # the git URL of your transfusion_jax clone (or upload the repo as ./transfusion_jax_repo)
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("transfusion_jax") is None:
    if not os.path.exists("transfusion_jax_repo"):
        if not REPO_URL:
            raise SystemExit("Set REPO_URL to the git URL of transfusion_jax, or upload the repo as transfusion_jax_repo/.")
        subprocess.check_call(["git", "clone", "--depth", "1", REPO_URL, "transfusion_jax_repo"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", "transfusion_jax_repo"])
    os.chdir("transfusion_jax_repo")
    sys.path.insert(0, os.getcwd())"""


def settings(name: str, extra: str = "") -> str:
    return f"""\
MINI = True  # True: tiny CBRs on generated data, CPU, ~1-2 minutes. False: the paper's setup on real data (GPU/TPU).
WORKDIR = os.path.abspath("colab_runs/{name}" + ("_mini" if MINI else ""))
DATA_ROOT = "/path/to/kaggle_dr"  # MINI = False: Kaggle DR 2015 folder (trainLabels.csv, train/, test/, solution csv)
PRETRAINED = "resnet50=/path/resnet50_imagenet.npz"  # MINI = False: model=checkpoint,... (transfusion_jax.pretrained)
SEEDS = [0] if MINI else [0, 1, 2]{extra}

import dataclasses
from IPython.display import Image, Markdown, display
from transfusion_jax.experiments import plots, quickstart, report, runs, sweep

quickstart.enable_compile_cache(WORKDIR)
# Mini scale: big enough for the fine-tuning AUC to pass 0.91, small enough for a CPU.
NB = dataclasses.replace(quickstart.MINI, widths=(8, 16, 32, 32), source_train=120, target_train=300,
                         target_test=80, pretrain_steps=20, finetune_steps=30, seeds=tuple(SEEDS))"""


def md_table(header, rows_expr: str) -> str:
    return f"""display(Markdown("\\n".join(["| " + " | ".join({header!r}) + " |", "|" + "---|" * {len(header)}]
                             + ["| " + " | ".join(map(str, row)) + " |" for row in {rows_expr}])))"""


PERFORMANCE = [
    (
        "md",
        """\
# Transfusion (Raghu et al., NeurIPS 2019) — 1. Performance: random init vs ImageNet transfer across model sizes

Paper Table 1: on Retina, transfer and random init reach about the same AUC, for ResNet-50 and Inception-v3 as for
the much smaller CBRs. At mini scale this trains two CBR-Small widths from random init and from a checkpoint
pretrained on a generated source set; at full scale it runs `configs/retina.py` for the paper's six models.""",
    ),
    ("code", INSTALL),
    (
        "code",
        settings(
            "performance",
            '\nMODELS = ["resnet50", "inception_v3", "cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny"]',
        ),
    ),
    (
        "code",
        """\
SIZES = {"cbr_small 4-8-8-8": (4, 8, 8, 8), "cbr_small 8-16-32-32": (8, 16, 32, 32)}
final_auc = {}  # (model, init) -> final test AUC per seed
if MINI:
    paths = quickstart.make_data(WORKDIR, NB)
    for name, widths in SIZES.items():
        s = dataclasses.replace(NB, widths=widths, inits=("random", "transfer"))
        trained = quickstart.train_all(os.path.join(WORKDIR, name.replace(" ", "_")), paths, s)
        for init in s.inits:
            final_auc[name, init] = [runs.final_test_auc(trained["summaries"][init, seed]) for seed in s.seeds]
else:
    sweep.sweep("configs/retina.py", MODELS, ["random", "transfer"], SEEDS, WORKDIR, pretrained=PRETRAINED,
                overrides=[f"data.root={DATA_ROOT}"])
    for r in report.collect(WORKDIR):
        final_auc.setdefault((r.model, r.init), []).append(r.final_auc)""",
    ),
    (
        "code",
        """\
from transfusion_jax.experiments import paper_numbers
rows = []
for (model, init), aucs in final_auc.items():
    mean, std, n = report.mean_std(aucs)
    paper = paper_numbers.TABLE1.get((model, init))
    rows.append([model, init, n, report.pct(mean, std), paper.format(1) if paper else "—"])
"""
        + md_table(["model", "init", "runs", "final AUC %", "paper AUC % (Table 1)"], "rows")
        + """
bars = {init: {model: report.mean_std(a)[0] for (model, i), a in final_auc.items() if i == init}
        for init in ("random", "transfer")}
display(Image(plots.grouped_bars(bars, os.path.join(WORKDIR, "performance.png"), "final eval AUC",
                                 "Random init vs transfer per model")))""",
    ),
    (
        "md",
        """\
At mini scale the source task is a toy, so whether transfer helps here says nothing about ImageNet; the point is the
pipeline. With `MINI = False` the table is the paper's Table 1 with our numbers beside theirs.""",
    ),
]

REPRESENTATIONS = [
    (
        "md",
        """\
# Transfusion — 2. Representations: CCA(Rand, ImNet) vs CCA(Rand, Rand), similarity to init, conv1 filters

Paper Fig. 2, 3 and 5: for large models, networks trained from random init are more similar to each other than to
transferred ones in the top layers; lower layers stay close to their initialisation; conv1 filters barely move in
ResNet-50. The analysis cells below read any finished runs (trained with `export_pretrained=True`).""",
    ),
    ("code", INSTALL),
    (
        "code",
        settings(
            "representations",
            '\nMODEL = "resnet50"  # MINI = False: the model to analyse\n'
            "MAX_IMAGES = 128 if MINI else 1024  # eval images streamed through CCA",
        ).replace("SEEDS = [0] if MINI else [0, 1, 2]", "SEEDS = [0, 1] if MINI else [0, 1, 2]  # >= 2 for Rand-Rand"),
    ),
    (
        "code",
        """\
if MINI:
    s = dataclasses.replace(NB, inits=("random", "transfer"))
    quickstart.train_all(WORKDIR, quickstart.make_data(WORKDIR, s), s)
    run_dir = lambda init, seed: quickstart.run_dir(WORKDIR, init, seed)
else:
    sweep.sweep("configs/retina.py", [MODEL], ["random", "transfer"], SEEDS, WORKDIR, pretrained=PRETRAINED,
                overrides=[f"data.root={DATA_ROOT}", "export_pretrained=True"])
    run_dir = lambda init, seed: runs.RunSpec("retina", MODEL, init, seed).workdir(WORKDIR)""",
    ),
    (
        "code",
        """\
import itertools
import numpy as np
from transfusion_jax.analysis import paper
from transfusion_jax.experiments.run_weights import RunWeights, eval_batches

weights = {(init, seed): RunWeights(run_dir(init, seed)) for init in ("random", "transfer") for seed in SEEDS}
first = weights["random", SEEDS[0]]
layers = list(first.blocks)
batches = eval_batches(first.config, 32, max_images=MAX_IMAGES)
score = lambda result: {layer: v["score"] for layer, v in result["per_layer"].items()}
rand_imnet = [score(paper.top_layers_similarity(first.apply, weights["random", s].final(),
                                                weights["transfer", s].final(), batches, layers)) for s in SEEDS]
rand_rand = [score(paper.top_layers_similarity(first.apply, weights["random", a].final(),
                                               weights["random", b].final(), batches, layers))
             for a, b in itertools.combinations(SEEDS, 2)]
rows = [[layer, f"{np.mean([r[layer] for r in rand_imnet]):.3f}", f"{np.mean([r[layer] for r in rand_rand]):.3f}"]
        for layer in layers]
"""
        + md_table(["layer", "CCA(Rand, ImNet)", "CCA(Rand, Rand)"], "rows")
        + """
top = layers[-2:]  # the paper averages the top two layers / stages
print("top two layers: CCA(Rand, ImNet) %.3f, CCA(Rand, Rand) %.3f" % (
    np.mean([np.mean([r[l] for l in top]) for r in rand_imnet]),
    np.mean([np.mean([r[l] for l in top]) for r in rand_rand])))""",
    ),
    (
        "code",
        """\
to_init, change = {}, {}
for init in ("random", "transfer"):
    w = weights[init, SEEDS[0]]
    result = paper.similarity_to_init(first.apply, w.initial(), w.final(), batches, layers)
    to_init[init] = {layer: v["score"] for layer, v in result["similarity"].items()}
    change[init] = result["relative_weight_change"]
display(Image(plots.grouped_bars(to_init, os.path.join(WORKDIR, "to_init.png"), "SVCCA(init, final)",
                                 "Similarity of each layer to its initialisation")))
display(Image(plots.grouped_bars(change, os.path.join(WORKDIR, "change.png"), "||W_T - W_0|| / ||W_0||",
                                 "Relative weight change per block")))""",
    ),
    (
        "code",
        """\
from transfusion_jax.analysis import filters
for init in ("random", "transfer"):
    w = weights[init, SEEDS[0]]
    for when, variables in (("init", w.initial()), ("final", w.final())):
        path = os.path.join(WORKDIR, f"filters_{init}_{when}.png")
        filters.save_filter_grid(variables, path, blocks=layers, ncols=8, scale=8)
        print(init, when)
        display(Image(path))""",
    ),
]

CONVERGENCE = [
    (
        "md",
        """\
# Transfusion — 3. Convergence: Mean-Var, weight transfusion, Slim, synthetic Gabor

Paper Fig. 6 and the hybrid figures: steps until eval AUC > 0.91. Transfer converges fastest; Mean-Var init (only the
pretrained weights' scale) and synthetic Gabor conv1 sit between transfer and random; reusing conv1 gives the largest
marginal gain; Slim (pretrained up to block2, the rest at half width) matches transfer.""",
    ),
    ("code", INSTALL),
    (
        "code",
        settings(
            "convergence",
            '\nMODEL = "resnet50"  # MINI = False\n'
            'INITS = ["random", "transfer", "mean_var", "transfusion:conv1", '
            '"transfusion:block1", "transfusion:block2", "gabor", "slim"]  # MINI = False',
        ),
    ),
    (
        "code",
        """\
if MINI:
    s = dataclasses.replace(NB, inits=("random", "transfer", "mean_var", "transfusion:layer1", "gabor"))
    quickstart.train_all(WORKDIR, quickstart.make_data(WORKDIR, s), s)
    inits, run_dir = s.inits, lambda init, seed: quickstart.run_dir(WORKDIR, init, seed)
else:
    sweep.sweep("configs/hybrid.py", [MODEL], INITS, SEEDS, WORKDIR, pretrained=PRETRAINED,
                overrides=[f"data.root={DATA_ROOT}"])
    inits, run_dir = INITS, lambda init, seed: runs.RunSpec("hybrid", MODEL, init, seed).workdir(WORKDIR)""",
    ),
    (
        "code",
        """\
import json
curves = {init: [quickstart.eval_curve(run_dir(init, seed)) for seed in SEEDS] for init in inits}
summaries = {init: [json.load(open(os.path.join(run_dir(init, seed), "summary.json"))) for seed in SEEDS]
             for init in inits}
rows = []
for init in inits:
    reached = [s for s in map(runs.test_steps_to_threshold, summaries[init]) if s is not None]
    mean, std, n = report.mean_std([runs.final_test_auc(x) for x in summaries[init]])
    rows.append([init, f"{np.mean(reached):,.0f} ({len(reached)}/{len(SEEDS)})" if reached else "not reached",
                 report.pct(mean, std)])
""".replace("import json", "import json\nimport numpy as np")
        + md_table(["init", "steps to test AUC > 0.91 (runs reaching it)", "final test AUC %"], "rows")
        + """
display(Image(plots.auc_curves(curves, os.path.join(WORKDIR, "curves.png"), 0.91, "Test AUC, mean over seeds")))""",
    ),
    (
        "code",
        """\
# Slim: ResNet-50 up to block2 from the checkpoint, block3/4 at half width. Mini: the configs' CPU-sized ResNet
# (one unit per stage, a random stand-in checkpoint) for a handful of steps, to show the mechanics.
if MINI:
    records = sweep.sweep("configs/hybrid.py", ["resnet50"], ["slim"], [0], os.path.join(WORKDIR, "slim"), local=True,
                          overrides=["num_train_steps=4", "eval_every_steps=2", "checkpoint_every_steps=4",
                                     "progress_bar=False"])
    print(records[0]["status"], runs.describe(records[0]["summary"]))
else:
    print(report.render(WORKDIR))  # the convergence table beside the paper's steps (Slim 8,208 vs transfer 8,008)""",
    ),
]


def build(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    for i, (kind, source) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        cell.id = f"cell-{i:02d}"  # stable ids keep the files reproducible
        nb.cells.append(cell)
    return nb


NOTEBOOKS = {
    "1_performance.ipynb": PERFORMANCE,
    "2_representations.ipynb": REPRESENTATIONS,
    "3_convergence.ipynb": CONVERGENCE,
}


def main(argv) -> int:
    stale = []
    for name, cells in NOTEBOOKS.items():
        path, text = os.path.join(HERE, name), nbformat.writes(build(cells)) + "\n"
        if "--check" in argv:
            if not os.path.exists(path) or open(path).read() != text:
                stale.append(name)
        else:
            with open(path, "w") as f:
                f.write(text)
    if stale:
        print(f"Out of date (run python colabs/build_notebooks.py): {', '.join(stale)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
