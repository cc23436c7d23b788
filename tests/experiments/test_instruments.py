"""The instruments' command lines end to end on real tiny runs (conftest.py's `trained`): JSON schema and PNG
written, and every number equal to an independent computation on the same inputs (the run's own recorded
metrics, sklearn, a forward pass by hand) or to the library function called directly."""

import json
import math
import os

import jax
import numpy as np
import pytest
import scipy.special
from matplotlib.image import imread
from sklearn.metrics import roc_auc_score

from transfusion_jax import data as data_lib
from transfusion_jax.analysis import interpolation, probes, reuse, sanity
from transfusion_jax.experiments import __main__ as cli
from transfusion_jax.experiments import instruments, report, run_weights, runs
from transfusion_jax.train import batch_stats, partition, rundir


def outputs(out, name):
    png = imread(str(out / f"{name}.png"))
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.ndim == 3 and png.shape[0] > 100
    return json.loads((out / f"{name}.json").read_text())


def split_arrays(config, split: str, train: bool = False):
    """(images, labels) of a whole split in file order, no augmentation: built here, not by the instruments."""
    dataset = data_lib.build_dataset(config, split, train=False)
    images, labels = [], []
    for batch in dataset.batches(16, mesh=partition.make_data_mesh()):
        valid = np.asarray(batch["valid"]).astype(bool)
        images.append(np.asarray(batch["image"])[valid])
        labels.append(np.asarray(batch["label"])[valid])
    return np.concatenate(images), np.concatenate(labels)


def evaluate_by_hand(run, variables, images, labels):
    """(mean cross-entropy, AUC of class 1) of a forward pass in eval mode, scored with scipy and sklearn."""
    logits = np.asarray(jax.jit(run.apply)(variables, images)[0], np.float64)
    log_probs = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    loss = -log_probs[np.arange(len(labels)), labels].mean()
    return float(loss), float(roc_auc_score(labels, np.exp(log_probs[:, 1])))


