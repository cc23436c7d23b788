"""One run-directory contract: train/rundir.py names every file of a run, and no other module of the package spells
one of those names in its code (docstrings and comments may describe them); its test-score writer and reader agree."""

import ast
import pathlib
import re

import numpy as np

from transfusion_jax.train import rundir

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "transfusion_jax"
NAMES = [
    rundir.CONFIG, rundir.METRICS, rundir.TENSORBOARD, rundir.CHECKPOINTS, rundir.INIT, rundir.FINAL,
    rundir.TRAIN_SUBSET, rundir.TEST_SCORES, rundir.PENDING_SCORES, rundir.SUMMARY, rundir.FAILED,
    "test_final.npz",  # the study's own test-score file before it wrote the trainer's
]  # fmt: skip
# Spellings that are not a run's file: the package folder of the study's shipped source checkpoints shares a name.
NOT_RUN_FILES = {("experiments/study/sources.py", "checkpoints")}
# A name as a whole string or as one component of a path written in the code.
SPELLED = re.compile(r"(^|/)(" + "|".join(re.escape(n) for n in NAMES) + r")($|/)")


def spelled_names(source: str) -> list[tuple[int, str]]:
    """(line, string) of every string constant in the code (f-string parts included, docstrings not) that spells a
    run file's name."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        and SPELLED.search(node.value)
    ]  # fmt: skip


def test_no_module_but_rundir_spells_a_run_file():
    found = {
        str(path.relative_to(PACKAGE)): hits
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "rundir.py"
        and (
            hits := [
                (line, name)
                for line, name in spelled_names(path.read_text())
                if (str(path.relative_to(PACKAGE)), name) not in NOT_RUN_FILES
            ]
        )
    }
    assert not found, found


def test_the_scan_sees_plain_joined_and_formatted_names():
    source = '"""summary.json"""\nimport os\na = "summary.json"\nb = f"{d}/init.npz"\nc = os.path.join(d, "FAILED")\n'
    assert [line for line, _ in spelled_names(source)] == [3, 4, 5]
    assert not spelled_names('x = "the run summary: %s"\ny = "checkpoints were damaged"\n')


def test_test_scores_round_trip(tmp_path):
    """What write_test_scores writes, load_test_scores reads back: ids as UTF-8 bytes (non-ASCII kept), a digest of
    them, the logits and labels as given, the selected step only when there is one."""
    ids = ["a/1.jpeg", "b/ü.jpeg"]
    logits = np.array([[0.5, -1.0], [2.0, 1.0]], np.float32)
    written = rundir.write_test_scores(
        tmp_path, loss="softmax", label_names=["grade >= 2"], final_step=6, final_logits=logits, ids=ids,
        label=np.array([0, 1]), label_mask=np.ones((2, 1), np.float32),
    )  # fmt: skip
    read = rundir.load_test_scores(tmp_path)
    assert set(read) == set(written) == {"id", "id_digest", "label", "label_mask", "loss", "label_names",
                                         "final_step", "final_logits"}  # fmt: skip
    assert [i.decode() for i in read["id"]] == ids and int(read["final_step"]) == 6
    np.testing.assert_array_equal(read["final_logits"], logits)
    assert str(read["id_digest"]) == str(rundir.ids_digest(rundir.encode_ids(ids)))
    assert rundir.load_test_scores(tmp_path / "elsewhere") is None
