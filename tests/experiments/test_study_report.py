"""The study's report on a constructed study (no training): every claim in the verdicts table with the interval the
verdicts computed, the gates first with the numbers their records hold, every similarity beside its null with n and
d, the figures, no machine path, and the verdicts block quoted verbatim into other documents."""

import dataclasses
import os
import re
import subprocess

import pytest
from study_world import LABELS, config, diagnostics, g3_fails_c5_spans_its_margin, similar, verdicts_of, world

from transfusion_jax.experiments.study import report as study_report
from transfusion_jax.experiments.study import verdicts as verdicts_lib
from transfusion_jax.experiments.study.claims import FINDINGS
from transfusion_jax.experiments.study.verdicts import evaluate

PNG = b"\x89PNG\r\n\x1a\n"
TIMING = study_report.Timing(wall=100.0, cpu=150.0, load=(1.0, 2.0), trained=80, runs=80, peak_memory=1.5 * 2**30)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    c = config()
    measures, sim, diag = world(c), similar(c), diagnostics(c)
    verdicts = evaluate(c, measures, LABELS, diag, sim)
    workdir = tmp_path_factory.mktemp("report")
    path = study_report.write(str(workdir), c, verdicts, measures, diag, sim, {}, TIMING)
    return workdir, open(path).read(), verdicts


def test_every_claim_is_in_the_verdicts_table_with_its_interval(written):
    _, text, verdicts = written
    block = study_report.verdicts_block(text)
    rows = [line for line in block.splitlines() if line.startswith("| C") or line.startswith("| R ")]
    assert len(rows) == len(verdicts.verdicts) == 16
    for row, v in zip(rows, verdicts.verdicts):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == v.claim and cells[1] == FINDINGS[v.claim] and cells[2] == v.scope
        first = (v.parts or [v])[0].interval
        assert f"{first.estimate:+.{2 if (v.parts or [v])[0].measure == 'log_steps' else 3}f}" in cells[3]
        assert cells[5].startswith(f"**{v.verdict}**")
    c5 = next(r for r in rows if r.startswith("| C5 | ") and "large model" in r)
    assert "ratio ×" in c5 and "relative threshold: supported" in c5  # steps as a ratio; the relative threshold
    assert "G1 small passes" in block and "G4 passes in 16 of 16 groups" in block
    assert "no multiplicity correction" in block
    assert "peak memory 1.50 GiB" in block.splitlines()[1]
    for row, v in zip(rows, verdicts.verdicts):  # the rule and the distance to the nearest boundary, per claim
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[4].split()[0] in ("equivalence", "directional", "non-inferiority")
        assert cells[6] == study_report.distance_text(v) and cells[6] != "—"


def test_gates_come_before_the_claims_and_similarity_has_its_null(written):
    _, text, _ = written
    assert text.index("## Gates") < text.index("## Claims in detail") < text.index("## Representational similarity")
    for gate in ("### G1", "### G2", "### G3", "### G4"):
        assert gate in text
    assert "layer1 n = 35,200, d = 16 (n/d = 2200)" in text
    similarity_rows = [line for line in text.splitlines() if line.startswith("| random | layer")]
    assert similarity_rows and all("(null 0.150, max 0.200)" in row for row in similarity_rows)


def test_figures_are_written_and_linked(written):
    workdir, text, _ = written
    links = re.findall(r"\]\((figures/[^)]+\.png)\)", text)
    assert {"figures/verdicts.png", "figures/g1_kernel_std_ratio.png", "figures/g2_probe_auc.png"} <= set(links)
    for name in ("val_auc", "final_auc"):  # per-seed curves and Fig. 2-style violins, per model and training set
        assert {f"figures/{name}_{m}_{d}.png" for m in ("small", "large") for d in ("full", "small")} <= set(links)
    assert {"figures/similarity_to_init_small.png", "figures/similarity_to_init_large.png"} <= set(links)
    for link in links:
        assert (workdir / link).read_bytes()[:8] == PNG, link


