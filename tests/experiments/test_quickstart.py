"""The quickstart (the miniature study) end to end at --mini size through its command line, from a non-editable
install run outside the checkout: the report's gates and verdicts, numbers that come from the runs (checked against
independent computations), the null beside every similarity, the data splits, the one test-score file, no machine
path in the report, a rerun through the experiments CLI's `study` entry that skips everything finished, and a workdir
that refuses another design."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from transfusion_jax.experiments.study import design
from transfusion_jax.experiments.study import report as study_report
from transfusion_jax.experiments.study import workdir as workdir_lib
from transfusion_jax.experiments.study.contrasts import NOT_RUN
from transfusion_jax.experiments.study.design import RunKey
from transfusion_jax.train import rundir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package as a user installs it: a wheel built from a copy of the checkout's package and setup.py (configs/
    and tests/ are not in it), installed (not editable) into a folder of its own."""
    root = tmp_path_factory.mktemp("install")
    shutil.copytree(os.path.join(REPO, "transfusion_jax"), root / "src" / "transfusion_jax",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(os.path.join(REPO, "setup.py"), root / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    wheel = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "wheels"),
                            str(root / "src")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    (built,) = (root / "wheels").glob("transfusion_jax-*.whl")
    target = root / "target"
    install = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(built)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    return target


def _run(child_env, installed, cwd, *argv):
    """`python *argv` with only the installed package on PYTHONPATH, from `cwd` (not the checkout)."""
    env = {**os.environ, **child_env, "PYTHONPATH": str(installed)}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def mini(tmp_path_factory, child_env, installed):
    workdir = tmp_path_factory.mktemp("study")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    where = _run(child_env, installed, elsewhere, "-c", "import transfusion_jax; print(transfusion_jax.__file__)")
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr  # not the checkout's copy
    argv = ["-m", "transfusion_jax.experiments.quickstart", "--workdir", str(workdir), "--mini"]
    result = _run(child_env, installed, elsewhere, *argv)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result.stdout


def test_report_has_gates_verdicts_and_figures(mini):
    workdir, out = mini
    c = design.load_config("mini")
    assert f"[{len(design.plan(c))}/{len(design.plan(c))}] fine-tune small model, small data, transfer, seed 1" in out
    assert f"this design: {len(design.plan(c))} fine-tuning runs + 2 pretraining" in out.splitlines()[1]
    text = (workdir / "report.md").read_text()
    block = study_report.verdicts_block(text)
    rows = [line for line in block.splitlines() if line.startswith("| C") or line.startswith("| R ")]
    assert len(rows) == 16  # C1-C8 and R at both sizes, C2b, C3a and C3b across them: every one judged
    judged = ("supported", "contradicted", "inconclusive", "not testable", "not assessable")
    for row in rows:
        assert NOT_RUN not in row and any(f"**{v}**" in row for v in judged), row
    scopes = {tuple(cell.strip() for cell in row.split("|")[1:4:2]) for row in rows}
    assert {(claim, f"{m} model") for claim in ("C1", "C2a", "C4", "R", "C5") for m in ("small", "large")} <= scopes
    assert {("C2b", "large - small model"), ("C3a", "large - small model"), ("C3b", "large - small model")} <= scopes
    assert "peak memory" in block.splitlines()[1] and "## Power" in text
    assert text.index("## Gates") < text.index("## Claims in detail")
    names = ["verdicts", "g1_kernel_std_ratio", "g2_probe_auc"]
    names += [
        f"{kind}_{m}_{d}" for kind in ("val_auc", "final_auc") for m in ("small", "large") for d in ("full", "small")
    ]
    names += [f"similarity_to_init_{m}" for m in ("small", "large")]
    for name in names:
        assert (workdir / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"figures/{name}.png" in text
    assert str(workdir) not in text and not str(workdir).startswith(REPO)  # no machine path; run outside the checkout


def _reject(constant):
    raise ValueError(f"non-standard JSON constant {constant}")


def test_every_json_the_quickstart_writes_is_strict(mini):
    """Standard JSON has no NaN or Infinity: every .json and every line of every .jsonl under the workdir parses
    with them refused (runs, analyses' caches, the design record, figures' data)."""
    workdir, _ = mini
    files = sorted(p for p in workdir.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
    assert len(files) > 50  # every run's config, summary and metrics, the study's own records
    for path in files:
        text = path.read_text()
        for line in text.splitlines() if path.suffix == ".jsonl" else [text]:
            if line.strip():
                json.loads(line, parse_constant=_reject)


def test_report_numbers_come_from_the_runs(mini):
    workdir, _ = mini
    c = design.load_config("mini")
    text = (workdir / "report.md").read_text()
    # G3's row: each random run's steps to threshold and final validation AUC, as its summary.json has them.
    summaries = [json.loads((workdir / RunKey("small", "full", "random", s).workdir("") / "summary.json").read_text())
                 for s in c.seeds]  # fmt: skip
    finals = ", ".join(f"{s['val']['final']['auc']:.3f}" for s in summaries)
    assert any(line.startswith("| small |") and finals in line for line in text.splitlines())
    # C1 (small): mean over seeds of AUC(transfer) - AUC(random) on the test images, by sklearn from the logits.
    diffs = []
    for seed in c.seeds:
        scores = {
            init: np.load(workdir / RunKey("small", "full", init, seed).workdir("") / rundir.TEST_SCORES)
            for init in ("transfer", "random")
        }
        labels = scores["random"]["label"] == 1
        np.testing.assert_array_equal(scores["random"]["id"], scores["transfer"]["id"])
        odds = {init: np.diff(s["final_logits"].astype(np.float64), axis=1)[:, 0] for init, s in scores.items()}
        diffs.append(roc_auc_score(labels, odds["transfer"]) - roc_auc_score(labels, odds["random"]))
    c1 = next(line for line in text.splitlines() if line.startswith("| C1 |") and "small model" in line)
    assert f"{np.mean(diffs):+.3f} [" in c1
    # Test scores are the Private images only: none of them is a validation (Public) or train image.
    scores = np.load(workdir / RunKey("small", "full", "random", 0).workdir("") / rundir.TEST_SCORES)
    test_ids = {i.decode() for i in scores["id"]}
    assert len(test_ids) == c.target.test
    solution = (workdir / "data" / "retina" / "retinopathy_solution.csv").read_text().splitlines()[1:]
    public = {row.split(",")[0] for row in solution if row.endswith("Public")}
    assert not any(any(p in i for p in public) for i in test_ids)


def test_the_study_writes_the_trainers_test_score_file(mini, trained):
    """One test-score file: the study's post-training scoring writes test_scores.npz with the keys, dtypes and
    shapes the trainer's own test evaluation writes (a real trainer run with a test split, `trained`), bar the
    validation-selected step the study does not score."""
    workdir, _ = mini
    ours = np.load(workdir / RunKey("small", "full", "random", 0).workdir("") / rundir.TEST_SCORES)
    theirs = np.load(os.path.join(trained["random0"], rundir.TEST_SCORES))
    assert set(ours.files) == set(theirs.files) - {"selected_step", "selected_logits"}
    for key in ours.files:
        assert (ours[key].dtype.kind, ours[key].ndim) == (theirs[key].dtype.kind, theirs[key].ndim), key
    assert ours["final_logits"].dtype == np.float32 and str(ours["loss"]) == str(theirs["loss"]) == "softmax"
    assert ours["final_logits"].shape == (design.load_config("mini").target.test, 2)
    assert not list(workdir.rglob("test_final.npz"))
    # each program's runs are scored as soon as it is done, while the next ones train (execute.finetune_all)
    scored = [os.stat(p).st_mtime_ns for p in workdir.rglob(rundir.TEST_SCORES)]
    finished = [os.stat(p).st_mtime_ns for p in (workdir / "runs").rglob(rundir.SUMMARY) if "pretrain" not in str(p)]
    assert len(scored) == len(finished) == len(design.plan(design.load_config("mini")))
    assert min(scored) < max(finished)


def test_every_similarity_has_its_null_and_size(mini):
    """Both models: similarity to init (with `null_permutations` shuffled-image nulls), its unrelated-network null
    (step 0 of each run against the random runs of every other seed; the checkpoint against each random run) and
    every pair of seeds (one shuffled-image null per comparison: their bands come from the many comparisons)."""
    workdir, _ = mini
    c = design.load_config("mini")
    seeds = list(c.seeds)
    for model in ("small", "large"):
        sim = json.loads((workdir / "analysis" / f"similarity_{model}.json").read_text())
        assert set(sim["to_init"]) == {f"{i}/{s}" for i in ("random", "transfer") for s in seeds}
        unrelated = {f"random/{i}/{j}" for i in seeds for j in seeds if i != j} | {f"transfer/{j}" for j in seeds}
        assert set(sim["unrelated"]) == unrelated
        pairs = {f"rand_rand/{i}/{j}" for i in seeds for j in seeds if i < j}  # every pair of seeds
        assert set(sim["pairs"]) == pairs | {f"rand_imnet/{i}/{j}" for i in seeds for j in seeds if i != j}
        for kind, permutations in (("to_init", c.similarity.null_permutations), ("unrelated", 1), ("pairs", 1)):
            for entry in sim[kind].values():
                for layer in sim["layers"]:
                    for method in c.similarity.methods:
                        r = entry[layer][method]
                        assert len(r["null"]) == permutations
                        assert r["null_min"] <= r["null_mean"] <= r["null_max"] and 0 <= r["score"] <= 1 + 1e-6
                        assert r["n"] % c.target.test == 0 and r["n_per_dim"] == r["n"] / max(r["dx"], r["dy"])
        assert sim["reduction"]["positions"] == c.similarity.positions


def test_rerun_through_the_experiments_cli_skips_finished_work(mini, child_env, installed, tmp_path):
    """`python -m transfusion_jax.experiments study` is the quickstart: on the same DIR it trains nothing and writes
    the same verdicts."""
    workdir, _ = mini
    before = (workdir / RunKey("small", "full", "random", 0).workdir("") / rundir.METRICS).read_text()
    block = study_report.verdicts_block((workdir / "report.md").read_text())
    result = _run(child_env, installed, tmp_path, "-m", "transfusion_jax.experiments", "study", "--workdir",
                  str(workdir), "--mini")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    c = design.load_config("mini")
    assert result.stdout.count("finished before") == len(design.plan(c)) + len(c.models_run)
    assert (workdir / RunKey("small", "full", "random", 0).workdir("") / rundir.METRICS).read_text() == before
    # The same verdicts; the block's first line says where and how long the invocation that wrote it ran.
    again = study_report.verdicts_block((workdir / "report.md").read_text()).splitlines()
    runs_ = len(design.plan(c)) + len(c.models_run)
    assert f" 0 of {runs_} runs trained in it." in again[1]
    assert again[2:] == block.splitlines()[2:] and f"{runs_} of {runs_} runs trained in it." in block.splitlines()[1]


def test_a_workdir_refuses_another_design_and_bad_configs_fail_first(mini, tmp_path):
    study_dir, _ = mini
    other = design.load_config("mini", ["seeds=(0, 1, 2)"])
    with pytest.raises(design.StudyConfigError, match=r"other settings \(seeds\)"):
        workdir_lib.check_workdir(str(study_dir), other)
    workdir_lib.check_workdir(str(study_dir), design.load_config("mini", ['models_run=("small", "large")']))  # may grow
    bad = design.load_config("mini", ["seeds=(0,)", "threshold=1.5"])
    bad.cells = (("small", "full", ("random", "transfusion:layer9")),)
    with pytest.raises(design.StudyConfigError) as e:
        design.check_config(bad)
    assert "layer9" in str(e.value) and "at least 2 distinct seeds" in str(e.value) and "threshold" in str(e.value)
    assert not (tmp_path / "anything").exists()


def test_every_variant_is_a_usable_design_and_scale_is_the_larger_one():
    """--scale, --mini and the default pass the checks a run makes before its first image; the default runs both
    models (every claim at both sizes, no cut); --scale is the same design larger (docs/study.md, round 7 §9): more
    pixels, wider models, more data, steps and seeds, the same cells, claims, margins and gates."""
    configs = {arg: design.load_config(arg) for arg in design.VARIANTS}
    assert set(configs) == {"default", "scale", "mini"}  # --full is gone: the default is the whole design
    for c in configs.values():
        design.check_config(c)
        assert tuple(c.models_run) == ("small", "large")
    default, scale = configs["default"], configs["scale"]
    assert len(design.plan(default)) == 80 and len(design.plan(scale)) == 160
    assert default.sources == "shipped" and scale.sources == configs["mini"].sources == "build"
    assert scale.image_size == 64 and scale.finetune.steps == 1500 and scale.target.train == 20_000
    assert all(w_s > w_d for m in ("small", "large") for w_s, w_d in zip(scale.widths[m], default.widths[m]))
    assert [(m, d, tuple(i)) for m, d, i in scale.cells] == [(m, d, tuple(i)) for m, d, i in default.cells]
    assert (scale.threshold, dict(scale.margins), dict(scale.sesoi), dict(scale.gates)) == (
        default.threshold,
        dict(default.margins),
        dict(default.sesoi),
        dict(default.gates),
    )
    # The large model is clearly larger than the small one, and Slim is its lower half with a halved top.
    for c in (default, scale):
        large, small = np.array(c.widths.large), np.array(c.widths.small)
        assert np.all(large >= small) and large.sum() > 1.4 * small.sum()
        assert tuple(c.slim_widths) == (*large[:2], *(large[2:] // 2))
    for c in (default, scale):  # a log grid ~14 % apart, finer than the steps margin (ln 1.25), ending at the end
        full, small = np.array(c.eval_steps.full), np.array(c.eval_steps.small)
        assert full[-1] == small[-1] == c.finetune.steps and tuple(small) == tuple(full[-len(small) :])
        assert np.all(full[1:] / full[:-1] <= 1.2) and len(small) == c.gates.last_evals


def test_the_reports_peak_memory_is_in_bytes_and_bounds_the_memory_in_use():
    """The header's peak memory (ru_maxrss, KiB on Linux) in bytes: at least what /proc says this process holds now
    (the peak is never below the current resident set, up to the kernel's lazy high-water mark), and not a thousand
    times more."""
    from transfusion_jax.experiments.study.run import peak_memory

    with open("/proc/self/status") as f:
        resident = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    assert 0.95 * resident <= peak_memory() < 100 * resident  # the kernel updates its high-water mark lazily


def test_the_installed_package_ships_the_source_checkpoints(installed):
    """A non-editable install carries the default design's source checkpoints (package_data) with their manifest,
    and each file matches its sha256 and the default design's pretraining settings: the default run needs no
    pretraining."""
    from transfusion_jax.experiments.study import sources

    shipped = installed / "transfusion_jax" / "experiments" / "study" / "checkpoints"
    manifest = json.loads((shipped / sources.MANIFEST).read_text())
    assert set(manifest) == {"small", "large"}
    sources.check_shipped(design.load_config("default"), ("small", "large"), str(shipped))
