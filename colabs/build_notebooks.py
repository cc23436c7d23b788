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
import importlib.util
import os
import subprocess
import sys

REPO_URL = ""  # the git URL of your transfusion_jax clone (or upload the repo as ./transfusion_jax_repo)
if importlib.util.find_spec("transfusion_jax") is None:
    if not os.path.exists("transfusion_jax_repo"):
        if not REPO_URL:
            raise SystemExit("Set REPO_URL to your clone's git URL, or upload the repo as transfusion_jax_repo/.")
        subprocess.check_call(["git", "clone", "--depth", "1", REPO_URL, "transfusion_jax_repo"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", "transfusion_jax_repo"])
    os.chdir("transfusion_jax_repo")
    sys.path.insert(0, os.getcwd())"""


def settings(name: str, imports: str, extra: str = "") -> str:
    return f"""\
from IPython.display import Image, Markdown, display

from transfusion_jax.experiments import {imports}

MINI = True  # True: tiny CBRs on generated data, CPU, ~1-2 minutes. False: the paper's setup on real data (GPU/TPU).
WORKDIR = os.path.abspath("colab_runs/{name}" + ("_mini" if MINI else ""))
DATA_ROOT = "/path/to/kaggle_dr"  # MINI = False: Kaggle DR 2015 folder (trainLabels.csv, train/, test/, solution csv)
PRETRAINED = "resnet50=/path/resnet50_imagenet.npz"  # MINI = False: model=checkpoint,... (transfusion_jax.pretrained)
SEEDS = [0] if MINI else [0, 1, 2]{extra}

quickstart.enable_compile_cache(WORKDIR)


def quickstart_config(**fields):
    # configs/quickstart.py at mini scale: the fine-tuning AUC passes 0.91, and a CPU runs it in a minute or two.
    c = quickstart.load_config(mini=True)
    c.update(widths=(8, 16, 32, 32), source_train=120, target_train=300, target_test=80, seeds=tuple(SEEDS))
    c.update(pretrain_steps=20, finetune_steps=30, **fields)
    return c"""


def md_table(header, rows_expr: str) -> str:
    header = "[" + ", ".join(f'"{h}"' for h in header) + "]"
    return f'table = report.markdown_table({header}, {rows_expr})\ndisplay(Markdown("\\n".join(table)))'


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
            "figures, paper_numbers, quickstart, report, sweep",
            '\nMODELS = ["resnet50", "inception_v3", "cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny"]',
        ),
    ),
    (
        "code",
        """\
SIZES = {"cbr_small 4-8-8-8": (4, 8, 8, 8), "cbr_small 8-16-32-32": (8, 16, 32, 32)}
final_auc = {}  # (model, init) -> final eval AUC per seed
if MINI:
    paths = quickstart.make_data(WORKDIR, quickstart_config())
    for name, widths in SIZES.items():
        q = quickstart_config(widths=widths, inits=("random", "transfer"))
        trained = quickstart.train_all(os.path.join(WORKDIR, name.replace(" ", "_")), paths, q)
        for init in q.inits:
            final_auc[name, init] = [trained["summaries"][init, seed]["final_eval"]["auc"] for seed in q.seeds]
else:
    kwargs = dict(pretrained=PRETRAINED, overrides=[f"data.root={DATA_ROOT}"])
    sweep.sweep("configs/retina.py", MODELS, ["random", "transfer"], SEEDS, WORKDIR, **kwargs)
    for r in report.collect(WORKDIR):
        final_auc.setdefault((r.model, r.init), []).append(r.final_auc)""",
    ),
    (
        "code",
        """\
rows = []
for (model, init), aucs in final_auc.items():
    mean, std, n = report.mean_std(aucs)
    paper = paper_numbers.TABLE1.get((model, init))
    rows.append([model, init, n, report.pct(mean, std), paper.format(1) if paper else "—"])
"""
        + md_table(["model", "init", "runs", "final AUC %", "paper AUC % (Table 1)"], "rows")
        + """
bars = {i: {m: report.mean_std(a)[0] for (m, j), a in final_auc.items() if j == i} for i in ("random", "transfer")}
png = os.path.join(WORKDIR, "performance.png")
display(Image(figures.grouped_bars(bars, png, "final eval AUC", "Random init vs transfer per model")))""",
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
ResNet-50. The analysis cells below read any finished runs (trained with `export_pretrained=True`) through
`transfusion_jax.experiments.figures`, the functions behind `python -m transfusion_jax.experiments fig2 ...`.""",
    ),
    ("code", INSTALL),
    (
        "code",
        settings(
            "representations",
            "figures, quickstart, report, run_weights, runs, sweep",
            '\nMODEL = "resnet50"  # MINI = False: the model to analyse\n'
            "MAX_IMAGES = 128 if MINI else 1024  # eval images streamed through CCA",
        ).replace("SEEDS = [0] if MINI else [0, 1, 2]", "SEEDS = [0, 1] if MINI else [0, 1, 2]  # >= 2 for Rand-Rand"),
    ),
    (
        "code",
        """\
def run_dir(init, seed):
    if MINI:
        return quickstart.run_dir(WORKDIR, init, seed)
    return runs.RunSpec("retina", MODEL, init, seed).workdir(WORKDIR)


if MINI:
    q = quickstart_config(inits=("random", "transfer"))
    quickstart.train_all(WORKDIR, quickstart.make_data(WORKDIR, q), q)
else:
    kwargs = dict(pretrained=PRETRAINED, overrides=[f"data.root={DATA_ROOT}", "export_pretrained=True"])
    sweep.sweep("configs/retina.py", [MODEL], ["random", "transfer"], SEEDS, WORKDIR, **kwargs)""",
    ),
    (
        "code",
        """\
import numpy as np

run = {(init, seed): run_weights.RunWeights(run_dir(init, seed)) for init in ("random", "transfer") for seed in SEEDS}
layers = list(run["random", SEEDS[0]].blocks)
batches = run_weights.eval_batches(run["random", SEEDS[0]].config, 32, max_images=MAX_IMAGES)
pairs = {  # Rand-ImNet: random vs transfer at the same seed; Rand-Rand: every two random seeds
    "rand_imnet": [(run["random", s], run["transfer", s]) for s in SEEDS],
    "rand_rand": [(run["random", a], run["random", b]) for i, a in enumerate(SEEDS) for b in SEEDS[i + 1 :]],
}
fig2 = figures.fig2(pairs, batches, layers)


def layer_mean(group, layer):
    return np.mean([p["per_layer"][layer] for p in fig2[group]])


rows = [[layer, f"{layer_mean('rand_imnet', layer):.3f}", f"{layer_mean('rand_rand', layer):.3f}"] for layer in layers]
"""
        + md_table(["layer", "CCA(Rand, ImNet)", "CCA(Rand, Rand)"], "rows")
        + """
top = layers[-2:]  # the paper averages the top two layers / stages
imnet, rand = (np.mean([layer_mean(group, t) for t in top]) for group in ("rand_imnet", "rand_rand"))
print(f"top two layers: CCA(Rand, ImNet) {imnet:.3f}, CCA(Rand, Rand) {rand:.3f}")""",
    ),
    (
        "code",
        """\
fig3 = figures.fig3([run[init, SEEDS[0]] for init in ("random", "transfer")], batches)
to_init = {init: r["similarity"] for init, r in zip(("random", "transfer"), fig3["runs"].values())}
change = {init: r["relative_weight_change"] for init, r in zip(("random", "transfer"), fig3["runs"].values())}
png = os.path.join(WORKDIR, "to_init.png")
display(Image(figures.grouped_bars(to_init, png, "SVCCA(init, final)", "Similarity of each layer to its init")))
png = os.path.join(WORKDIR, "change.png")
display(Image(figures.grouped_bars(change, png, "||W_T - W_0|| / ||W_0||", "Relative weight change per block")))""",
    ),
    (
        "code",
        """\
for init in ("random", "transfer"):
    paths = figures.conv1_filters(run[init, SEEDS[0]], WORKDIR, f"filters_{init}")
    for when, path in paths.items():
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
            "figures, quickstart, report, runs, sweep",
            '\nMODEL = "resnet50"  # MINI = False\n'
            "# MINI = False: the inits to compare\n"
            'INITS = ["random", "transfer", "mean_var", "gabor", "slim"]\n'
            'INITS += ["transfusion:conv1", "transfusion:block1", "transfusion:block2"]',
        ),
    ),
    (
        "code",
        """\
if MINI:
    q = quickstart_config(inits=("random", "transfer", "mean_var", "transfusion:layer1", "gabor"))
    quickstart.train_all(WORKDIR, quickstart.make_data(WORKDIR, q), q)
    inits = q.inits
else:
    kwargs = dict(pretrained=PRETRAINED, overrides=[f"data.root={DATA_ROOT}"])
    sweep.sweep("configs/hybrid.py", [MODEL], INITS, SEEDS, WORKDIR, **kwargs)
    inits = INITS


def run_dir(init, seed):
    if MINI:
        return quickstart.run_dir(WORKDIR, init, seed)
    return runs.RunSpec("hybrid", MODEL, init, seed).workdir(WORKDIR)""",
    ),
    (
        "code",
        """\
import json

import numpy as np

curves = {init: [quickstart.eval_curve(run_dir(init, seed)) for seed in SEEDS] for init in inits}
summaries = {init: [json.load(open(os.path.join(run_dir(init, s), "summary.json"))) for s in SEEDS] for init in inits}
rows = []
for init in inits:
    reached = [x["steps_to_threshold"] for x in summaries[init] if x["steps_to_threshold"] is not None]
    mean, std, n = report.mean_std([x["final_eval"]["auc"] for x in summaries[init]])
    steps = f"{np.mean(reached):,.0f} ({len(reached)}/{len(SEEDS)})" if reached else "not reached"
    rows.append([init, steps, report.pct(mean, std)])
"""
        + md_table(["init", "steps to AUC 0.91 (runs reaching it)", "final AUC %"], "rows")
        + """
display(Image(figures.auc_curves(curves, os.path.join(WORKDIR, "curves.png"), 0.91, "Eval AUC, mean over seeds")))""",
    ),
    (
        "code",
        """\
# Slim: ResNet-50 up to block2 from the checkpoint, block3/4 at half width. Mini: the configs' CPU-sized ResNet
# (one unit per stage, a random stand-in checkpoint) for a handful of steps, to show the mechanics.
if MINI:
    overrides = ["num_train_steps=4", "eval_every_steps=2", "checkpoint_every_steps=4", "progress_bar=False"]
    slim_root = os.path.join(WORKDIR, "slim")
    records = sweep.sweep("configs/hybrid.py", ["resnet50"], ["slim"], [0], slim_root, local=True, overrides=overrides)
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