def test_quote_verdicts_copies_the_block_verbatim(written, tmp_path):
    workdir, text, _ = written
    doc = tmp_path / "README.md"
    doc.write_text(f"intro\n\n{study_report.VERDICTS_BEGIN}\nold\n{study_report.VERDICTS_END}\n\nafter\n")
    study_report.quote_verdicts(str(workdir / "report.md"), [str(doc)])
    quoted = doc.read_text()
    assert study_report.verdicts_block(quoted) == study_report.verdicts_block(text)
    assert quoted.startswith("intro\n\n") and quoted.endswith("\n\nafter\n")
    with pytest.raises(ValueError, match="markers"):
        study_report.verdicts_block("no block here")


def test_publish_copies_the_report_with_its_figures_and_quotes_it(written, tmp_path):
    workdir, text, _ = written
    out = tmp_path / "docs" / "study_report"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "stale.png").write_bytes(PNG)
    doc = tmp_path / "README.md"
    doc.write_text(f"intro\n{study_report.VERDICTS_BEGIN}\nold\n{study_report.VERDICTS_END}\n")
    report = study_report.publish(str(workdir), str(out), [str(doc)])
    assert open(report).read() == text
    linked = set(re.findall(r"\]\((figures/[^)]+)\)", text))
    assert linked and {f"figures/{p.name}" for p in (out / "figures").iterdir()} == linked  # the stale one is gone
    for name in linked:
        assert (out / name).read_bytes() == (workdir / name).read_bytes()
    assert study_report.verdicts_block(doc.read_text()) == study_report.verdicts_block(text)
    (workdir / sorted(linked)[0]).rename(tmp_path / "moved.png")
    try:
        with pytest.raises(FileNotFoundError, match="links figures"):
            study_report.publish(str(workdir), str(tmp_path / "other"), [])
    finally:
        (tmp_path / "moved.png").rename(workdir / sorted(linked)[0])


def test_readme_and_results_quote_the_committed_report_verbatim():
    """README.md and docs/RESULTS.md show the verdicts of docs/study_report/report.md, the report our run of the
    quickstart wrote, character for character (regenerate with study_report.quote_verdicts)."""

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "docs", "study_report", "report.md")) as f:
        block = study_report.verdicts_block(f.read())
    assert "| C1 |" in block
    for doc in ("README.md", os.path.join("docs", "RESULTS.md")):
        with open(os.path.join(repo, doc)) as f:
            assert study_report.verdicts_block(f.read()) == block, doc


def test_a_failed_gate_is_named_in_the_verdicts_table_even_where_the_interval_is_inconclusive():
    c = config()
    result, _ = verdicts_of(c, g3_fails_c5_spans_its_margin(c))
    row = next(r for r in study_report.verdicts_section(c, result, TIMING) if r.startswith("| C5 |") and "large" in r)
    assert (
        "**inconclusive** (interval includes 0 and the smallest effect of interest; G3 failed for the large model as "
        "well)" in row
    )


def test_the_report_names_the_code_that_made_it(written, monkeypatch):
    """In a git checkout: the package version and the checkout's commit (the tests run from one); without git, the
    version alone."""
    _, text, _ = written
    head = subprocess.run(
        ["git", "rev-parse", "--short=7", "HEAD"], cwd=os.path.dirname(__file__), capture_output=True, text=True
    ).stdout.strip()
    assert re.search(rf"- Code: transfusion_jax [\d.]+, commit {head}", text), text[:800]
    assert re.search(
        r"- Pre-registration: docs/study.md, section 'Round 7 \(study v2\): the design, pre-registered', last "
        r"changed in commit [0-9a-f]{7} \d{4}-\d\d-\d\d",
        text,
    )

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(study_report.subprocess, "run", no_git)
    assert re.fullmatch(r"transfusion_jax [\d.]+", study_report.code_version())


