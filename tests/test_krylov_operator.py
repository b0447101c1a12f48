"""KernelMatrix (widelimit/dynamics/krylov/operator.py): float32 chunked passes with one reused float64
buffer, float64 accumulation, the once-only finite check, and BLAS threads limited during a pass."""
import tracemalloc

import numpy as np
import pytest

from widelimit.dynamics.krylov import KernelMatrix
from widelimit.dynamics.krylov import operator as op_mod

N = 400


@pytest.fixture(scope="module")
def k32():
    rng = np.random.default_rng(1)
    g = rng.standard_normal((N, 30))
    return (g @ g.T + N * np.eye(N)).astype(np.float32)


def _op(k, rows, **kw):
    return KernelMatrix("ntk", k, 3.0, chunk_bytes=8 * N * rows, **kw)


@pytest.mark.parametrize("rows", [1, 7, 64, N, 5 * N])        # uneven last chunk, one chunk, chunk > matrix
def test_passes_match_float64_reference(k32, rows):
    rng = np.random.default_rng(2)
    a = k32.astype(np.float64) / 3.0           # the float32 values, exactly, in float64
    x, z = rng.standard_normal((N, 5)), rng.standard_normal((N, 3))
    op = _op(k32, rows)
    for _ in range(2):                          # the second pass reuses the first pass's buffer
        np.testing.assert_allclose(op.matmat(x), a @ x, rtol=1e-13, atol=1e-13 * np.abs(a @ x).max())
        np.testing.assert_allclose(op.rmatmat(z), a.T @ z, rtol=1e-13, atol=1e-13 * np.abs(a.T @ z).max())
        ref = x.T @ a @ x
        np.testing.assert_allclose(op.sandwich(x), 0.5 * (ref + ref.T), rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    assert op.passes == 6


def test_accumulation_is_float64(k32):
    # entries 1 + 2^-20 (exact in float32) times a vector summing 1e8 + small parts: float32 arithmetic would
    # lose the small parts (eps32 * 1e8 ~ 6), float64 keeps them to ~1e-8
    k = np.full((8, 2 ** 12), 1 + 2.0 ** -20, np.float32)
    x = np.full((2 ** 12, 1), 1.0)
    x[0] = 1e8
    op = KernelMatrix("k", k, 1.0, chunk_bytes=8 * 2 ** 12 * 3)
    exact = (1 + 2.0 ** -20) * (1e8 + 2 ** 12 - 1)
    np.testing.assert_allclose(op.matmat(x)[:, 0], exact, rtol=1e-15)


def test_second_pass_allocates_no_chunk(k32):
    rows = 100                                   # chunk 320 kB, output N x 1 = 3.2 kB
    op = _op(k32, rows)
    x = np.ones((N, 1))
    op.matmat(x)                                 # first pass allocates the buffer (and checks finiteness)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        op.matmat(x)
        op.sandwich(x)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 8 * N * rows / 4, f"a pass allocated {peak} bytes (one chunk is {8 * N * rows})"


@pytest.mark.parametrize("method", ["matmat", "rmatmat", "sandwich"])
def test_non_finite_chunk_raises_once_checked(k32, method):
    bad = k32.copy()
    bad[N - 3, 5] = np.nan                       # in the last (partial) chunk
    op = _op(bad, 7)
    with pytest.raises(ValueError, match="ntk contains NaN or inf"):
        getattr(op, method)(np.ones((N, 2)))
    good = _op(k32, 7)
    good.matmat(np.ones((N, 1)))
    assert good._finite_checked                  # checked once, on the first full pass


def test_blas_threads_limited_during_pass(k32):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []

    class Spy(KernelMatrix):
        def _chunks(self, *a):
            for item in super()._chunks(*a):
                seen.append(max(i["num_threads"] for i in threadpoolctl.threadpool_info()
                                if i["user_api"] == "blas"))
                yield item

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        if max(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas") < 2:
            pytest.skip("BLAS has one thread here: nothing to limit")
        Spy("k", k32, 1.0, chunk_bytes=8 * N * 50, blas_threads=1).matmat(np.ones((N, 2)))
        assert seen and set(seen) == {1}
        seen.clear()
        Spy("k", k32, 1.0, chunk_bytes=8 * N * 50).matmat(np.ones((N, 2)))   # default: the caller's setting
        assert seen and set(seen) == {2}
    assert op_mod._BLAS_THREADS is None and KernelMatrix("k", k32).blas_threads is None


def test_default_chunk_rows():
    big = np.zeros((3, 200_000), np.float32)                      # 4 MiB would be 2 rows: the floor is 10
    assert KernelMatrix("k", big).rows == op_mod._MIN_ROWS == 10
    assert KernelMatrix("k", np.zeros((3, 1000), np.float32)).rows == op_mod._CHUNK_BYTES // 8000
    assert KernelMatrix("k", big, chunk_bytes=8 * 200_000).rows == 1   # an explicit size is honoured


def test_wide_passes_use_larger_chunks_with_the_same_result():
    """Passes wider than 16 columns take 6 b rows per chunk (up to 64 MiB) under the default size, narrow
    ones and explicit sizes keep theirs; every pass gives the float64 product."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((700, 2000)).astype(np.float32)
    op = KernelMatrix("k", a)
    assert op.chunk_rows(10) == op.rows == op_mod._CHUNK_BYTES // (8 * 2000)
    assert op.chunk_rows(74) == 6 * 74 and op.chunk_rows(10_000) == op_mod._WIDE_CHUNK_BYTES // (8 * 2000)
    assert KernelMatrix("k", a, chunk_bytes=8 * 2000 * 7).chunk_rows(74) == 7
    ref = a.astype(np.float64)
    for b in (3, 74, 300):
        x = rng.standard_normal((2000, b))
        np.testing.assert_allclose(op.matmat(x), ref @ x, rtol=1e-12, atol=1e-12 * np.abs(ref @ x).max())
        z = rng.standard_normal((700, b))
        np.testing.assert_allclose(op.rmatmat(z), ref.T @ z, rtol=1e-12, atol=1e-12 * np.abs(ref.T @ z).max())
    sq = rng.standard_normal((900, 900)).astype(np.float32)
    sq = sq + sq.T
    q = rng.standard_normal((900, 80))
    ref = q.T @ sq.astype(np.float64) @ q
    np.testing.assert_allclose(KernelMatrix("s", sq).sandwich(q), 0.5 * (ref + ref.T), rtol=1e-11,
                               atol=1e-11 * np.abs(ref).max())


@pytest.mark.parametrize("kw, match", [({"chunk_bytes": 0}, "chunk_bytes"), ({"chunk_bytes": True}, "chunk_bytes"),
                                       ({"chunk_bytes": 1.5}, "chunk_bytes"), ({"blas_threads": 0}, "blas_threads"),
                                       ({"blas_threads": 2.0}, "blas_threads")])
def test_bad_options(k32, kw, match):
    with pytest.raises(ValueError, match=match):
        KernelMatrix("k", k32, 1.0, **kw)


def test_memmap_float32(k32, tmp_path):
    f = tmp_path / "k.npy"
    np.save(f, k32)
    mm = np.load(f, mmap_mode="r")
    x = np.random.default_rng(3).standard_normal((N, 4))
    ref = k32.astype(np.float64) @ x / 3.0
    np.testing.assert_allclose(KernelMatrix("k", mm, 3.0, chunk_bytes=8 * N * 9).matmat(x), ref, rtol=1e-13,
                               atol=1e-13 * np.abs(ref).max())


@pytest.mark.parametrize("rows", [1, 7, 100, 1000])     # many blocks, uneven last block, one block (N < rows)
def test_float64_upper_triangle_sandwich(monkeypatch, rows):
    """The float64 sandwich reads the upper block triangle only; it equals q^T K q of the full symmetric
    matrix to rounding whatever the block size (and the lower triangle is really not read: poisoning the
    strictly lower block triangle with NaN leaves the result finite and unchanged; the diagonal blocks are
    read whole)."""
    from widelimit.dynamics.krylov import operator as op_mod
    monkeypatch.setattr(op_mod, "_SANDWICH_ROWS", rows)
    rng = np.random.default_rng(5)
    n = 301
    g = rng.standard_normal((n, 40))
    k = g @ g.T
    q = rng.standard_normal((n, 23))
    ref = q.T @ k @ q / 2.5
    got = KernelMatrix("nngp", k, 2.5).sandwich(q)
    np.testing.assert_allclose(got, 0.5 * (ref + ref.T), rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    poisoned = k.copy()
    blk = np.arange(n) // rows
    poisoned[blk[:, None] > blk[None, :]] = np.nan          # the strictly lower block triangle
    np.testing.assert_allclose(KernelMatrix("nngp", poisoned, 2.5).sandwich(q), got, rtol=1e-13,
                               atol=1e-13 * np.abs(ref).max())
