"""Tasks and label semantics: Retina grades -> targets, CheXpert labels -> targets + masks under a named policy."""

import dataclasses
from typing import Literal

import numpy as np

# The 14 observation columns of CheXpert's train.csv / valid.csv, in file order (they follow the 5 metadata
# columns Path, Sex, Age, Frontal/Lateral, AP/PA).
CHEXPERT_METADATA_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
CHEXPERT_OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
CHEXPERT_COLUMNS = CHEXPERT_METADATA_COLUMNS + CHEXPERT_OBSERVATIONS
# The paper's 5 pathologies (docs/paper.md §2.2), in the order of the model's sigmoid outputs.
CHEXPERT_PATHOLOGIES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

# Raw CheXpert label codes used inside this package.
POSITIVE, NEGATIVE, UNCERTAIN, BLANK = 1.0, 0.0, -1.0, np.nan

# Per-pathology mix of the later work by overlapping authors (docs/paper.md §2.2): U-Ones where the uncertain
# mention usually means present, U-Zeros elsewhere.
_MIXED_UNCERTAIN_AS = {
    "Atelectasis": 1.0,
    "Cardiomegaly": 0.0,
    "Consolidation": 0.0,
    "Edema": 1.0,
    "Pleural Effusion": 0.0,
}

UNCERTAINTY_POLICIES = ("u_ones", "u_zeros", "u_ignore", "u_mixed")
RETINA_TARGETS = ("binary", "five_class")
RETINA_GRADES = ("0 no DR", "1 mild", "2 moderate", "3 severe", "4 proliferative")


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What the model must output: `num_outputs` logits read as one softmax or as independent sigmoids."""

    name: str
    label_names: tuple
    num_outputs: int
    loss: Literal["softmax", "sigmoid"]


def retina_task(target: str, threshold: int) -> TaskInfo:
    """'binary': grade >= threshold (paper: moderate DR, threshold 2); 'five_class': the 0-4 grade itself."""
    if target == "binary":
        if not 1 <= threshold <= 4:
            raise ValueError(f"retina_threshold must be in 1..4 (grades are 0-4), got {threshold}")
        return TaskInfo(f"retina_grade_ge_{threshold}", (f"grade < {threshold}", f"grade >= {threshold}"), 2, "softmax")
    if target == "five_class":
        return TaskInfo("retina_5class", RETINA_GRADES, 5, "softmax")
    raise ValueError(f"retina_target must be one of {RETINA_TARGETS}, got {target!r}")


def chexpert_task() -> TaskInfo:
    return TaskInfo("chexpert", CHEXPERT_PATHOLOGIES, len(CHEXPERT_PATHOLOGIES), "sigmoid")


def retina_targets(grades: np.ndarray, task: TaskInfo, where: str) -> np.ndarray:
    """int32 targets from 0-4 grades; any grade outside 0-4 raises, naming `where` (file) and the row."""
    grades = np.asarray(grades)
    bad = np.flatnonzero((grades < 0) | (grades > 4))
    if bad.size:
        raise ValueError(
            f"{where}: DR grade {grades[bad[0]]} at row {bad[0]} is outside 0-4 "
            f"({bad.size} such rows); fix or remove those rows."
        )
    if task.num_outputs == 5:
        return grades.astype(np.int32)
    threshold = int(task.name.rsplit("_", 1)[1])
    return (grades >= threshold).astype(np.int32)


def parse_chexpert_value(text: str, column: str, where: str) -> float:
    """CSV cell -> 1.0 / 0.0 / -1.0 / nan (blank). Anything else raises naming the cell."""
    text = text.strip()
    if text == "":
        return BLANK
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (POSITIVE, NEGATIVE, UNCERTAIN):
        raise ValueError(f"{where}: column {column!r} has {text!r}; CheXpert labels must be 1.0, 0.0, -1.0 or blank.")
    return value


def apply_uncertainty_policy(raw: np.ndarray, policy: str) -> tuple:
    """Raw [N, 5] labels (1, 0, -1, nan) -> (targets float32 [N, 5], mask float32 [N, 5]).

    Blank (not mentioned in the report) counts as negative under every policy, as in the CheXpert paper.
    Uncertain (-1): 'u_ones' -> 1, 'u_zeros' -> 0, 'u_ignore' -> masked out (mask 0, so loss and AUC skip it),
    'u_mixed' -> 1 for Atelectasis and Edema, 0 for the others (the mix of the later work, docs/paper.md §2.2).
    """
    raw = np.asarray(raw, np.float64)
    if raw.ndim != 2 or raw.shape[1] != len(CHEXPERT_PATHOLOGIES):
        raise ValueError(f"raw CheXpert labels must be [N, {len(CHEXPERT_PATHOLOGIES)}], got {raw.shape}")
    uncertain = raw == UNCERTAIN
    targets = np.where(np.isnan(raw), 0.0, raw)
    mask = np.ones_like(targets)
    if policy == "u_ones":
        targets[uncertain] = 1.0
    elif policy == "u_zeros":
        targets[uncertain] = 0.0
    elif policy == "u_ignore":
        targets[uncertain] = 0.0
        mask[uncertain] = 0.0
    elif policy == "u_mixed":
        fill = np.array([_MIXED_UNCERTAIN_AS[p] for p in CHEXPERT_PATHOLOGIES])
        targets = np.where(uncertain, fill[None, :], targets)
    else:
        raise ValueError(f"uncertainty_policy must be one of {UNCERTAINTY_POLICIES}, got {policy!r}")
    return targets.astype(np.float32), mask.astype(np.float32)
