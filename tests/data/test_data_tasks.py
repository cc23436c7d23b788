"""Label semantics against hand-computed tables."""

import numpy as np
import pytest

from transfusion_jax.data import tasks

nan = np.nan


def test_retina_targets_binary_and_five_class():
    grades = np.array([0, 1, 2, 3, 4, 2, 0])
    binary = tasks.retina_task("binary", 2)
    assert (binary.num_outputs, binary.loss) == (2, "softmax")
    np.testing.assert_array_equal(tasks.retina_targets(grades, binary, "x"), [0, 0, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(
        tasks.retina_targets(grades, tasks.retina_task("binary", 3), "x"), [0, 0, 0, 1, 1, 0, 0]
    )
    five = tasks.retina_task("five_class", 2)
    assert five.num_outputs == 5 and len(five.label_names) == 5
    np.testing.assert_array_equal(tasks.retina_targets(grades, five, "x"), grades)


def test_retina_bad_grade_and_bad_task():
    with pytest.raises(ValueError, match=r"labels\.csv: DR grade 5 at row 2 is outside 0-4"):
        tasks.retina_targets(np.array([0, 1, 5]), tasks.retina_task("binary", 2), "labels.csv")
    with pytest.raises(ValueError, match="-1 at row 0"):
        tasks.retina_targets(np.array([-1]), tasks.retina_task("binary", 2), "x")
    with pytest.raises(ValueError, match="retina_target must be one of"):
        tasks.retina_task("referable", 2)
    with pytest.raises(ValueError, match="1..4"):
        tasks.retina_task("binary", 0)


# Columns: Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion.
RAW = np.array([[1, 0, -1, nan, -1], [-1, -1, 1, -1, nan]])
EXPECTED = {  # policy: (targets, mask), written out by hand
    "u_ones": ([[1, 0, 1, 0, 1], [1, 1, 1, 1, 0]], [[1] * 5, [1] * 5]),
    "u_zeros": ([[1, 0, 0, 0, 0], [0, 0, 1, 0, 0]], [[1] * 5, [1] * 5]),
    "u_ignore": ([[1, 0, 0, 0, 0], [0, 0, 1, 0, 0]], [[1, 1, 0, 1, 0], [0, 0, 1, 0, 1]]),
    "u_mixed": ([[1, 0, 0, 0, 0], [1, 0, 1, 1, 0]], [[1] * 5, [1] * 5]),
}


@pytest.mark.parametrize("policy", sorted(EXPECTED))
def test_uncertainty_policies_hand_computed(policy):
    targets, mask = tasks.apply_uncertainty_policy(RAW, policy)
    want_t, want_m = EXPECTED[policy]
    assert targets.dtype == mask.dtype == np.float32
    np.testing.assert_array_equal(targets, want_t)
    np.testing.assert_array_equal(mask, want_m)


def test_policy_and_cell_errors():
    with pytest.raises(ValueError, match="uncertainty_policy must be one of.*'u_ones'"):
        tasks.apply_uncertainty_policy(RAW, "u_multiclass")
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        tasks.apply_uncertainty_policy(RAW[:, :4], "u_ones")
    assert np.isnan(tasks.parse_chexpert_value("", "Edema", "f"))
    assert tasks.parse_chexpert_value("-1.0", "Edema", "f") == -1.0
    assert tasks.parse_chexpert_value("1", "Edema", "f") == 1.0
    with pytest.raises(ValueError, match=r"train\.csv row 3: column 'Edema' has '2\.0'"):
        tasks.parse_chexpert_value("2.0", "Edema", "train.csv row 3")
    with pytest.raises(ValueError, match="'yes'"):
        tasks.parse_chexpert_value("yes", "Edema", "f")
