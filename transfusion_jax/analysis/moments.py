"""Streaming moments of paired activations: a small pytree of sums updated batch by batch under `jax.jit`.

Every similarity measure in `similarity.py` is a function of these sums, so a layer seen over millions of
examples is compared in memory proportional to features**2, and the result equals the one-shot answer.

Numerics (the device may be a TPU, which has no float64): the accumulator is float32 and every matmul runs at
`precision='highest'`. Two things keep float32 honest:
  * shifted sums: all sums are of `x - shift_x`, where `shift_x` is the first batch's mean. Raw sums of data with
    a large mean offset lose the covariance to cancellation (`E[x^2] - E[x]^2`); shifted sums do not, as long as
    the offset moves little after the first batch.
  * Kahan (compensated) summation across batches, and across row chunks within a batch (`accumulate_traced`), so
    the error does not grow with the number of rows.
`finalize` then finishes on the host in float64.

The fourth-order sums (`sum_aa` ... `sum_bv`, with `a_i = |u_i|^2`, `b_i = |v_i|^2` the squared norms of the
shifted rows) exist only for debiased CKA: its unbiased HSIC needs `sum_i |x_i - mean|^2 |y_i - mean|^2`, which
expands exactly into these sums (see `_centered_norm_product`).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

CHUNK_ROWS = 8192  # rows per matmul inside one update (see `accumulate_traced`)
BATCH_BYTES = 16 * 2**20  # host rows sent to the device per batch and side by `from_arrays` (`default_batch_rows`)


class Sums(NamedTuple):
    """Per-batch sums of shifted rows u = x - shift_x, v = y - shift_y; a = |u|^2, b = |v|^2 row-wise."""

    sum_x: jax.Array  # (dx,)    sum u
    sum_y: jax.Array  # (dy,)    sum v
    xtx: jax.Array  # (dx, dx) sum u u^T
    yty: jax.Array  # (dy, dy) sum v v^T
    xty: jax.Array  # (dx, dy) sum u v^T
    sum_aa: jax.Array  # ()      sum a^2
    sum_bb: jax.Array  # ()      sum b^2
    sum_ab: jax.Array  # ()      sum a b
    sum_au: jax.Array  # (dx,)   sum a u
    sum_bu: jax.Array  # (dx,)   sum b u
    sum_av: jax.Array  # (dy,)   sum a v
    sum_bv: jax.Array  # (dy,)   sum b v


class Accumulator(NamedTuple):
    """Running state: count, shifts, Kahan sums and their compensations (all float32 except `n`)."""

    n: jax.Array  # () int32 number of rows seen
    shift_x: jax.Array  # (dx,)
    shift_y: jax.Array  # (dy,)
    sums: Sums
    comp: Sums  # Kahan compensation: the true total is sums - comp

    @property
    def dims(self) -> tuple[int, int]:
        return int(self.shift_x.shape[0]), int(self.shift_y.shape[0])


def _zero_sums(dx: int, dy: int) -> Sums:
    def z(*shape):
        return jnp.zeros(shape, jnp.float32)

    return Sums(z(dx), z(dy), z(dx, dx), z(dy, dy), z(dx, dy), z(), z(), z(), z(dx), z(dx), z(dy), z(dy))


def init(dx: int, dy: int) -> Accumulator:
    """An empty accumulator for `dx` features on the x side and `dy` on the y side."""
    if dx < 1 or dy < 1:
        raise ValueError(f"feature dimensions must be >= 1, got dx={dx}, dy={dy}")
    return Accumulator(
        jnp.zeros((), jnp.int32),
        jnp.zeros(dx, jnp.float32),
        jnp.zeros(dy, jnp.float32),
        _zero_sums(dx, dy),
        _zero_sums(dx, dy),
    )


def _gram(a: jax.Array, b: jax.Array) -> jax.Array:
    """a^T b over the rows (the contraction XLA:CPU runs fastest, without a transposed copy)."""
    return jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=jax.lax.Precision.HIGHEST)


def _batch_sums(u: jax.Array, v: jax.Array) -> Sums:
    """The sums of one chunk: three matrix products, and every first- and fourth-order sum from two skinny ones,
    [1, a, b]^T [u | v] (one pass over the chunk each, where eight separate sums and matrix-vector products
    cost 15 % of the update)."""
    a = jnp.sum(u * u, axis=1)
    b = jnp.sum(v * v, axis=1)
    d = jnp.stack([jnp.ones_like(a), a, b], axis=1)
    du, dv, dd = _gram(d, u), _gram(d, v), _gram(d, d)
    return Sums(
        sum_x=du[0],
        sum_y=dv[0],
        xtx=_gram(u, u),
        yty=_gram(v, v),
        xty=_gram(u, v),
        sum_aa=dd[1, 1],
        sum_bb=dd[2, 2],
        sum_ab=dd[1, 2],
        sum_au=du[1],
        sum_bu=du[2],
        sum_av=dv[1],
        sum_bv=dv[2],
    )


def _kahan_add(total, comp, value):
    y = value - comp
    t = total + y
    return t, (t - total) - y


def _add_rows(sums: Sums, comp: Sums, u: jax.Array, v: jax.Array) -> tuple[Sums, Sums]:
    pairs = jax.tree.map(_kahan_add, sums, comp, _batch_sums(u, v))
    return Sums(*(p[0] for p in pairs)), Sums(*(p[1] for p in pairs))


def accumulate_traced(acc: Accumulator, x: jax.Array, y: jax.Array) -> Accumulator:
    """The update itself, for use inside a caller's own jitted function (shapes must already be checked).

    The rows are summed CHUNK_ROWS at a time, each chunk's sums Kahan-added: a float32 matmul over many rows
    rounds its running sum once per row, so one product over a 100k-row batch is 10x less accurate than the same
    rows in 8192-row chunks (CCA coefficients of 100k x 512 rows within 2e-6 of float64 vs 2e-7; chunking costs no
    time: the matmuls run at the same rate).
    """
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    shift_x, shift_y = jax.lax.cond(  # the first batch's means (computed for that batch only)
        acc.n == 0, lambda: (jnp.mean(x, axis=0), jnp.mean(y, axis=0)), lambda: (acc.shift_x, acc.shift_y)
    )
    sums, comp = acc.sums, acc.comp
    full, tail = divmod(x.shape[0], CHUNK_ROWS)

    def chunk(i, state):
        u = jax.lax.dynamic_slice_in_dim(x, i * CHUNK_ROWS, CHUNK_ROWS) - shift_x
        v = jax.lax.dynamic_slice_in_dim(y, i * CHUNK_ROWS, CHUNK_ROWS) - shift_y
        return _add_rows(*state, u, v)

    if full:
        sums, comp = jax.lax.fori_loop(0, full, chunk, (sums, comp))
    if tail:
        start = full * CHUNK_ROWS
        sums, comp = _add_rows(sums, comp, x[start:] - shift_x, y[start:] - shift_y)
    return Accumulator(acc.n + x.shape[0], shift_x, shift_y, sums, comp)


_accumulate_jit = jax.jit(accumulate_traced)


def check_batch(acc: Accumulator, x, y) -> None:
    """Raise a ValueError naming the culprit if (x, y) cannot be added to `acc`."""
    for name, a in (("x", x), ("y", y)):
        if np.ndim(a) != 2:
            raise ValueError(
                f"{name} must be 2-D (examples, features), got shape {np.shape(a)}; "
                "reduce conv features first (transfusion_jax.analysis.activations)"
            )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same examples: got {x.shape[0]} rows in x, {y.shape[0]} in y")
    if x.shape[0] == 0:
        raise ValueError("empty batch (0 rows)")
    if (x.shape[1], y.shape[1]) != acc.dims:
        raise ValueError(
            f"batch has (dx, dy) = {(x.shape[1], y.shape[1])} features but the accumulator was made for {acc.dims}"
        )


def accumulate(acc: Accumulator, x, y) -> Accumulator:
    """Add a batch of paired rows x (B, dx), y (B, dy); jitted (one compile per batch shape). Host arrays of more
    than `default_batch_rows` rows go to the device in pieces of that many (see there why)."""
    check_batch(acc, x, y)
    step = default_batch_rows(*acc.dims)
    if x.shape[0] <= step or (isinstance(x, jax.Array) and isinstance(y, jax.Array)):
        return _accumulate_jit(acc, x, y)
    for start in range(0, x.shape[0], step):
        acc = _accumulate_jit(acc, x[start : start + step], y[start : start + step])
    return acc


@dataclasses.dataclass(frozen=True)
class Stats:
    """Float64 host summary of an accumulator: everything the similarity measures need.

    Covariances are divided by n (not n - 1): every measure here is invariant to that scale.
    `p_xy = sum_i |x_i - mean_x|^2 |y_i - mean_y|^2` (and p_xx, p_yy) feed debiased CKA.
    """

    n: int
    mean_x: np.ndarray
    mean_y: np.ndarray
    cxx: np.ndarray
    cyy: np.ndarray
    cxy: np.ndarray
    p_xx: float
    p_yy: float
    p_xy: float


def _centered_norm_product(n, s_ab, s_av, s_bu, s_uv, s_a, s_b, mu, nu) -> float:
    """sum_i |u_i - mu|^2 |v_i - nu|^2 from sums of the shifted rows (mu, nu: their means).

    Expanding (a_i - 2 u_i.mu + |mu|^2)(b_i - 2 v_i.nu + |nu|^2) and using sum u_i = n mu, sum v_i = n nu.
    """
    mm, nn = mu @ mu, nu @ nu
    return float(s_ab - 2 * nu @ s_av - 2 * mu @ s_bu + 4 * mu @ s_uv @ nu + nn * s_a + mm * s_b - 3 * n * mm * nn)


def finalize(acc: Accumulator) -> Stats:
    """Finish on the host in float64: combine Kahan sums, remove the shift, centre."""
    if int(acc.n) == 0:
        raise ValueError("no examples were accumulated")
    s = Sums(*(np.asarray(t, np.float64) - np.asarray(c, np.float64) for t, c in zip(acc.sums, acc.comp)))
    n = int(acc.n)
    mu, nu = s.sum_x / n, s.sum_y / n
    cxx = s.xtx / n - np.outer(mu, mu)
    cyy = s.yty / n - np.outer(nu, nu)
    cxy = s.xty / n - np.outer(mu, nu)
    s_a, s_b = np.trace(s.xtx), np.trace(s.yty)
    p_xy = _centered_norm_product(n, s.sum_ab, s.sum_av, s.sum_bu, s.xty, s_a, s_b, mu, nu)
    p_xx = _centered_norm_product(n, s.sum_aa, s.sum_au, s.sum_au, s.xtx, s_a, s_a, mu, mu)
    p_yy = _centered_norm_product(n, s.sum_bb, s.sum_bv, s.sum_bv, s.yty, s_b, s_b, nu, nu)
    shift_x = np.asarray(acc.shift_x, np.float64)
    shift_y = np.asarray(acc.shift_y, np.float64)
    return Stats(
        n=n,
        mean_x=shift_x + mu,
        mean_y=shift_y + nu,
        cxx=(cxx + cxx.T) / 2,
        cyy=(cyy + cyy.T) / 2,
        cxy=cxy,
        p_xx=p_xx,
        p_yy=p_yy,
        p_xy=p_xy,
    )


def default_batch_rows(dx: int, dy: int) -> int:
    """Rows per host batch of about BATCH_BYTES per side (float32): copies that size reuse the allocator's memory,
    where a larger one faults in fresh pages (on a CPU device, 200 MB to the device took 0.14 s in one batch and
    0.04 s in 16 MB batches); aligned arrays (e.g. memory-mapped .npy files) are not copied at all."""
    return max(1, BATCH_BYTES // (4 * max(dx, dy)))


def from_arrays(x, y, batch_size: int | None = None, progress: bool = False) -> Accumulator:
    """Accumulate whole arrays (or memory-mapped ones) in row batches of `batch_size` (None: `default_batch_rows`);
    `progress` shows a bar on stderr when there is more than one batch."""
    x_shape, y_shape = np.shape(x), np.shape(y)
    if len(x_shape) != 2 or len(y_shape) != 2:
        check_batch(init(1, 1), x, y)  # raises the 2-D error
    acc = init(x_shape[1], y_shape[1])
    if x_shape[0] != y_shape[0]:
        check_batch(acc, x, y)  # raises the row-count error
    step = default_batch_rows(x_shape[1], y_shape[1]) if batch_size is None else batch_size
    if step < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, x_shape[0], step)
    for start in tqdm.tqdm(starts, desc="moments", unit="batch", disable=not progress or len(starts) < 2):
        acc = accumulate(acc, np.asarray(x[start : start + step]), np.asarray(y[start : start + step]))
    return acc
