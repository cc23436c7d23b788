"""Orthogonal Procrustes distance against scipy, and the Ding et al. sanity table against closed forms."""

from pathlib import Path

import analysis_reference as ref
import numpy as np
import pytest
import scipy.stats

from transfusion_jax.analysis import sanity, similarity


def correlated(seed, n=500, dx=12, dy=16, shared=6):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, shared))
    x = z @ rng.standard_normal((shared, dx)) + rng.standard_normal((n, dx)) + 3.0
    y = z @ rng.standard_normal((shared, dy)) + 0.5 * rng.standard_normal((n, dy))
    return x.astype(np.float32), y.astype(np.float32)


def procrustes(x, y):
    return similarity.similarity(x, y, "procrustes").score


@pytest.mark.parametrize("dx,dy", [(12, 12), (12, 16), (16, 12)])
def test_procrustes_matches_scipy_orthogonal_procrustes(dx, dy):
    x, y = correlated(0, dx=dx, dy=dy)
    ours = similarity.similarity(x, y, "procrustes")
    assert ours.score == pytest.approx(ref.procrustes_scipy(x, y), abs=1e-6)
    assert 0.05 < ours.score < 1.9  # a case far from both ends
    assert ours.score == pytest.approx(2 - 2 * ours.info["nuclear_norm"], abs=1e-12)


def test_procrustes_invariances_and_what_breaks_them():
    x, _ = correlated(1)
    q = scipy.stats.ortho_group.rvs(12, random_state=0)
    assert procrustes(x, x) == pytest.approx(0.0, abs=1e-6)
    assert procrustes(x, 7.0 * (x @ q) - 4.0) == pytest.approx(0.0, abs=1e-6)  # rotation, scale, shift
    stretched = x * np.linspace(0.2, 3.0, 12)  # an invertible linear map that is not a rotation
    assert procrustes(x, stretched) > 1e-2
    assert similarity.similarity(x, stretched, "cca").score == pytest.approx(1.0, abs=1e-6)  # CCA cannot see it
    with pytest.raises(ValueError, match="constant layer"):
        procrustes(x, np.ones_like(x))


def test_procrustes_of_independent_layers_is_near_its_closed_form():
    """Independent isotropic Gaussians (the null of unrelated layers): X^T Y has N(0, n) entries and ||X||_F^2 is
    about n d, so the normalised nuclear norm is sqrt(n) ||G||_* / (n d) for a standard Gaussian d x d G, whose
    singular values / sqrt(d) follow the quarter-circle law on [0, 2] (mean 8 / (3 pi)): 8 sqrt(d) / (3 pi sqrt(n))."""
    rng = np.random.default_rng(2)
    n, d = 20_000, 64
    x, y = rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((n, d)).astype(np.float32)
    nuclear = similarity.similarity(x, y, "procrustes").info["nuclear_norm"]
    assert nuclear == pytest.approx(8 * np.sqrt(d) / (3 * np.pi * np.sqrt(n)), rel=0.03)


def test_distance_orientation():
    x, y = correlated(3)
    for method in similarity.METHODS:
        result = similarity.similarity(x, y, method)
        expected = result.score if method == "procrustes" else 1 - result.score
        assert similarity.as_distance(result) == expected


# ----- sanity checks ----------------------------------------------------------------------------------------------


def test_remove_top_components_matches_the_svd():
    x, _ = correlated(4)
    xc = x.astype(np.float64) - x.mean(0, dtype=np.float64)
    s = np.linalg.svd(xc, compute_uv=False)
    for k in (0, 1, 5):
        removed = sanity.remove_top_components(x, k)
        np.testing.assert_allclose(np.linalg.svd(removed, compute_uv=False)[: 12 - k], s[k:], rtol=1e-9)
        assert np.linalg.matrix_rank(removed) == 12 - k
    with pytest.raises(ValueError, match="cannot be removed"):
        sanity.remove_top_components(x, 12)


