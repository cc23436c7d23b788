"""CCA, SVCCA, PWCCA, linear CKA and the orthogonal Procrustes distance, all from streamed moments (`moments.Stats`),
in float64 on the host.

Convention: activations are (examples, features). Each measure needs only d x d covariances, so the heavy part
(accumulating them) runs jitted on the device and the small eigen/SVD problems here run in float64 NumPy.

Choices the papers leave open, made here:
  * Dead neurons: a neuron whose variance is <= `epsilon` times the layer's largest neuron variance is dropped
    before CCA (default 1e-6; its covariance row is float32 noise, which whitening would blow up).
  * Whitening uses the eigenvectors of each covariance whose eigenvalue exceeds `rtol` times the largest
    (default 1e-6, about ten times float32 resolution): exactly rank-deficient layers keep their true rank.
  * CCA needs more examples than features (otherwise every coefficient is trivially 1): we raise, rather than
    return a regularised answer. SVCCA needs more examples than kept directions (than features for keep=None).
    CKA has no such limit. Even with n > d, CCA of unrelated layers is far from 0 unless n >> d: for
    independent Gaussian data the mean squared coefficient is max(dx, dy) / (n - 1).
  * The CCA score is the plain mean of all min(rank_x, rank_y) coefficients (google/svcca's `mean` instead
    averages only the top coefficients holding 98% of their sum).
"""

import dataclasses
import functools
from typing import Any

import numpy as np
import scipy.linalg
import threadpoolctl

from transfusion_jax.analysis import moments

METHODS = ("cca", "svcca", "pwcca", "cka", "procrustes")
# Below this many features on the larger side, the float64 finish runs BLAS/LAPACK on one thread. It is a chain of
# mid-size LAPACK calls between which OpenBLAS's threads spin: on the 2-core dev machine under load, CCA of 512
# features took 0.11 s on one thread and 1.0 s on two, 1024 features 0.4 s and 1.8 s; at 2048, two threads won
# (1.9 s against 2.8 s).
ONE_BLAS_THREAD_BELOW = 2048
# Methods whose score is a distance (0 = the same up to rotation, larger = less similar); the others are similarities
# in [0, 1] (1 = the same up to their invariances).
DISTANCES = ("procrustes",)


@dataclasses.dataclass(frozen=True)
class Similarity:
    """One similarity result: the score plus what it was computed from."""

    method: str
    score: float
    n_examples: int
    coefficients: np.ndarray | None = None  # canonical correlations, descending (CCA family)
    weights: np.ndarray | None = None  # PWCCA projection weights, summing to 1
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {"method": self.method, "score": float(self.score), "n_examples": self.n_examples, **self.info}
        for name in ("coefficients", "weights"):
            value = getattr(self, name)
            if value is not None:
                out[name] = [float(v) for v in value]
        return out


@functools.cache
def _threadpools() -> threadpoolctl.ThreadpoolController:
    return threadpoolctl.ThreadpoolController()


def _blas_threads(measure_fn):
    """Runs `measure_fn(stats, ...)` on one BLAS thread when its matrices are small (ONE_BLAS_THREAD_BELOW)."""

    @functools.wraps(measure_fn)
    def wrapper(stats: moments.Stats, *args, **kwargs):
        if max(len(stats.cxx), len(stats.cyy)) >= ONE_BLAS_THREAD_BELOW:
            return measure_fn(stats, *args, **kwargs)
        with _threadpools().limit(limits=1, user_api="blas"):
            return measure_fn(stats, *args, **kwargs)

    return wrapper


def _kept_neurons(cov: np.ndarray, epsilon: float, side: str) -> np.ndarray:
    var = np.diag(cov)
    if var.max() <= 0:
        raise ValueError(f"every neuron on the {side} side has zero variance (constant activations)")
    return var > epsilon * var.max()


def _cholesky(matrix: np.ndarray) -> np.ndarray | None:
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return None


def _positive_definite(matrix: np.ndarray) -> bool:
    return _cholesky(matrix) is not None


