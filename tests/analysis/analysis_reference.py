"""Independent float64 NumPy references for the similarity tests, computed from the data rows (not from moments).

Deliberately a different route from the implementation: CCA via QR of the centred data and an SVD of Qx^T Qy;
PCA via an SVD of the centred rows; CKA and unbiased HSIC via n x n Gram matrices (Song et al. 2012, eq. 5);
Procrustes by solving for the rotation with scipy and measuring the residual.
"""

import functools

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits


def single_threaded(fn):
    """These matrices are small: multi-threaded OpenBLAS only thrashes on a busy 2-core machine (10x slower)."""

    @functools.wraps(fn)
    def wrapper(*args):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args)

    return wrapper


def centred(a):
    a = np.asarray(a, np.float64)
    return a - a.mean(axis=0)


@single_threaded
def cca_qr(x, y):
    """Canonical correlations (descending) and the x-side canonical variates (unit-norm columns, n x k)."""
    qx, _ = np.linalg.qr(centred(x))
    qy, _ = np.linalg.qr(centred(y))
    u, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    return rho, qx @ u


@single_threaded
def svcca_svd(x, y, k):
    def project(a):
        ac = centred(a)
        _, _, vt = np.linalg.svd(ac, full_matrices=False)
        return ac @ vt[:k].T

    return cca_qr(project(x), project(y))[0].mean()


@single_threaded
def pwcca_morcos(x, y):
    """Morcos et al. 2018: alpha_i = sum_j |<h_i, x_j>| with h_i the (whitened) canonical variates of x."""
    assert x.shape[1] <= y.shape[1]
    rho, h = cca_qr(x, y)
    alpha = np.abs(h.T @ centred(x)).sum(axis=1)
    alpha = alpha / alpha.sum()
    return float(alpha @ rho[: len(alpha)])


def _gram(a):
    a = np.asarray(a, np.float64)
    return a @ a.T


@single_threaded
def cka_gram(x, y):
    n = len(x)
    h = np.eye(n) - 1.0 / n
    kx, ky = h @ _gram(x) @ h, h @ _gram(y) @ h
    return np.sum(kx * ky) / np.sqrt(np.sum(kx * kx) * np.sum(ky * ky))


def hsic_unbiased(kx, ky):
    n = len(kx)
    kx, ky = kx - np.diag(np.diag(kx)), ky - np.diag(np.diag(ky))
    one = np.ones(n)
    total = (
        np.trace(kx @ ky)
        + (one @ kx @ one) * (one @ ky @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * one @ kx @ ky @ one
    )
    return total / (n * (n - 3))


@single_threaded
def cka_debiased_gram(x, y):
    """Gram matrices of the raw (uncentred) rows: the unbiased estimator does not need centring."""
    kx, ky = _gram(x), _gram(y)
    return hsic_unbiased(kx, ky) / np.sqrt(hsic_unbiased(kx, kx) * hsic_unbiased(ky, ky))


@single_threaded
def procrustes_scipy(x, y):
    """min_R ||X R - Y||_F^2 over orthogonal R, X and Y centred and scaled to unit Frobenius norm, the narrower one
    zero-padded: R from scipy.linalg.orthogonal_procrustes, then the residual itself (not the nuclear norm)."""
    x, y = centred(x), centred(y)
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    width = max(x.shape[1], y.shape[1])
    x, y = (np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (x, y))
    r, _ = scipy.linalg.orthogonal_procrustes(x, y)
    return float(np.sum((x @ r - y) ** 2))
