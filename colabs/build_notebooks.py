"""Writes the four Colab notebooks of colabs/ from the cell sources below, so they are reviewed as code.

  python colabs/build_notebooks.py          # rewrite colabs/*.ipynb
  python colabs/build_notebooks.py --check  # exit 1 if a notebook differs from what this file builds

Each notebook runs top to bottom at mini scale on a CPU (MINI = True: tiny CBRs on generated data, a minute or two)
and at full scale when MINI = False, pointed at the real data (DATA_ROOT) and ImageNet checkpoints (PRETRAINED),
on a GPU/TPU runtime. The mini path and the full path share every analysis cell; only where runs come from differs
(`transfusion_jax.experiments.toy_runs` vs `transfusion_jax.experiments.sweep` over configs/*.py). The fourth
notebook shows the instruments beyond the paper (feature reuse, probes, resilience, interpolation, similarity sanity
checks, fine-tuning protocols, calibration).
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


def toy_config(**fields):
    # Toy runs (experiments.toy_runs): the fine-tuning AUC passes 0.91, and a CPU runs them in a minute or two.
    c = toy_runs.load_config()
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
            "figures, paper_numbers, quickstart, report, runs, sweep, toy_runs",
            '\nMODELS = ["resnet50", "inception_v3", "cbr_larget", "cbr_largew", "cbr_small", "cbr_tiny"]',
        ),
    ),
    (
        "code",
        """\
SIZES = {"cbr_small 4-8-8-8": (4, 8, 8, 8), "cbr_small 8-16-32-32": (8, 16, 32, 32)}
final_auc = {}  # (model, init) -> final test AUC per seed
if MINI:
    paths = toy_runs.make_data(WORKDIR, toy_config())
    for name, widths in SIZES.items():
        q = toy_config(widths=widths, inits=("random", "transfer"))
        trained = toy_runs.train_all(os.path.join(WORKDIR, name.replace(" ", "_")), paths, q)
        for init in q.inits:
            final_auc[name, init] = [runs.final_test_auc(trained["summaries"][init, seed]) for seed in q.seeds]
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
display(Image(figures.grouped_bars(bars, png, "final test AUC", "Random init vs transfer per model")))""",
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
            "figures, quickstart, report, run_weights, runs, sweep, toy_runs",
            '\nMODEL = "resnet50"  # MINI = False: the model to analyse\n'
            "MAX_IMAGES = 128 if MINI else 1024  # test images streamed through CCA",
        ).replace("SEEDS = [0] if MINI else [0, 1, 2]", "SEEDS = [0, 1] if MINI else [0, 1, 2]  # >= 2 for Rand-Rand"),
    ),
    (
        "code",
        """\
def run_dir(init, seed):
    if MINI:
        return toy_runs.run_dir(WORKDIR, init, seed)
    return runs.RunSpec("retina", MODEL, init, seed).workdir(WORKDIR)


if MINI:
    q = toy_config(inits=("random", "transfer"))
    toy_runs.train_all(WORKDIR, toy_runs.make_data(WORKDIR, q), q)
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