class _Whitener:
    """W with W^T cov W = I_k over the k directions whose eigenvalue exceeds rtol * max, applied without forming it
    where it can be.

    When every direction is kept, W = L^{-T} for the Cholesky factor cov = L L^T, applied by triangular solves: any
    W spanning the kept directions gives the same canonical correlations, and a Cholesky factor costs a tenth of an
    eigendecomposition (2048 features, one core: 0.2 s against 2.5 s). That every direction is kept is proven
    without eigenvalues when cov - rtol * |cov|_F * I has a Cholesky factor (its eigenvalues all exceed
    rtol * |cov|_F >= rtol * max); else the eigenvalues decide. Otherwise W = V_k diag(1/sqrt(l_k)) over the kept
    eigenvectors.
    """

    def __init__(self, cov: np.ndarray, rtol: float):
        self.lower = self.basis = None
        if _positive_definite(cov - rtol * np.linalg.norm(cov) * np.eye(len(cov))):
            self.lower = _cholesky(cov)
        else:
            evals = np.linalg.eigvalsh(cov)
            if evals[0] > rtol * evals[-1]:
                self.lower = _cholesky(cov)  # None if not numerically positive definite: then eigh
        if self.lower is None:
            evals, evecs = np.linalg.eigh(cov)
            keep = evals > rtol * evals.max()
            self.basis = evecs[:, keep] / np.sqrt(evals[keep])
        self.dims = len(cov) if self.basis is None else self.basis.shape[1]

    def t_dot(self, a: np.ndarray) -> np.ndarray:
        """W^T a."""
        if self.basis is not None:
            return self.basis.T @ a
        return scipy.linalg.solve_triangular(self.lower, a, lower=True, check_finite=False)

    def dot(self, a: np.ndarray) -> np.ndarray:
        """W a."""
        if self.basis is not None:
            return self.basis @ a
        return scipy.linalg.solve_triangular(self.lower, a, lower=True, trans="T", check_finite=False)


def _cca_core(cxx, cyy, cxy, rtol, side: str | None = None):
    """Canonical correlations (descending); given `side` ('x' or 'y'), also that side's canonical directions A
    (A^T C A = I, A^T Cxy B = diag(rho) for the other side's B).

    rho_i^2 are the top eigenvalues of M M^T (x) or M^T M (y), M = Wx^T Cxy Wy: a symmetric eigenproblem several
    times cheaper than the SVD of M, and as accurate for the coefficients the scores average (an absolute error of
    eps * |M|^2 in rho^2: at most ~1e-8 in rho, as rho -> 0). Without `side`, the smaller of the two is used.
    """
    wx, wy = _Whitener(cxx, rtol), _Whitener(cyy, rtol)
    m = wx.t_dot(wy.t_dot(cxy.T).T)
    k = min(m.shape)
    if side is None:
        rho2 = np.linalg.eigvalsh(m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m)[::-1]
        return np.sqrt(np.clip(rho2, 0.0, 1.0))
    w, gram = (wx, m @ m.T) if side == "x" else (wy, m.T @ m)
    rho2, vecs = np.linalg.eigh(gram)
    return np.sqrt(np.clip(rho2[::-1][:k], 0.0, 1.0)), w.dot(vecs[:, ::-1][:, :k])


def _check_examples(n: int, dims: int, what: str) -> None:
    if n <= dims:
        raise ValueError(
            f"{what} needs more examples than features: got n={n} examples for {dims} features. "
            "Collect more examples (e.g. spatial positions as datapoints), or use svcca with a smaller "
            "keep, or cka (no such limit)."
        )


def _kept_covariances(stats: moments.Stats, epsilon: float):
    kx = _kept_neurons(stats.cxx, epsilon, "x")
    ky = _kept_neurons(stats.cyy, epsilon, "y")
    _check_examples(stats.n, max(kx.sum(), ky.sum()), "CCA")
    return stats.cxx[np.ix_(kx, kx)], stats.cyy[np.ix_(ky, ky)], stats.cxy[np.ix_(kx, ky)], kx, ky


@_blas_threads
def cca(stats: moments.Stats, epsilon: float = 1e-6, rtol: float = 1e-6) -> Similarity:
    """Mean canonical correlation between the two layers (Hotelling 1936), after dropping dead neurons."""
    cxx, cyy, cxy, kx, ky = _kept_covariances(stats, epsilon)
    rho = _cca_core(cxx, cyy, cxy, rtol)
    return Similarity(
        "cca",
        float(rho.mean()),
        stats.n,
        coefficients=rho,
        info={"kept_x": int(kx.sum()), "kept_y": int(ky.sum()), "epsilon": epsilon, "rtol": rtol},
    )


