"""Analytic MLP kernels at large N in bounded memory, resumable on disk (docs/theory.md §4).

:func:`blockwise_kernels` fills the (N1, N2) NTK and/or NNGP of an :class:`widelimit.arch.MLP` (the
closed forms of :mod:`widelimit.kernels.native`) block by block of ``block x block`` input pairs:

* storage ``float32`` (default; half the bytes) or ``float64``; every block is computed in float64 and
  rounded once when stored;
* in memory, or in ``.npy`` memory-mapped files under ``path`` with a record of the finished blocks of
  each kernel, so an interrupted computation resumes where it stopped; a request for a subset of an
  earlier run's kernels (the NTK of an NTK + NNGP run) reuses the finished files read-only, untouched.
  The record is keyed by a hash of spec, inputs, dtype and block: files of another computation, or
  without a record, raise ValueError and are never overwritten;
* for ``x2=None`` only the blocks on and above the diagonal are computed and mirrored; diagonal blocks
  use the exact-diagonal convention of :func:`~widelimit.kernels.native.mlp_kernels`;
* the bytes it will hold are printed (and checked against the available memory when not on disk) before
  anything is computed; a tqdm progress bar counts blocks;
* ``device="auto"``: the same recursion in JAX float64 on a GPU when one is present, NumPy otherwise.

Speed (NumPy path): each block is computed in row chunks of ~64k input pairs in preallocated float64
buffers (cache-resident, in-place ufuncs; two ``arctan2`` per pair and layer pair dominate) and BLAS is
limited to one thread for the small ``(rows x d) @ (d x block)`` Gram products, which threaded OpenBLAS
ran ~15x slower on the shared 2-core machine (benchmarks/RESULTS_scale.md).
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..arch import MLP
from ._store import open_store, write_record
from .container import KernelBlocks
from .native import _check_inputs, mlp_kernels

GETS = ("ntk", "nngp")
#: seconds between flushes of the memory-mapped results and the record of finished blocks (a killed
#: process loses nothing either way: its dirty pages stay in the page cache; a crash loses at most this)
FLUSH_EVERY_S = 30.0


def available_memory_bytes() -> int:
    """Physical memory currently available (``/proc/meminfo`` MemAvailable, else ``sysconf``)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _jax_block_fn(spec: MLP):
    """A jitted float64 JAX version of the native recursion for one block (ReLU-family, erf, identity)."""
    import jax
    import jax.numpy as jnp

    W2 = spec.W_std ** 2
    b2 = 0.0 if spec.b_std is None else spec.b_std ** 2
    act = spec.activation
    if act in ("relu", "leaky_relu", "abrelu"):
        lo, hi = {"relu": (0.0, 1.0), "leaky_relu": (float(getattr(spec, "slope", 0.0)), 1.0)}.get(
            act, (float(getattr(spec, "abrelu_a", 0.0)), float(getattr(spec, "abrelu_b", 1.0))))

    def fn(x1, x2, same):
        d = x1.shape[1]
        nngp = x1 @ x2.T / d
        v1 = jnp.sum(x1 * x1, 1) / d
        v2 = v1 if same else jnp.sum(x2 * x2, 1) / d
        eye = jnp.diag_indices(x1.shape[0])
        if same:  # exact diagonal, as the native backend (an input's angle with itself is 0)
            nngp = nngp.at[eye].set(v1)
        ntk = jnp.zeros_like(nngp)
        for layer in range(spec.depth):
            if spec.parameterization == "standard":
                fan = d if layer == 0 else spec.width
                ntk = fan * nngp + W2 * ntk + (1.0 if spec.has_bias else 0.0)
                nngp, v1, v2 = W2 * nngp + b2, W2 * v1 + b2, W2 * v2 + b2
            else:
                nngp, v1, v2 = W2 * nngp + b2, W2 * v1 + b2, W2 * v2 + b2
                ntk = nngp + W2 * ntk
            if layer == spec.depth - 1:
                break
            if act == "erf":
                prod = (1 + 2 * v1)[:, None] * (1 + 2 * v2)[None, :]
                root = jnp.sqrt(jnp.maximum(prod - 4 * nngp ** 2, 0.0))
                dot = (4 / math.pi) / root
                nngp = (2 / math.pi) * jnp.arctan2(2 * nngp, root)
                v1, v2 = ((2 / math.pi) * jnp.arctan2(v, jnp.sqrt(v + 0.25)) for v in (v1, v2))
                ntk = ntk * dot
            elif act != "identity":
                root = jnp.sqrt(jnp.maximum(v1[:, None] * v2[None, :] - nngp ** 2, 0.0))
                if same:  # XLA may round the diagonal differently (FMA): keep the angle exactly 0 there
                    root = root.at[eye].set(0.0)
                angle = jnp.where((root == 0) & (nngp == 0), math.pi / 2, jnp.arctan2(root, nngp))
                fac = (lo - hi) ** 2 / (2 * math.pi)
                dot = (lo ** 2 + hi ** 2) / 2 - fac * angle
                nngp = fac * root + dot * nngp
                v1, v2 = (lo ** 2 + hi ** 2) / 2 * v1, (lo ** 2 + hi ** 2) / 2 * v2
                ntk = ntk * dot
        return ntk, nngp

    return jax.jit(fn, static_argnums=2)