def eigen_data(seed=5, n=4000, d=10):
    """Rows with principal variances 2^-i (i = 0..d-1), and a rotated copy standing in for a second seed."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * np.sqrt(2.0 ** -np.arange(d))
    x = x @ scipy.stats.ortho_group.rvs(d, random_state=seed)
    return x.astype(np.float32)


def test_sanity_table_sensitivity_has_the_closed_forms():
    """Removing the top k PCs (variances s_i): Procrustes = 2 - 2 sqrt(R), R = sum_{i>k} s_i / sum s_i; linear
    CKA = sqrt(sum_{i>k} s_i^2 / sum s_i^2); CCA = 0 (the rest is a subspace of the original: CCA cannot tell)."""
    x = eigen_data()
    rotated = x @ scipy.stats.ortho_group.rvs(10, random_state=1).astype(np.float32)
    table = sanity.sanity_table(x, rotated, ks=(1, 3), measures=[("cca", {}), ("cka", {}), ("procrustes", {})])
    s = np.linalg.svd(x.astype(np.float64) - x.mean(0), compute_uv=False) ** 2  # the sample's own variances
    rows = {r["measure"]: r for r in table["rows"]}
    for k in (1, 3):
        rest = s[k:]
        assert rows["procrustes"]["sensitivity"][str(k)] == pytest.approx(
            2 - 2 * np.sqrt(rest.sum() / s.sum()), abs=1e-6
        )
        assert rows["cka"]["sensitivity"][str(k)] == pytest.approx(
            1 - np.sqrt((rest**2).sum() / (s**2).sum()), abs=1e-6
        )
        assert rows["cca"]["sensitivity"][str(k)] == pytest.approx(0.0, abs=1e-5)
    # A rotation is what all three ignore; so Procrustes and CKA detect the removal, CCA does not.
    for name in ("cca", "cka", "procrustes"):
        assert rows[name]["specificity"] == pytest.approx(0.0, abs=1e-5)
        assert rows[name]["null"] > 0.1
    assert rows["procrustes"]["detects"] == rows["cka"]["detects"] == {"1": True, "3": True}
    assert rows["cca"]["detects"] == {"1": False, "3": False}


def test_sanity_table_is_json_ready_and_checks_its_inputs():
    import json

    x = eigen_data(n=300)
    table = sanity.sanity_table(x, x[::-1].copy(), ks=(1,))
    assert json.loads(json.dumps(table)) == table
    assert [r["measure"] for r in table["rows"]] == [
        "cca",
        "svcca keep=0.99",
        "pwcca",
        "cka",
        "cka debiased=True",
        "procrustes",
    ]
    with pytest.raises(ValueError, match="same examples"):
        sanity.sanity_table(x, x[:-1])
    with pytest.raises(ValueError, match="ks"):
        sanity.sanity_table(x, x, ks=(0,))


ACTIVATIONS = Path(__file__).resolve().parent / "data" / "activations.npz"  # provenance: data/README.md


def test_sanity_table_on_two_trained_seeds():
    """SVHN fc layer (1000 x 200) of two independently trained networks: for every measure the seed pair is
    closer than its shuffled null; CKA detects the removal of the top principal component and Procrustes that of
    the top 8 (not of the top 1: Procrustes' seed-to-seed distance, 0.43, exceeds that change, 0.11); the CCA family
    detects neither (a subspace of a layer is, to CCA, the same layer)."""
    with np.load(ACTIVATIONS) as archive:
        x, y = (archive[f"svhn_model{i}_fc"] for i in (0, 1))
    table = sanity.sanity_table(x, y, ks=(1, 8))
    rows = {r["measure"]: r for r in table["rows"]}
    for row in table["rows"]:
        assert row["specificity"] < row["null"], row["measure"]
    assert rows["cka"]["detects"] == {"1": True, "8": True}
    assert rows["procrustes"]["detects"] == {"1": False, "8": True}
    for name in ("cca", "pwcca"):
        assert rows[name]["detects"] == {"1": False, "8": False}