def _n_directions(evals_desc: np.ndarray, keep: int | float | None, side: str) -> int:
    if keep is None:
        return len(evals_desc)
    if isinstance(keep, float):
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"a float keep is a variance fraction in (0, 1], got {keep}")
        frac = np.cumsum(evals_desc) / evals_desc.sum()
        return int(min(np.searchsorted(frac, keep * (1 - 1e-12)) + 1, len(evals_desc)))
    if keep < 1:
        raise ValueError(f"keep must be >= 1 directions, got {keep}")
    if keep > len(evals_desc):
        raise ValueError(f"keep={keep} exceeds the {len(evals_desc)} non-degenerate directions on the {side} side")
    return int(keep)


def _principal(cov: np.ndarray, keep, rtol: float, side: str) -> np.ndarray:
    """Top principal directions of `cov` (columns), as many as `keep` asks."""
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    nondegenerate = evals > rtol * evals[0]
    k = _n_directions(evals[nondegenerate], keep, side)
    return evecs[:, :k]


@_blas_threads
def svcca(stats: moments.Stats, keep: int | float | None = 0.99, rtol: float = 1e-6) -> Similarity:
    """SVCCA (Raghu et al. 2017): PCA of each layer to `keep` directions, then mean CCA of the projections.

    keep: an int number of directions per side, a float fraction of variance to retain (smallest k reaching it;
    0.99 as in the SVCCA paper), or None for every non-degenerate direction (then SVCCA equals CCA). PCA comes
    from the accumulated covariance, so it is exact for streamed data, not an approximation of an SVD of the rows.
    """
    px = _principal(stats.cxx, keep, rtol, "x")
    py = _principal(stats.cyy, keep, rtol, "y")
    dims = (px.shape[1], py.shape[1]) if keep is not None else (len(stats.cxx), len(stats.cyy))
    _check_examples(stats.n, max(dims), "SVCCA")
    rho = _cca_core(px.T @ stats.cxx @ px, py.T @ stats.cyy @ py, px.T @ stats.cxy @ py, rtol)
    return Similarity(
        "svcca",
        float(rho.mean()),
        stats.n,
        coefficients=rho,
        info={"keep": keep, "dims_x": int(px.shape[1]), "dims_y": int(py.shape[1]), "rtol": rtol},
    )


@_blas_threads
def pwcca(stats: moments.Stats, epsilon: float = 1e-6, rtol: float = 1e-6) -> Similarity:
    """Projection-weighted CCA (Morcos et al. 2018): sum_i alpha_i rho_i with alpha_i ∝ sum_j |<h_i, z_j>|.

    h_i = Z_c a_i are the true canonical variates (whitened: unit variance) of the side with fewer kept neurons and
    z_j its centred neurons, so <h_i, z_j> = n (Cov a_i)_j comes straight from the covariance: no activations needed.
    As in the paper, weights use inner products, not correlations, so high-variance neurons count more.

    Differences from google/svcca `pwcca.compute_pwcca` (whose results this will not reproduce):
      * it forms "canonical variates" from the SVD vectors of the whitened cross-covariance without applying the
        whitening matrix (coef_x @ acts instead of coef_x @ invsqrt_xx @ acts), re-adds the means and
        QR-orthonormalises them, then takes inner products with the uncentred activations;
      * when y has fewer neurons it builds y's variates from `acts1` where `acts2` is meant.
    """
    cxx, cyy, cxy, kx, ky = _kept_covariances(stats, epsilon)
    side = "x" if kx.sum() <= ky.sum() else "y"
    rho, dirs = _cca_core(cxx, cyy, cxy, rtol, side)
    cov = cxx if side == "x" else cyy
    raw = np.abs(cov @ dirs).sum(axis=0)
    weights = raw / raw.sum()
    return Similarity(
        "pwcca",
        float(weights @ rho),
        stats.n,
        coefficients=rho,
        weights=weights,
        info={"weights_side": side, "kept_x": int(kx.sum()), "kept_y": int(ky.sum()), "epsilon": epsilon, "rtol": rtol},
    )


def _debiased_hsic(n: int, cross_fro2: float, p: float, trace_x: float, trace_y: float) -> float:
    """Unbiased HSIC (Song et al. 2012) for linear kernels, times n(n-3) and divided by n^2.

    With K = Xc Xc^T, L = Yc Yc^T and zeroed diagonals, tr(K~L~) = T - P, 1^T K~ 1 = -n tr(Cxx),
    1^T K~ L~ 1 = P, where T = ||Xc^T Yc||_F^2 and P = sum_i |xc_i|^2 |yc_i|^2: all from moments.
    """
    big_t = n * n * cross_fro2
    big_a, big_b = n * trace_x, n * trace_y
    return (big_t - n / (n - 2) * p + big_a * big_b / ((n - 1) * (n - 2))) / n**2