def test_the_preregistration_commit_is_the_design_sections_not_the_change_logs(tmp_path):
    """The report names the last commit that changed round 7's design section of docs/study.md: an entry in the log
    of execution changes after it (its own section) moves nothing; an edit of the design does."""

    def git(*args):
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True, env=env)

    def commit(text, message):
        (tmp_path / "docs" / "study.md").write_text(text)
        git("add", "-A")
        git("commit", "-q", "-m", message)
        return git("rev-parse", "--short=7", "HEAD").stdout.strip()

    (tmp_path / "docs").mkdir()
    git("init", "-q")
    before = "# Study\n\n## Round 6\nold\n\n"
    design = "## Round 7 (study v2): the design, pre-registered\nseeds 0-4\n\n"
    log = "## Changes after the design was fixed\n"
    fixed = commit(before + design + log, "design")
    commit(before + design + log + "- two programs at once\n", "an execution change")
    assert f"last changed in commit {fixed} " in study_report.preregistration(str(tmp_path))
    commit("# Study, retitled\n\n## Round 6\nolder\n\n" + design + log + "- two programs at once\n", "elsewhere")
    assert f"last changed in commit {fixed} " in study_report.preregistration(str(tmp_path))
    edited = commit(before + design.replace("0-4", "0-5") + log + "- two programs at once\n", "design edit")
    assert f"last changed in commit {edited} " in study_report.preregistration(str(tmp_path))


def test_the_report_carries_no_machine_path(written):
    """Files are named relative to the work directory: neither the directory the report was written in nor any other
    absolute path appears in it."""
    workdir, text, _ = written
    assert str(workdir) not in text and os.path.basename(str(workdir)) not in text
    assert not re.findall(r"(?<![\w.])/(?:tmp|home|root|work|Users|var|private)/", text)
    assert "`runs/`" in text.splitlines()[2]


def test_gates_are_rendered_from_their_records_not_recomputed(tmp_path):
    """The report shows the numbers each gate's record holds: a G1 distance and a G4 spread changed in the records
    (and nowhere else) are what the report prints."""
    c = config(models_run=("small",))
    measures, sim, diag = world(c), similar(c), diagnostics(c)
    result = evaluate(c, measures, LABELS, diag, sim)
    g1 = next(g for g in result.gates if g.gate == "G1")
    ratios = [dataclasses.replace(r, distance=12345.0) for r in g1.values.ratios]
    g4 = next(g for g in result.gates if g.gate == "G4")
    changed = {
        id(g1): dataclasses.replace(g1, values=dataclasses.replace(g1.values, ratios=ratios)),
        id(g4): dataclasses.replace(g4, values=dataclasses.replace(g4.values, within=0.98765)),
    }
    result = dataclasses.replace(result, gates=[changed.get(id(g), g) for g in result.gates])
    text = open(study_report.write(str(tmp_path), c, result, measures, diag, sim, {}, TIMING)).read()
    assert "| layer1 | 1.300 | 1.000 ± 0.016 | 12345 |" in text
    assert f"| {g4.scope} | 0.9877 |" in text


def test_the_power_table_and_the_verdicts_that_are_underpowered(tmp_path):
    """Mean-Var's steps scatter x3 across seeds: C5's interval is wide, its rule needs more than 5 seeds for 80 %
    power at the smallest effect of interest, and its verdict row says so; a tight claim (C1) does not."""
    c = config()
    noisy = {0: 20, 1: 400, 2: 30, 3: 250, 4: 60}
    measures = world(c, steps={"mean_var": lambda key: noisy[key.seed]})
    result = evaluate(c, measures, LABELS, diagnostics(c), similar(c))
    powers = {(v.claim, v.scope, v.measure): p for v, p in verdicts_lib.power_table(result, c)}
    c5, c1 = powers["C5", "small model", "log_steps"], powers["C1", "small model", "auc"]
    assert c5.needed is None or c5.needed > len(c.seeds)
    assert c1.needed is not None and c1.needed <= len(c.seeds) and c1.power >= 0.8
    text = open(study_report.write(str(tmp_path), c, result, measures, diagnostics(c), similar(c), {}, TIMING)).read()
    rows = {r.split("|")[1].strip() + r.split("|")[3].strip(): r for r in study_report.verdicts_block(text).splitlines()
            if r.startswith("| C")}  # fmt: skip
    assert "underpowered" in rows["C5small model"] and "underpowered" not in rows["C1small model"]
    assert "## Power: the seeds each claim needs" in text
