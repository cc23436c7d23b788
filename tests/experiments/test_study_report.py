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
from transfusion_jax.experiments.study.claims import FINDINGS
from transfusion_jax.experiments.study.verdicts import evaluate

PNG = b"\x89PNG\r\n\x1a\n"
TIMING = study_report.Timing(wall=100.0, cpu=150.0, load=(1.0, 2.0), trained=77, runs=77)


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
    assert len(rows) == len(verdicts.verdicts) == 17
    for row, v in zip(rows, verdicts.verdicts):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == v.claim and cells[1] == FINDINGS[v.claim] and cells[2] == v.scope
        first = (v.parts or [v])[0].interval
        assert f"{first.estimate:+.{2 if (v.parts or [v])[0].measure == 'log_steps' else 3}f}" in cells[3]
        assert cells[5].startswith(f"**{v.verdict}**")
    c5 = next(r for r in rows if r.startswith("| C5 | ") and "large model" in r)
    assert "ratio ×" in c5 and "relative threshold: supported" in c5  # steps as a ratio; the relative threshold
    assert "G1 small passes" in block and "G4 passes in 15 of 15 groups" in block
    assert "no multiplicity correction" in block


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
    assert any(link.startswith("figures/val_auc_large_full") for link in links)
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
    assert "**inconclusive** (interval crosses a margin; G3 failed for the large model as well)" in row


def test_the_report_names_the_code_that_made_it(written, monkeypatch):
    """In a git checkout: the package version and the checkout's commit (the tests run from one); without git, the
    version alone."""
    _, text, _ = written
    head = subprocess.run(
        ["git", "rev-parse", "--short=7", "HEAD"], cwd=os.path.dirname(__file__), capture_output=True, text=True
    ).stdout.strip()
    assert re.search(rf"- Code: transfusion_jax [\d.]+, commit {head}", text), text[:800]

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(study_report.subprocess, "run", no_git)
    assert re.fullmatch(r"transfusion_jax [\d.]+", study_report.code_version())


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
    assert f"| {g4.scope} | median sd 0.9877 |" in text