@_blas_threads
def cka(stats: moments.Stats, debiased: bool = False) -> Similarity:
    """Linear CKA (Kornblith et al. 2019) from feature-space covariances: ||Cxy||^2 / (||Cxx|| ||Cyy||).

    debiased=True replaces each HSIC by its unbiased estimator (Song et al. 2012; as in Kornblith et al.'s
    debiased CKA and Nguyen et al. 2021). It is exact under streaming: the estimator needs, beyond covariances,
    only sum_i |xc_i|^2 |yc_i|^2 and its x-x, y-y versions, which the accumulator carries. Needs n > 3, and the
    ratio is undefined when an unbiased self-HSIC is <= 0 (tiny n): then we raise.
    """
    if not debiased:
        score = np.sum(stats.cxy**2) / np.sqrt(np.sum(stats.cxx**2) * np.sum(stats.cyy**2))
        return Similarity("cka", float(score), stats.n, info={"debiased": False})
    n = stats.n
    if n <= 3:
        raise ValueError(f"debiased CKA needs more than 3 examples, got n={n}")
    tx, ty = np.trace(stats.cxx), np.trace(stats.cyy)
    hxy = _debiased_hsic(n, np.sum(stats.cxy**2), stats.p_xy, tx, ty)
    hxx = _debiased_hsic(n, np.sum(stats.cxx**2), stats.p_xx, tx, tx)
    hyy = _debiased_hsic(n, np.sum(stats.cyy**2), stats.p_yy, ty, ty)
    if hxx <= 0 or hyy <= 0:
        raise ValueError(
            f"debiased CKA is undefined here: unbiased self-HSIC x={hxx:.3g}, y={hyy:.3g} not positive "
            f"(n={n} too small or a constant layer)"
        )
    return Similarity("cka", float(hxy / np.sqrt(hxx * hyy)), n, info={"debiased": True})


@_blas_threads
def procrustes(stats: moments.Stats) -> Similarity:
    """Orthogonal Procrustes distance (Ding, Denain & Steinhardt 2021; Williams et al. 2021), a distance in [0, 2].

    With X, Y the centred activations each scaled to unit Frobenius norm, min over orthogonal R of ||XR - Y||_F^2 is
    2 - 2 ||X^T Y||_* (nuclear norm; Schönemann 1966). From moments: X^T Y = n Cxy and ||X||_F^2 = n tr(Cxx), so the
    normalised cross-product is Cxy / sqrt(tr Cxx tr Cyy) and no activation is needed. Layers of different widths
    are compared as if the narrower were zero-padded (the nuclear norm of the dx x dy product already is that).
    Invariant to rotations and isotropic scaling, not to other linear maps (unlike CCA).
    """
    tx, ty = np.trace(stats.cxx), np.trace(stats.cyy)
    if tx <= 0 or ty <= 0:
        raise ValueError(
            f"Procrustes distance is undefined for a constant layer (total variance x={tx:.3g}, y={ty:.3g})"
        )
    nuclear = float(np.linalg.svd(stats.cxy, compute_uv=False).sum() / np.sqrt(tx * ty))
    return Similarity("procrustes", max(2.0 - 2.0 * nuclear, 0.0), stats.n, info={"nuclear_norm": nuclear})


def as_distance(result: Similarity) -> float:
    """A result on one orientation for every method: the Procrustes distance as is, 1 - score for similarities."""
    return float(result.score) if result.method in DISTANCES else 1.0 - float(result.score)


def measure(stats: moments.Stats, method: str, **options) -> Similarity:
    """Dispatch to one of METHODS with its options (keep=, epsilon=, rtol=, debiased=)."""
    functions = {"cca": cca, "svcca": svcca, "pwcca": pwcca, "cka": cka, "procrustes": procrustes}
    if method not in functions:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    return functions[method](stats, **options)


def similarity(x, y, method: str, batch_size: int | None = None, **options) -> Similarity:
    """One call on whole arrays (examples, features): accumulate (in `batch_size` rows; None: ~16 MB batches,
    `moments.default_batch_rows`) then `measure`."""
    return measure(moments.finalize(moments.from_arrays(x, y, batch_size)), method, **options)