_CHUNK_ENTRIES = 1 << 16   # input pairs per cache-resident chunk of the NumPy path (~0.5 MiB per buffer)


def _numpy_block(spec: MLP, a: np.ndarray, b: np.ndarray, diag: bool, out_ntk, out_nngp,
                 mirror_ntk=None, mirror_nngp=None, chunk: int = _CHUNK_ENTRIES) -> None:
    """One block of the native recursion, written into ``out_ntk``/``out_nngp`` (views, any float dtype).

    The same floating-point operations in the same order as :func:`~widelimit.kernels.native.mlp_kernels`
    (so the float64 values are identical), but on row chunks of ~``chunk`` entries held in preallocated
    float64 buffers that stay in cache, with in-place ufuncs, and rounded to the storage dtype once when
    copied out; ``mirror_*`` (views of shape (len(b), len(a)), or None) also receive the transpose, chunk
    by chunk from the cached buffers (~2x faster than transposing the stored block afterwards).
    ReLU-family activations only; others use :func:`mlp_kernels` per block.
    """
    if spec.activation not in ("relu", "leaky_relu", "abrelu"):
        ntk, nngp = mlp_kernels(spec, a, None if diag else b)
        for o, mo, v in ((out_ntk, mirror_ntk, ntk), (out_nngp, mirror_nngp, nngp)):
            if o is not None:
                o[...] = v
            if mo is not None:
                mo[...] = v.T
        return
    from .native import _abrelu_slopes
    lo, hi = _abrelu_slopes(spec)
    factor = (lo - hi) ** 2 / (2 * math.pi)
    mean_sq = (lo ** 2 + hi ** 2) / 2
    W2 = spec.W_std ** 2
    b2 = 0.0 if spec.b_std is None else spec.b_std ** 2
    d = a.shape[1]
    std = spec.parameterization == "standard"
    v1_all = np.einsum("ij,ij->i", a, a) / d
    v2_0 = v1_all if diag else np.einsum("ij,ij->i", b, b) / d
    n2 = b.shape[0]
    rows = max(1, min(a.shape[0], chunk // max(n2, 1)))
    k = np.empty((rows, n2))
    t = np.empty((rows, n2))
    r = np.empty((rows, n2))
    g = np.empty((rows, n2))
    mask = np.empty((rows, n2), bool)
    bt = np.ascontiguousarray(b.T)
    for r0 in range(0, a.shape[0], rows):
        r1 = min(a.shape[0], r0 + rows)
        m = r1 - r0
        K, T, R, G, Z = k[:m], t[:m], r[:m], g[:m], mask[:m]
        np.matmul(a[r0:r1], bt, out=K)
        K /= d
        v1, v2 = v1_all[r0:r1], v2_0
        if diag:  # exact diagonal: an input's angle with itself is 0 (as the native backend)
            idx = np.arange(m)
            K[idx, r0 + idx] = v1
        T.fill(0.0)
        for layer in range(spec.depth):
            if std:
                fan = d if layer == 0 else spec.width
                np.multiply(T, W2, out=T)
                np.multiply(K, fan, out=G)
                np.add(G, T, out=T)
                if spec.has_bias:
                    T += 1.0
                K *= W2
                K += b2
                v1, v2 = W2 * v1 + b2, W2 * v2 + b2
            else:
                K *= W2
                K += b2
                v1, v2 = W2 * v1 + b2, W2 * v2 + b2
                np.multiply(T, W2, out=T)
                np.add(K, T, out=T)
            if layer == spec.depth - 1:
                break
            np.multiply(v1[:, None], v2[None, :], out=R)       # prod
            np.multiply(K, K, out=G)                           # nngp ** 2
            np.subtract(R, G, out=R)
            np.maximum(R, 0.0, out=R)
            np.sqrt(R, out=R)                                  # root
            np.arctan2(R, K, out=G)                            # angle
            np.equal(R, 0.0, out=Z)
            if Z.any():                                        # both zero: angle pi/2 (native convention)
                Z &= K == 0.0
                G[Z] = math.pi / 2
            np.multiply(G, factor, out=G)
            np.subtract(mean_sq, G, out=G)                     # dot_sigma
            np.multiply(R, factor, out=R)
            np.multiply(G, K, out=K)
            np.add(R, K, out=K)                                # nngp
            v1, v2 = mean_sq * v1, mean_sq * v2
            np.multiply(T, G, out=T)                           # ntk * dot_sigma
        for o, mo, v in ((out_ntk, mirror_ntk, T), (out_nngp, mirror_nngp, K)):
            if o is not None:
                o[r0:r1] = v
            if mo is not None:
                mo[:, r0:r1] = v.T


def _pick_device(device: str) -> str:
    if device not in ("auto", "numpy", "jax"):
        raise ValueError(f"device must be 'auto', 'numpy' or 'jax', got {device!r}")
    if device != "auto":
        return device
    try:
        import jax
        return "jax" if any(d.platform == "gpu" for d in jax.devices()) else "numpy"
    except Exception:  # no JAX, or no backend
        return "numpy"


def _key(spec: MLP, x1: np.ndarray, x2: Optional[np.ndarray], get, dtype, block) -> str:
    h = hashlib.sha256(json.dumps([spec.to_dict() if hasattr(spec, "to_dict") else repr(spec), list(get),
                                   str(dtype), int(block)], sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(x1).tobytes())
    h.update(b"same" if x2 is None else np.ascontiguousarray(x2).tobytes())
    return h.hexdigest()[:24]


def blockwise_kernels(spec: MLP, x1, x2=None, *, get: Sequence[str] = GETS, block: int = 2048,
                      dtype: str = "float32", path=None, device: str = "auto", progress: bool = True,
                      verbose: bool = True) -> dict:
    """Infinite-width MLP kernels between ``x1`` (N1, d) and ``x2`` (N2, d) (``None``: ``x1``), blockwise.

    Args:
      get: which kernels, a subset of ``("ntk", "nngp")`` (unnormalised, per output as everywhere).
      block: rows/columns of input pairs per block (memory of one block ~ ``6 * 8 * block^2`` bytes).
      dtype: storage ``"float32"`` or ``"float64"`` (computation is always float64).
      path: directory for ``<kernel>.npy`` memory-mapped results and ``progress.json``; resumes a finished
        part of the same computation and reuses finished kernel files read-only; ValueError (before any
        compute) for files of another computation. ``None``: in memory (MemoryError up front if it does
        not fit).
      device: ``"auto"`` (JAX on a GPU if present, else NumPy), ``"numpy"`` or ``"jax"``.

    Returns ``{"ntk": array, "nngp": array}`` (only the requested keys); memmaps when ``path`` is given
    (read-only ``mode="r"`` for a kernel that was already complete).
    """
    x1, x2c, same = _check_inputs(spec, x1, x2)
    get = tuple(get)
    if not get or any(g not in GETS for g in get) or len(set(get)) != len(get):
        raise ValueError(f"get must be a non-empty subset of {GETS}, got {get!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    dev = _pick_device(device)
    n1, n2 = x1.shape[0], x2c.shape[0]
    nbytes = len(get) * n1 * n2 * np.dtype(dtype).itemsize
    work = 8 * 8 * min(block, n1) * min(block, n2)
    avail = available_memory_bytes()
    where = "in memory" if path is None else f"memory-mapped under {path}"
    if verbose:
        print(f"blockwise_kernels: {'+'.join(get)} {n1}x{n2} {dtype} = {nbytes / 2**30:.2f} GiB {where} "
              f"(+{work / 2**20:.0f} MiB per block; {avail / 2**30:.1f} GiB available; device {dev})",
              file=sys.stderr)
    if path is None and nbytes + work > 0.9 * avail:
        raise MemoryError(f"the kernels need {nbytes / 2**30:.2f} GiB but only {avail / 2**30:.2f} GiB are "
                          "available: pass path=... to store them memory-mapped on disk, or dtype='float32'")
    sym = x2 is None or same
    key = _key(spec, x1, None if sym else x2c, GETS, dtype, block)   # of the computation, whatever ``get``
    blocks = [(i, j) for i in range(0, n1, block) for j in range(0, n2, block) if not sym or j >= i]
    if path is None:
        out = {g: np.empty((n1, n2), dtype=dtype) for g in get}
        done = {g: set() for g in get}
    else:
        legacy = lambda gets: _key(spec, x1, None if sym else x2c, gets, dtype, block)  # noqa: E731
        out, done = open_store(Path(path), key, legacy, get, GETS, dtype, (n1, n2), blocks)
    fn = _jax_block_fn(spec) if dev == "jax" else None
    with blas_threads(1):  # the (rows x d) @ (d x block) Gram products are small: threaded BLAS only loses
        _fill(spec, x1, x2c, sym, block, blocks, done, out, fn, path, key, progress)
    return out


class blas_threads:
    """Context: BLAS limited to ``n`` threads (threadpoolctl; ``n=None``: no limit). The one thread limiter of
    the project (kernel block loop, Krylov iteration and passes, CLI); reentrant, restores the caller's
    setting on exit, one cached ``ThreadpoolController`` for the process.

    Threaded OpenBLAS on small or thin products is pathological on a shared machine. Measured
    (benchmarks/RESULTS_scale.md, RESULTS_krylov.md): the (32 x 40) @ (40 x 2048) Gram chunk ran at
    21 M entries/s on 2 threads and 360 M entries/s on 1; eigh of a 270 x 270 matrix took 346 ms median on
    2 threads and 23 ms on one (load 5 on 2 cores)."""

    _controller = None

    def __init__(self, n=1):
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
            raise ValueError(f"threads must be None or an int >= 1, got {n!r}")
        self.n = n
        self._ctx = None

    def __enter__(self):
        if self.n is not None:
            if blas_threads._controller is None:
                from threadpoolctl import ThreadpoolController
                blas_threads._controller = ThreadpoolController()
            self._ctx = blas_threads._controller.limit(limits=int(self.n), user_api="blas")
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            ctx.__exit__(*exc)
        return False


def _fill(spec, x1, x2c, sym, block, blocks, done, out, fn, path, key, progress) -> None:
    """Compute, for every kernel ``g`` of ``out``, the ``blocks`` not in ``done[g]`` (recording them in
    ``done`` and ``progress.json``); a block is computed once and written to the kernels that lack it."""
    todo = [b for b in blocks if any(b not in done[g] for g in out)]
    last = time.monotonic()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(blocks), initial=len(blocks) - len(todo), desc="kernel blocks", unit="blk")
    for n_done, (i, j) in enumerate(todo, 1):
        a = x1[i:i + block]
        diag = sym and i == j
        b = a if diag else x2c[j:j + block]
        need = [g for g in out if (i, j) not in done[g]]
        dst = {g: out[g][i:i + block, j:j + block] for g in need}
        if fn is not None:
            from .._x64 import x64
            with x64():
                vals = dict(zip(("ntk", "nngp"), (np.asarray(v, np.float64) for v in fn(a, b, bool(diag)))))
            for g in need:
                dst[g][...] = vals[g]
                if sym and not diag:
                    out[g][j:j + block, i:i + block] = dst[g].T
        else:
            mir = {g: out[g][j:j + block, i:i + block] for g in need} if sym and not diag else {}
            _numpy_block(spec, a, b, diag, dst.get("ntk"), dst.get("nngp"), mir.get("ntk"), mir.get("nngp"))
        if diag:  # a diagonal block is symmetric exactly (its two triangles may round differently)
            for g in need:
                v = dst[g]
                v[...] = np.triu(v) + np.triu(v, 1).T
        for g in need:
            done[g].add((i, j))
        if path is not None and (time.monotonic() - last >= FLUSH_EVERY_S or n_done == len(todo)):
            for g in out:
                if out[g].mode != "r":
                    out[g].flush()
            write_record(Path(path), key, done)
            last = time.monotonic()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()


def kernel_bytes(n_train: int, n_test: int, *, nngp: bool = True, dtype: str = "float32") -> int:
    """Bytes of the stored kernel blocks of one problem: NTK train-train ``N^2`` and test-train ``M N``, with
    ``nngp`` the same two NNGP blocks at the storage ``dtype``'s item size, and the float64 test diagonal."""
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    per = n_train * n_train + n_test * n_train
    return int((2 * per if nngp else per) * np.dtype(dtype).itemsize + (8 * n_test if nngp else 0))


@dataclass(frozen=True, eq=False)
class LargeKernels(KernelBlocks):
    """The fields of :class:`widelimit.kernels.DataKernels` (shared base :class:`KernelBlocks`), kept as
    stored (float32 or float64 arrays or read-only memmaps, never copied to float64): what the
    matrix-free solver (:class:`widelimit.dynamics.krylov.KrylovLoss`, ``predict_model(...,
    solver="krylov")``) reads.

    Fields: ``ntk_train_train`` (N, N) and ``ntk_test_train`` (M, N) unnormalised NTK; ``y_train`` (N, K)
    / ``y_test`` (M, K) float64 targets; ``L`` homogeneity degree; ``nngp_train_train``,
    ``nngp_test_train`` and ``nngp_test_test`` (its diagonal, (M,), float64) or all three None;
    ``source`` provenance text; ``nbytes`` the stored kernel bytes (:func:`kernel_bytes`)."""

    @property
    def nbytes(self) -> int:
        return int(sum(getattr(self, f).nbytes for f in ("ntk_train_train", "ntk_test_train", "nngp_train_train",
                                                          "nngp_test_train", "nngp_test_test")
                       if getattr(self, f) is not None))


def large_data_kernels(spec: MLP, x_train, y_train, x_test, y_test, *, nngp: bool = True,
                       dtype: str = "float32", path=None, block: int = 2048, progress: bool = True,
                       verbose: bool = True, source: str = "") -> LargeKernels:
    """:class:`LargeKernels` of a homogeneous MLP on a split, by :func:`blockwise_kernels`: train-train
    (symmetric, upper blocks mirrored) and test-train, stored as ``dtype``; with ``nngp`` also the NNGP
    blocks and the exact test diagonal ``K(x, x) = v_L(x)`` (float64). ``path``: directory of resumable
    memory-mapped results (``train_train/`` and ``test_train/``), ``None`` in memory."""
    L = spec.homogeneity_degree if isinstance(spec, MLP) else None
    if L is None:
        raise ValueError(f"spec must be a homogeneous widelimit.arch.MLP for the L2 theory, got {spec!r}")
    y = np.asarray(y_train, np.float64)
    yt = np.asarray(y_test, np.float64)
    if y.shape[0] != np.shape(x_train)[0] or yt.shape[0] != np.shape(x_test)[0]:
        raise ValueError(f"y_train/y_test must have one row per input, got {y.shape} for {np.shape(x_train)} "
                         f"and {yt.shape} for {np.shape(x_test)}")
    get = GETS if nngp else ("ntk",)
    sub = (lambda name: None) if path is None else (lambda name: Path(path) / name)  # noqa: E731
    kw = dict(get=get, dtype=dtype, block=block, progress=progress, verbose=verbose)
    tt = blockwise_kernels(spec, x_train, None, path=sub("train_train"), **kw)
    xt = blockwise_kernels(spec, x_test, x_train, path=sub("test_train"), **kw)
    extra = {}
    if nngp:
        xs = np.asarray(x_test, np.float64)
        diag = np.concatenate([np.diag(mlp_kernels(spec, xs[i:i + 256])[1]) for i in range(0, len(xs), 256)])
        extra = dict(nngp_train_train=tt["nngp"], nngp_test_train=xt["nngp"], nngp_test_test=diag)
    return LargeKernels(tt["ntk"], xt["ntk"], y, yt, int(L), source=source, **extra)


__all__ = ["blockwise_kernels", "GETS", "LargeKernels", "large_data_kernels", "kernel_bytes",
           "available_memory_bytes"]