def test_probes_fit_on_train_score_on_validation(trained, tmp_path):
    run_dirs = [trained["transfer0"]]
    argv = ["probes", "--runs", *run_dirs, "--k", "5", "--batch-size", "32", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    result = outputs(tmp_path, "probes")
    assert result["analysis"] == "probes" and result["k"] == 5 and list(result["runs"]) == run_dirs
    run = run_weights.RunWeights(trained["transfer0"])
    got = result["runs"][trained["transfer0"]]
    assert got["split"] == {"role": "val", "name": run.config.val_split}
    # Independently: the whole train split in file order (48 images; batches of 32 leave 16 rows of the stream's
    # second batch to the next epoch), the validation split; the library's probes on them.
    train_images, train_labels = split_arrays(run.config, run.config.train_split)
    val_images, val_labels = split_arrays(run.config, run.config.val_split)

    def as_batches(images, labels):
        return [{"image": images, "label": labels, "label_mask": np.ones((len(labels), 1)), "valid": labels >= 0}]

    for when, variables in (("init", run.initial()), ("final", run.final())):
        assert got[when]["n_train"] == len(train_labels) == 48 and got[when]["n_eval"] == len(val_labels)
        assert got[when]["layers"] == list(run.blocks)
        expected = probes.layerwise_probes(
            run.apply,
            variables,
            as_batches(train_images, train_labels),
            as_batches(val_images, val_labels),
            kind="softmax",
            label_names=("grade < 2", "grade >= 2"),
            layers=list(run.blocks),
            k=5,
        )
        for kind in ("knn", "linear"):
            for block in run.blocks:
                assert got[when][kind][block]["auc"] == pytest.approx(expected[kind][block]["auc"], abs=1e-6), (
                    when,
                    kind,
                    block,
                )
    finals = [got["final"][kind][b]["auc"] for kind in ("knn", "linear") for b in run.blocks]
    assert all(0.0 <= a <= 1.0 for a in finals)


def test_probes_on_a_capped_stratified_training_subset(trained, tmp_path):
    argv = ["probes", "--runs", trained["random0"], "--k", "3", "--max-train", "24", "--probes", "knn"]
    assert cli.main([*argv, "--batch-size", "16", "--out", str(tmp_path), "--name", "capped"]) == 0
    result = outputs(tmp_path, "capped")
    got = result["runs"][trained["random0"]]["final"]
    assert got["n_train"] == 24 and list(got) == ["layers", "n_train", "n_eval", "settings", "knn"]
    assert result["max_train"] == 24 and result["probes"] == ["knn"]


def test_resilience_resets_each_block_and_reports_on_validation(trained, tmp_path):
    workdir = trained["transfer0"]
    assert cli.main(["resilience", "--runs", workdir, "--out", str(tmp_path)]) == 0
    result = outputs(tmp_path, "resilience")
    got = result["runs"][workdir]
    run = run_weights.RunWeights(workdir)
    assert result["reference"] == "init" and got["blocks"] == list(run.blocks)
    # the unreset model on validation is what the trainer itself recorded at the final step
    with open(os.path.join(workdir, "summary.json")) as f:
        recorded = json.load(f)["val"]["final"]
    assert got["baseline"]["auc"] == pytest.approx(recorded["auc"], abs=1e-9)
    assert got["baseline"]["loss"] == pytest.approx(recorded["loss"], rel=1e-5)
    # one block reset by hand (its params and BN statistics from init.npz), evaluated by hand
    images, labels = split_arrays(run.config, run.config.val_split)
    final, initial = run.final(), run.initial()
    for block in ("layer1", "layer3"):
        reset = {
            part: {name: (initial if name == block else final)[part][name] for name in final[part]}
            for part in ("params", "batch_stats")
        }
        loss, auc = evaluate_by_hand(run, reset, images, labels)
        row = got["per_block"][block]
        assert row["auc"] == pytest.approx(auc, abs=1e-9) and row["loss"] == pytest.approx(loss, rel=1e-5)
        assert row["auc_drop"] == pytest.approx(got["baseline"]["auc"] - auc, abs=1e-9)
        assert row["loss_rise"] == pytest.approx(loss - got["baseline"]["loss"], rel=1e-4, abs=1e-6)
    assert cli.main(["resilience", "--runs", workdir, "--reference", "random", "--out", str(tmp_path)]) == 0
    drawn = outputs(tmp_path, "resilience")
    assert drawn["reference"] == "random" and drawn["draw_seed"] == instruments.RANDOM_DRAW_SEED
    losses = [r["loss"] for r in drawn["runs"][workdir]["per_block"].values()]
    assert losses != [r["loss"] for r in got["per_block"].values()]  # another reference, other metrics


def test_interpolation_between_two_seeds_and_of_a_run_with_itself(trained, tmp_path):
    a, b = trained["random0"], trained["random1"]
    argv = ["interpolate", "--a", a, "--b", b, "--alphas", "0,0.5,1", "--bn-batches", "2", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    result = outputs(tmp_path, "interpolation")
    assert result["runs"] == [a, b] and result["alphas"] == [0.0, 0.5, 1.0] and result["batch_stats"] == "recomputed"
    assert result["bn_batches"] == 2 and result["split"]["role"] == "val" and result["resolution"] == 0.5
    for key, higher in (("loss", False), ("auc", True)):
        values = [p[key] for p in result["path"]]
        assert result["barrier"][key] == interpolation.barrier_height([0, 0.5, 1], values, higher) >= 0
    # the library on the same inputs: the endpoints' weights, the first 2 training batches, evaluated by hand
    run_a, run_b = run_weights.load_runs([a, b])
    images, labels = split_arrays(run_a.config, run_a.config.val_split)
    bn_images = [batch["image"] for batch in instruments.training_stream(run_a.config, 16, num_batches=2)]

    def evaluate(variables):
        loss, auc = evaluate_by_hand(run_a, variables, images, labels)
        return {"loss": loss, "auc": auc}

    expected = interpolation.interpolate(
        run_a.final(),
        run_b.final(),
        evaluate,
        alphas=[0.0, 0.5, 1.0],
        batch_stats_fn=batch_stats.BatchStatsRecomputer(run_a.model, bn_images),
    )
    for got, want in zip(result["path"], expected["path"]):
        assert got["auc"] == pytest.approx(want["auc"], abs=1e-9) and got["loss"] == pytest.approx(
            want["loss"], rel=1e-4
        )
    argv = ["interpolate", "--a", a, "--b", a, "--alphas", "0,0.5,1", "--bn-batches", "2"]
    assert cli.main([*argv, "--out", str(tmp_path), "--name", "itself"]) == 0
    itself = outputs(tmp_path, "itself")
    assert itself["barrier"] == {"loss": 0.0, "auc": 0.0}


def test_sanity_on_two_seeds_and_on_arrays(trained, tmp_path):
    a, b = trained["random0"], trained["random1"]
    argv = ["sanity", "--runs", a, b, "--layers", "layer3,layer4", "--ks", "1,2", "--max-images", "16"]
    assert cli.main([*argv, "--batch-size", "16", "--out", str(tmp_path)]) == 0
    result = outputs(tmp_path, "sanity")
    assert result["runs"] == [a, b] and list(result["layers"]) == ["layer3", "layer4"] and result["num_images"] == 16
    run_a, run_b = run_weights.load_runs([a, b])
    images = run_weights.eval_batches(run_a.config, 16, 16)[0]
    for layer, table in result["layers"].items():
        # grids of at most 16 positions are used whole, so the datapoints are every position of every image
        fa, fb = (np.asarray(jax.jit(r.apply)(r.final(), images)[1][layer]) for r in (run_a, run_b))
        assert fa.shape[1] * fa.shape[2] <= 16
        expected = sanity.sanity_table(fa.reshape(-1, fa.shape[-1]), fb.reshape(-1, fb.shape[-1]), ks=(1, 2))
        assert table["n_examples"] == expected["n_examples"] and table["ks"] == [1, 2]
        for got, want in zip(table["rows"], expected["rows"]):
            assert got["measure"] == want["measure"] and got["detects"] == want["detects"]
            for key in ("specificity", "null"):
                assert got[key] == pytest.approx(want[key], abs=1e-5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    y = x @ rng.normal(size=(6, 6)) + 0.1 * rng.normal(size=(300, 6))
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", y)
    argv = ["sanity", "--npy", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--ks", "1,3"]
    assert cli.main([*argv, "--out", str(tmp_path), "--name", "arrays"]) == 0
    arrays = outputs(tmp_path, "arrays")
    assert arrays["layers"]["activations"] == json.loads(json.dumps(sanity.sanity_table(x, y, ks=(1, 3))))


def test_calibration_reads_the_test_scores(trained, tmp_path):
    run_dirs = [trained["random0"], trained["transfer0"]]
    assert cli.main(["calibration", "--runs", *run_dirs, "--out", str(tmp_path)]) == 0
    result = outputs(tmp_path, "calibration")
    assert result["when"] == "selected" and result["split"] == "test" and list(result["runs"]) == run_dirs
    for workdir in run_dirs:
        with open(os.path.join(workdir, "summary.json")) as f:
            recorded = json.load(f)["test"]["selected"]
        got = result["runs"][workdir]
        assert got["reliability"] == recorded["reliability"]  # the trainer's diagrams, from the same scores
        assert got["auc"] == pytest.approx(recorded["auc"], abs=1e-12) and got["ece"] == pytest.approx(recorded["ece"])
        assert got["ace"] == pytest.approx(recorded["ace"])
        bins = got["reliability"]["top_label"]
        n = sum(bins["count"])
        by_hand = sum(c / n * abs(f - p) for c, f, p in zip(bins["count"], bins["frequency"], bins["confidence"]))
        assert got["ece"] == pytest.approx(by_hand, abs=1e-12)
    argv = ["calibration", "--runs", trained["random0"], "--when", "final", "--bins", "4"]
    assert cli.main([*argv, "--out", str(tmp_path), "--name", "four"]) == 0
    four = outputs(tmp_path, "four")["runs"][trained["random0"]]
    assert four["bins"] == 4 and len(four["reliability"]["top_label"]["count"]) <= 4


def test_bad_invocations_are_named(trained, tmp_path, capsys):
    cases = [
        (["probes", "--runs", trained["random0"], "--k", "100"], "exceeds the 48 training examples"),
        (["sanity", "--out", str(tmp_path)], "either --runs RUN RUN or --npy"),
        (["sanity", "--runs", trained["random0"], "--out", str(tmp_path)], "two runs"),
        (["calibration", "--runs", str(tmp_path)], "config.json not found"),
        (["reuse", str(tmp_path)], "transfer, mean_var and random runs"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv if "--out" in argv or argv[0] == "reuse" else [*argv, "--out", str(tmp_path)])
        assert exc.value.code == 2 and message in capsys.readouterr().err, argv


# ---------------------------------------------------------------- the reuse decomposition over a sweep


WT, ST, RI = [0.90, 0.91, 0.92], [0.86, 0.88, 0.87], [0.80, 0.83, 0.81]


def write_summary(root, group, model, init, seed, auc, steps=None, train_examples=5000):
    workdir = runs.RunSpec(group, model, init, seed).workdir(str(root))
    os.makedirs(workdir)
    summary = {
        "final_step": 100,
        "eval_every_steps": 10,
        "train_examples": train_examples,
        "auc_threshold": 0.91,
        "relative_threshold": 0.95,
        "val": {"final": {"auc": 0.9, "ece": 0.05}, "steps_to_relative_threshold": steps},
        "test": {
            "final": {"auc": auc, "ece": 0.1 + seed / 100},
            "selected": {"auc": auc + 0.001, "ece": 0.2},
            "steps_to_threshold": steps,
        },
    }
    with open(os.path.join(workdir, rundir.SUMMARY), "w") as f:
        json.dump(summary, f)


def sweep_root(root):
    """retina_small cbr_small: a clear gain, paired seeds; retina resnet50: RI equal to WT, no gain to apportion."""
    for name, values in (("transfer", WT), ("mean_var", ST), ("random", RI)):
        for seed, auc in enumerate(values):
            write_summary(root, "retina_small", "cbr_small", name, seed, auc, steps=100 - 10 * seed)
            write_summary(root, "retina", "resnet50", name, seed, WT[seed] + 0.001 * (seed % 2), None, 35000)
    write_summary(root, "retina", "resnet50", "gabor", 0, 0.9)  # not part of the decomposition
    return root


def test_reuse_cli_equals_the_decomposition_of_the_recorded_values(tmp_path):
    root = sweep_root(tmp_path)
    assert cli.main(["reuse", str(root)]) == 0
    result = outputs(root / "analyses", "reuse")
    rows = {(r["group"], r["model"], r["measure"]): r for r in result["rows"]}
    assert {k[:2] for k in rows} == {("retina_small", "cbr_small"), ("retina", "resnet50")}
    final = rows["retina_small", "cbr_small", "auc_final"]
    expected = reuse.decompose(WT, ST, RI, higher_is_better=True, paired=True)
    expected = json.loads(json.dumps(expected))
    assert final["share"] == expected["share"] and final["gain"] == expected["gain"] and final["paired"]
    assert final["share"]["estimate"] == pytest.approx((np.mean(WT) - np.mean(ST)) / (np.mean(WT) - np.mean(RI)))
    assert final["seeds"] == {"WT": [0, 1, 2], "ST": [0, 1, 2], "RI": [0, 1, 2]} and final["train_examples"] == [5000]
    selected = rows["retina_small", "cbr_small", "auc_selected"]
    assert selected["share"]["estimate"] == pytest.approx(final["share"]["estimate"])  # every value + 0.001
    steps = rows["retina_small", "cbr_small", "steps_to_threshold"]
    assert steps["gain"]["estimate"] == 0.0 and steps["share"]["status"] == "undefined"  # same steps for each init
    no_gain = rows["retina", "resnet50", "auc_final"]
    assert no_gain["share"]["status"] == "undefined" and "includes 0" in no_gain["share"]["reason"]
    never = rows["retina", "resnet50", "steps_to_threshold"]
    assert never["gain"] is None and "never reached" in never["share"]["reason"]


def test_reuse_without_shared_seeds_is_unpaired(tmp_path):
    """Seeds 0-2 of transfer, 3-5 of mean_var, 0 and 6 of random: fewer than two shared, so every run counts,
    unpaired (Welch); a single seed of an init has no variance and leaves the row undefined, saying why."""
    for seed, auc in zip((0, 1, 2), WT):
        write_summary(tmp_path, "retina", "cbr_small", "transfer", seed, auc)
    for seed, auc in zip((3, 4, 5), ST):
        write_summary(tmp_path, "retina", "cbr_small", "mean_var", seed, auc)
    for seed, auc in zip((0, 6), RI[:2]):
        write_summary(tmp_path, "retina", "cbr_small", "random", seed, auc)
    write_summary(tmp_path, "retina", "cbr_tiny", "transfer", 0, 0.9)
    write_summary(tmp_path, "retina", "cbr_tiny", "mean_var", 0, 0.9)
    write_summary(tmp_path, "retina", "cbr_tiny", "random", 1, 0.9)
    rows = instruments.reuse_decomposition(report.collect(str(tmp_path)))["rows"]
    final = next(r for r in rows if r["model"] == "cbr_small" and r["measure"] == "auc_final")
    assert final["paired"] is False and final["seeds"] == {"WT": [0, 1, 2], "ST": [3, 4, 5], "RI": [0, 6]}
    expected = json.loads(json.dumps(reuse.decompose(WT, ST, RI[:2], paired=False)))
    assert final["gain"] == expected["gain"] and final["share"] == expected["share"]
    single = next(r for r in rows if r["model"] == "cbr_tiny" and r["measure"] == "auc_final")
    assert single["gain"] is None and "at least 2 seeds" in single["share"]["reason"]


def test_report_section_on_constructed_runs_and_analyses(tmp_path):
    root = sweep_root(tmp_path)
    analyses = root / "analyses"
    analyses.mkdir()
    run = "/x/retina/cbr_small/random/seed_0"
    probe = {"layers": ["layer1", "layer2"], "n_train": 10, "n_eval": 5}
    probe.update(
        knn={"layer1": {"auc": 0.61}, "layer2": {"auc": 0.72}},
        linear={"layer1": {"auc": 0.63}, "layer2": {"auc": 0.74}},
    )
    val = {"role": "val", "name": "validation"}
    per_block = {"layer1": {"auc": 0.55, "loss": 0.9, "auc_drop": 0.35, "loss_rise": 0.6}}
    cka_row = {"measure": "cka", "specificity": 0.123, "null": 0.987, "sensitivity": {"1": 0.5}, "detects": {"1": True}}
    written = {
        "probes": {
            "analysis": "probes",
            "k": 20,
            "probes": ["knn", "linear"],
            "runs": {run: {"split": val, "init": probe, "final": probe}},
        },
        "resilience": {
            "analysis": "resilience",
            "reference": "init",
            "runs": {
                run: {"split": val, "blocks": ["layer1"], "baseline": {"auc": 0.9, "loss": 0.3}, "per_block": per_block}
            },
        },
        "interp_rr": {
            "analysis": "interpolation",
            "runs": [run, run.replace("seed_0", "seed_1")],
            "split": val,
            "barrier": {"loss": 0.4321, "auc": 0.1234},
            "resolution": 0.1,
        },
        "calibration": {
            "analysis": "calibration",
            "when": "selected",
            "runs": {run: {"step": 90, "bins": 15, "auc": 0.91, "ece": 0.0456}},
        },
        "sanity": {
            "analysis": "sanity",
            "runs": [run, run],
            "layers": {"layer4": {"ks": [1], "n_examples": 80, "rows": [cka_row]}},
        },
    }
    for name, result in written.items():
        (analyses / f"{name}.json").write_text(json.dumps(result))
    (analyses / "notes.json").write_text("[1, 2]")  # not an analysis: listed, not rendered
    text = report.render(str(root))
    section = text[text.index("## Beyond the paper") :]
    assert "| retina_small | cbr_small | 5,000 |" in section
    expected = reuse.decompose(WT, ST, RI)
    gain, share = expected["gain"], expected["share"]
    assert f"{100 * gain['estimate']:+.2f} [{100 * gain['ci'][0]:+.2f}, {100 * gain['ci'][1]:+.2f}]" in section
    assert f"{share['estimate']:.2f} [{share['ci'][0]:.2f}, {share['ci'][1]:.2f}]" in section
    assert "undefined (the gain's 95% interval includes 0" in section
    assert "undefined (runs without a value" in section
    for needle in ("0.7400", "0.3500", "0.4321", "0.1234", "0.0456", "0.123", "0.987", "notes.json"):
        assert needle in section, needle
    # ECE beside AUC in the tables: final test ECE mean ± std over the seeds (0.10, 0.11, 0.12)
    line = next(li for li in text.splitlines() if li.startswith("| cbr_small | random |"))
    assert "0.110 ± 0.010" in line
    assert math.isclose(np.std([0.10, 0.11, 0.12], ddof=1), 0.01)