Paper Fig. 6 and the hybrid figures: steps until test AUC > 0.91. Transfer converges fastest; Mean-Var init (only the
pretrained weights' scale) and synthetic Gabor conv1 sit between transfer and random; reusing conv1 gives the largest
marginal gain; Slim (pretrained up to block2, the rest at half width) matches transfer.""",
    ),
    ("code", INSTALL),
    (
        "code",
        settings(
            "convergence",
            "figures, quickstart, report, runs, sweep, toy_runs",
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
    q = toy_config(inits=("random", "transfer", "mean_var", "transfusion:layer1", "gabor"))
    toy_runs.train_all(WORKDIR, toy_runs.make_data(WORKDIR, q), q)
    inits = q.inits
else:
    kwargs = dict(pretrained=PRETRAINED, overrides=[f"data.root={DATA_ROOT}"])
    sweep.sweep("configs/hybrid.py", [MODEL], INITS, SEEDS, WORKDIR, **kwargs)
    inits = INITS


def run_dir(init, seed):
    if MINI:
        return toy_runs.run_dir(WORKDIR, init, seed)
    return runs.RunSpec("hybrid", MODEL, init, seed).workdir(WORKDIR)""",
    ),
    (
        "code",
        """\
import json

import numpy as np

curves = {init: [toy_runs.eval_curve(run_dir(init, seed)) for seed in SEEDS] for init in inits}
summaries = {init: [json.load(open(os.path.join(run_dir(init, s), "summary.json"))) for s in SEEDS] for init in inits}
rows = []
for init in inits:
    reached = [s for s in map(runs.test_steps_to_threshold, summaries[init]) if s is not None]
    mean, std, n = report.mean_std([runs.final_test_auc(x) for x in summaries[init]])
    steps = f"{np.mean(reached):,.0f} ({len(reached)}/{len(SEEDS)})" if reached else "not reached"
    rows.append([init, steps, report.pct(mean, std)])
"""
        + md_table(["init", "steps to test AUC > 0.91 (runs reaching it)", "final test AUC %"], "rows")
        + """
display(Image(figures.auc_curves(curves, os.path.join(WORKDIR, "curves.png"), 0.91, "Test AUC, mean over seeds")))""",
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


# The last section of the fourth notebook: an in-domain self-supervised encoder as the init (transfusion_jax.ssl).
SELF_SUPERVISED = [
    (
        "md",
        """\
## What can replace ImageNet: self-supervised pretraining on your own unlabeled images

`ssl.pretrain_folder(FOLDER, OUT)` pretrains an encoder with SimCLR (or BYOL) on every image under a folder, labels
unread, and writes `OUT` as a checkpoint like any other: `init=transfer`, `transfusion:<block>`, Mean-Var and the
probes take it (`python -m transfusion_jax.main --config=configs/ssl.py:MODEL,simclr` is the same run from the
command line; docs/ssl.md has the recipe and where it departs from the papers). Here the folder is the target
task's own training images. Then: fine-tuning from it beside random init and the source ("ImageNet") checkpoint,
and a linear probe per block of each frozen encoder. At mini scale a few epochs on a few hundred images show the
mechanics, not the science.""",
    ),
    (
        "code",
        """\
from transfusion_jax import ssl

SSL_GROUP = "in_domain_ssl"  # fine-tuning runs from the self-supervised encoder
SSL_NPZ = os.path.join(WORKDIR, "ssl_pretrain", "pretrained.npz")
if MINI:  # the target's training images; the model and size of the runs above
    folder, recipe = os.path.join(paths["target"], "train"), {}
    size = dict(model_overrides={"widths": tuple(q.widths)}, image_size=q.image_size, epochs=4, batch_size=32)
else:  # the Kaggle DR training images at 224 px, with SimCLR's own recipe (LARS, 100 epochs of batch 256)
    folder, size = os.path.join(DATA_ROOT, "train"), dict(image_size=224, epochs=100, batch_size=256)
    recipe = dict(overrides=["optimizer.name=lars", "optimizer.base_learning_rate=0.3", "optimizer.weight_decay=1e-6",
                             "optimizer.warmup_epochs=10", "ssl.temperature=0.1", "ssl.projector.hidden_dim=0",
                             "ssl.projector.out_dim=128", "data.cache_decoded=False"])  # fmt: skip
summary = ssl.pretrain_folder(
    folder, SSL_NPZ, workdir=os.path.dirname(SSL_NPZ) + "_run", model=MODEL, method="simclr",
    resize_mode="center_crop", **size, **recipe,
)  # fmt: skip
print(f"SimCLR: {summary['num_train_steps']} steps on {summary['train_examples']} images, final loss "
      f"{summary['final']['loss']:.3f}, {summary['seconds']:.0f} s")  # fmt: skip
for seed in SEEDS:
    result = runs.run(config_for("transfer", seed, [f"pretrained={SSL_NPZ}"]), run_dir(SSL_GROUP, "transfer", seed))
    print(f"fine-tuned from the SSL encoder, seed {seed}: {runs.describe(result)}")""",
    ),
    (
        "code",
        """\
# Test AUC (validation-selected step) of each init, and a linear probe per block of each frozen encoder (the runs'
# init.npz: random, the source checkpoint, the SSL encoder) fitted on the training split, scored on validation.
import json

inits = {
    "random": (GROUP, "random"),
    "source (ImageNet) transfer": (GROUP, "transfer"),
    "SSL transfer": (SSL_GROUP, "transfer"),
}
loaded = [run_weights.RunWeights(run_dir(g, i, SEEDS[0])) for g, i in inits.values()]
probed = instruments.probe_runs(loaded, kinds=("linear",), batch_size=32)
display(Image(figures.save(probed, ANALYSES, "probes_ssl")[1]))
rows = []
for (name, (g, i)), r in zip(inits.items(), probed["runs"].values()):
    summaries = [json.load(open(os.path.join(run_dir(g, i, s), "summary.json"))) for s in SEEDS]
    aucs = " ".join(f"{runs.selected_test_auc(x):.3f}" for x in summaries)
    rows.append([name, aucs] + [f"{r['init']['linear'][b]['auc']:.3f}" for b in loaded[0].blocks])
table = report.markdown_table(["init", "test AUC per seed"] + [f"probe at init: {b}" for b in loaded[0].blocks], rows)
display(Markdown("\\n".join(table)))""",
    ),
    (
        "md",
        """\
### The pre-registered question: does in-domain SSL reach ImageNet transfer on little data?

`python -m transfusion_jax.experiments.ssl_study --workdir DIR` answers it in the miniature study's world (design
fixed before the run: docs/ssl_study.md; ~6 min on 2 CPU cores): random init, the source ("ImageNet") checkpoint and
SimCLR on the target's 2,000 unlabeled training images, each fine-tuned on 200 labelled images with 5 seeds; S1 is
non-inferiority of SSL against transfer at -0.02 AUC, S0 and S2 ask whether transfer and SSL beat random init; per
block, probes of each init and similarity to init beside its nulls. The same call from Python, here at the tests'
size when MINI (its numbers mean nothing; the published run is docs/ssl_report/report.md).""",
    ),
    (
        "code",
        """\
from transfusion_jax.experiments.ssl_study import design as ssl_design
from transfusion_jax.experiments.ssl_study import run as ssl_run

ssl_study_dir = os.path.join(WORKDIR, "ssl_study")  # its own DIR: generated data, CPU, either way
ssl_run.run_study(ssl_study_dir, ssl_design.get_config("mini" if MINI else "default"))
verdicts = json.load(open(os.path.join(ssl_study_dir, "ssl_study.json")))["verdicts"]
rows = [[v["claim"], v["contrast"], f"{v['interval']['estimate']:+.3f} [{v['interval']['low']:+.3f}, "
         f"{v['interval']['high']:+.3f}]", v["verdict"]] for v in verdicts]  # fmt: skip
display(Markdown("\\n".join(report.markdown_table(["claim", "contrast", "effect [95 %]", "verdict"], rows))))
display(Image(os.path.join(ssl_study_dir, "figures", "ssl_forest.png")))
display(Image(os.path.join(ssl_study_dir, "figures", "ssl_similarity_svcca.png")))""",
    ),
]

BEYOND = [
    (
        "md",
        """\
# Transfusion — 4. Beyond the paper: where transfer helps, measured directly

The work that followed Transfusion measured feature reuse more directly. This notebook trains random, transfer,
Mean-Var ("statistics transfer") and weights-below-statistics-above (`transfusion:<block>+mean_var`) runs over two
seeds, a linear probe, an LP-FT run and a block-shuffled run, then applies every instrument of
`transfusion_jax.experiments.instruments` (the functions behind `python -m transfusion_jax.experiments probes ...`):
the feature-reuse decomposition (Matsoukas et al. 2022), layer-wise k-NN and linear probes, re-initialisation
resilience, linear interpolation between solutions (Neyshabur et al. 2020), sanity checks of the similarity measures
(Ding et al. 2021) and reliability diagrams. Nothing is chosen on the test split: probes fit on the training split
and score on validation, resilience and interpolation report on validation. At mini scale (tiny CBRs, generated
data, a 20-step pretrain as the "ImageNet" checkpoint) the numbers show the mechanics, not the science.""",
    ),
    ("code", INSTALL),
    (
        "code",
        settings(
            "beyond",
            "figures, instruments, quickstart, report, run_weights, runs, sweep, toy_runs",
            '\nMODEL = "cbr_small" if MINI else "resnet50"\n'
            'GROUP = "mini" if MINI else "hybrid"  # the sweep group of the init comparison\n'
            'HYBRID = "transfusion:" + ("layer2" if MINI else "block2") + "+mean_var"  # weights, then Mean-Var\n'
            'INITS = ["random", "transfer", "mean_var", HYBRID]\n'
            "PROTOCOLS = {  # group -> overrides of a transfer run\n"
            '    "linear_probe": ["finetune.protocol=linear_probe"],\n'
            '    "lp_ft": ["finetune.protocol=lp_ft", f"finetune.probe_steps={10 if MINI else 5005}"],\n'
            "    # Tiles of 8 px at 32 px (4 x 4 tiles); full scale 84 px tiles need an input size they divide: 588.\n"
            '    "block_shuffle": ["data.block_shuffle.block_size=8"]\n'
            "    if MINI\n"
            '    else ["data.image_size=588", "data.block_shuffle.block_size=84"],\n'
            "}\n"
            'ANALYSES = os.path.join(WORKDIR, "analyses")  # where the report finds the instruments\' JSON',
        ).replace(
            "SEEDS = [0] if MINI else [0, 1, 2]", "SEEDS = [0, 1] if MINI else [0, 1, 2, 3, 4]  # >= 2: intervals"
        ),
    ),
    (
        "code",
        """\
from transfusion_jax.train import config_lib


def run_dir(group, init, seed):
    return runs.RunSpec(group, MODEL, init, seed).workdir(WORKDIR)


if MINI:
    q = toy_config()
    paths = toy_runs.make_data(WORKDIR, q)
    pretrained = os.path.join(WORKDIR, "pretrain", "pretrained.npz")
    runs.run(toy_runs.pretrain_config(paths, q), os.path.dirname(pretrained))

    def config_for(init, seed, overrides=()):
        return config_lib.apply_overrides(toy_runs.finetune_config(paths, q, init, seed, pretrained), overrides)

else:
    module, lookup = runs.load_config_module("configs/hybrid.py"), runs.parse_pretrained(PRETRAINED)
    common = [f"data.root={DATA_ROOT}", "export_pretrained=True"]

    def config_for(init, seed, overrides=()):
        spec = runs.RunSpec("hybrid", MODEL, init, seed)
        return sweep.build_config(module, spec, local=False, pretrained=lookup, overrides=[*common, *overrides])


jobs = [(GROUP, init, seed, []) for init in INITS for seed in SEEDS]
jobs += [(group, "transfer", seed, o) for group, o in PROTOCOLS.items() for seed in (SEEDS[:1] if MINI else SEEDS)]
for group, init, seed, overrides in jobs:
    summary = runs.run(config_for(init, seed, overrides), run_dir(group, init, seed))
    print(f"{group} {init} seed {seed}: {runs.describe(summary)}")""",
    ),
    (
        "md",
        """\
## Feature reuse: how much of transfer's gain needs the pretrained features themselves?

Gain = transfer - random; share = (transfer - Mean-Var) / (transfer - random), the part of the gain that Mean-Var's
statistics alone do not recover, with Fieller's interval over seeds; "undefined" when the gain's interval includes
0.""",
    ),
    (
        "code",
        """\
results = report.collect(WORKDIR)
_, png = figures.save(instruments.reuse_decomposition(results), ANALYSES)
display(Markdown("\\n".join(report.reuse_section(results))))
display(Image(png))""",
    ),
    (
        "code",
        """\
# Layer-wise probes at init and after fine-tuning: k-NN (cosine, k = 20) and logistic regression per block.
probed = [(GROUP, "random"), (GROUP, "transfer"), ("linear_probe", "transfer")]
probes = instruments.probe_runs([run_weights.RunWeights(run_dir(g, i, SEEDS[0])) for g, i in probed], batch_size=32)
display(Image(figures.save(probes, ANALYSES)[1]))
rows = [
    [f"{g}/{i}", b, f"{r['init']['linear'][b]['auc']:.3f}", f"{r['final']['linear'][b]['auc']:.3f}"]
    for (g, i), r in zip(probed, probes["runs"].values())
    for b in r["final"]["layers"]
]
"""
        + md_table(["run", "block", "linear probe AUC at init", "after training"], "rows"),
    ),
    (
        "code",
        """\
# Re-initialisation resilience: reset one block of the fine-tuned model to its init, evaluate on validation.
resilience = instruments.resilience_runs(
    [run_weights.RunWeights(run_dir(GROUP, i, SEEDS[0])) for i in ("random", "transfer")]
)
display(Image(figures.save(resilience, ANALYSES)[1]))""",
    ),
    (
        "code",
        """\
# Linear interpolation between two solutions (BN statistics recomputed at every point): Neyshabur et al.'s pairings.
pairs = {
    "random-random": (run_dir(GROUP, "random", SEEDS[0]), run_dir(GROUP, "random", SEEDS[1])),
    "transfer-transfer": (run_dir(GROUP, "transfer", SEEDS[0]), run_dir(GROUP, "transfer", SEEDS[1])),
    "random-transfer": (run_dir(GROUP, "random", SEEDS[0]), run_dir(GROUP, "transfer", SEEDS[0])),
}
barriers = []
for name, (a, b) in pairs.items():
    grid = dict(alphas=[0, 0.25, 0.5, 0.75, 1], bn_batches=4) if MINI else {}  # full: 11 points, 16 BN batches
    result = instruments.interpolate_runs(*run_weights.load_runs([a, b]), **grid)
    _, png = figures.save(result, ANALYSES, f"interpolation_{name}")
    barriers.append([name, f"{result['barrier']['loss']:.4f}", f"{result['barrier']['auc']:.4f}"])
    display(Image(png))
"""
        + md_table(["pair", "loss barrier", "AUC barrier"], "barriers"),
    ),
    (
        "code",
        """\
# Sanity checks of the similarity measures on two seeds of random init: seed-to-seed distance beside its shuffled
# null, and the layer against itself with its top principal components removed.
a, b = run_weights.load_runs([run_dir(GROUP, "random", s) for s in SEEDS[:2]])
images = run_weights.eval_batches(a.config, 32, max_images=64 if MINI else 512)
sanity = instruments.sanity_runs(a, b, images, list(a.blocks[-2:]))
display(Image(figures.save(sanity, ANALYSES)[1]))""",
    ),
    (
        "code",
        """\
# Fine-tuning protocols and calibration: test AUC and ECE at the validation-selected step, reliability diagrams.
protocol_dirs = {"full fine-tuning": run_dir(GROUP, "transfer", SEEDS[0])}
protocol_dirs.update({group: run_dir(group, "transfer", SEEDS[0]) for group in PROTOCOLS})
calibration = instruments.calibration_runs(list(protocol_dirs.values()))
display(Image(figures.save(calibration, ANALYSES)[1]))
rows = [[name, f"{r['auc']:.3f}", f"{r['ece']:.3f}"] for name, r in zip(protocol_dirs, calibration["runs"].values())]
"""
        + md_table(["transfer run", "test AUC (selected step)", "test ECE"], "rows"),
    ),
    (
        "code",
        """\
# Everything together: the report of WORKDIR (tables with ECE, effects, and the section beyond the paper).
display(Markdown(report.render(WORKDIR)))""",
    ),
    *SELF_SUPERVISED,
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
    "4_beyond_the_paper.ipynb": BEYOND,
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
