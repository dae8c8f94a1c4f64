"""Array backends: the one module that knows NumPy from CuPy.

Everything else in allegro_ref is written against the
[Python Array API standard](https://data-apis.org/array-api/latest/) and asks this module for the
namespace of its inputs (`xp = namespace(x)`). The standard lacks a few operations Allegro needs;
they live here with one implementation per backend and a generic, standard-only fallback:

- [`scatter_sum`][allegro_ref.backend.scatter_sum]: the sum of per-edge rows onto per-atom rows
  (the density trick, the sum of edge energies onto atoms, forces from edge gradients).
- [`as_constant`][allegro_ref.backend.as_constant]: a float64 NumPy constant (3j blocks, coupling
  matrices) moved once to the namespace, dtype and device of the data and cached there.
- [`is_numpy`][allegro_ref.backend.is_numpy] /
  [`is_numpy_namespace`][allegro_ref.backend.is_numpy_namespace] and
  [`block_rows`][allegro_ref.backend.block_rows]: is this array (namespace) on the host, and how
  many rows a blockwise loop should take at once there or on a device.

Dtype policy: float64 is the default; float32 is supported. Constants are always *built* in
float64 and cast last, so a float32 model never carries float32 rounding into its couplings.

Which process-level policies (BLAS threads, worker processes, glibc malloc) the library applies,
and where, is decided in the private module `allegro_ref._execution`, not here.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, TypeAlias

import array_api_compat
import numpy as np

__all__ = [
    "Array",
    "DEFAULT_DTYPE",
    "namespace",
    "device",
    "is_numpy",
    "is_cupy",
    "is_numpy_namespace",
    "block_rows",
    "float_dtype",
    "to_numpy",
    "to_backend",
    "as_constant",
    "scatter_sum",
    "segment_sum",
]

Array: TypeAlias = Any
"""An array of any [Array-API](https://data-apis.org/array-api/latest/) namespace: NumPy, CuPy,
array-api-strict, ... Functions that take arrays return arrays of the namespace, device and
(unless stated) dtype of their inputs. The shapes are in each docstring, e.g. `[n_edges, 3]`."""

DEFAULT_DTYPE = "float64"
_FLOAT_DTYPES = ("float32", "float64")
_COMPLEX_DTYPES = {"float32": "complex64", "float64": "complex128"}
_NUMPY_NAMESPACE = array_api_compat.array_namespace(np.empty(0))


def namespace(*arrays: Array):
    """The Array-API namespace shared by ``arrays`` (NumPy, CuPy, array-api-strict, ...).

    Raises:
        TypeError: the arrays come from different libraries.
    """
    if arrays and all(type(a) is np.ndarray for a in arrays):  # the common case, ~8x faster
        return _NUMPY_NAMESPACE
    return array_api_compat.array_namespace(*arrays)


def device(x: Array):
    """The device an array lives on (``"cpu"`` for NumPy, a ``cupy.cuda.Device``, ...)."""
    return array_api_compat.device(x)


def is_numpy(x: Array) -> bool:
    """Whether ``x`` is a NumPy array: in host memory, computed by the CPU."""
    return array_api_compat.is_numpy_array(x)


def is_cupy(x: Array) -> bool:
    """Whether ``x`` is a CuPy array (GPU memory)."""
    return array_api_compat.is_cupy_array(x)


def is_numpy_namespace(xp: Any) -> bool:
    """Whether the namespace ``xp`` is NumPy's (or array-api-compat's wrapper of it): arrays on
    the host, computed by the CPU."""
    return array_api_compat.is_numpy_namespace(xp)


def block_rows(
    like: Array, row_bytes: int, *, host_bytes: int, device_bytes: int | None = None
) -> int | None:
    """Rows per block of a loop over the rows of arrays like ``like``, each row needing
    ``row_bytes`` of temporaries.

    On the host (NumPy) blocks are small, ``host_bytes // row_bytes`` rows, so that a block's
    temporaries stay in the CPU caches and no large temporary is page-faulted in (both cost as
    much as the arithmetic). Elsewhere (GPUs) large blocks amortize the kernel launches:
    ``device_bytes // row_bytes`` rows, or ``None`` (all rows at once) if ``device_bytes`` is
    None. At least 1.
    """
    budget = host_bytes if is_numpy(like) else device_bytes
    if budget is None:
        return None
    return max(1, budget // max(1, row_bytes))


def float_dtype(xp, name: str | Any = DEFAULT_DTYPE, like: Array | None = None):
    """The floating dtype object of namespace ``xp`` named ``"float32"`` or ``"float64"``.

    Accepts a name or a dtype object of ``xp`` (returned unchanged after validation; the
    complex dtypes of the two precisions are accepted too). When ``like`` is a complex array
    the result is the complex dtype of that precision (complex64 or complex128): code that casts
    to its working precision then also runs on complex inputs, which complex-step
    differentiation (``allegro_ref.train``) needs.
    """
    if not isinstance(name, str):
        for real, complex_ in _COMPLEX_DTYPES.items():
            if name == getattr(xp, complex_):
                return name
            if name == getattr(xp, real):
                name = real
                break
        else:
            raise ValueError(f"dtype {name!r} is not supported; use one of {list(_FLOAT_DTYPES)}")
    if name not in _FLOAT_DTYPES:
        raise ValueError(f"dtype {name!r} is not supported; use one of {list(_FLOAT_DTYPES)}")
    if like is not None and xp.isdtype(like.dtype, "complex floating"):
        return getattr(xp, _COMPLEX_DTYPES[name])
    return getattr(xp, name)


def to_numpy(x: Array) -> np.ndarray:
    """Any supported array in host memory as a NumPy array (explicit, never implicit); a NumPy
    array is returned as is. Other Array-API arrays go through DLPack, the standard's exchange
    protocol (``np.asarray`` may refuse them, as array-api-strict does off its CPU device)."""
    if is_numpy(x):
        return x
    if is_cupy(x):
        return x.get()
    if hasattr(x, "__dlpack__"):
        return np.from_dlpack(x)
    return np.asarray(x)


def to_backend(x: Array, backend: str) -> Array:
    """Move an array to ``backend``: ``"numpy"`` (host) or ``"cupy"`` (current GPU)."""
    if backend == "numpy":
        return to_numpy(x)
    if backend == "cupy":
        import cupy

        return cupy.asarray(to_numpy(x) if not is_cupy(x) else x)
    raise ValueError(f"unknown backend {backend!r}; use 'numpy' or 'cupy'")


# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

# (id of the NumPy constant, namespace, dtype, device) -> (constant kept alive, converted copy)
_CONSTANT_CACHE: dict[tuple, tuple[np.ndarray, Any]] = {}


def as_constant(value: np.ndarray, like: Array, dtype: Any = None) -> Array:
    """``value`` (a float64 NumPy constant) as an array of the same namespace, device and dtype as
    ``like`` (or ``dtype`` if given), converted once and cached.

    The cache is keyed by the identity of ``value``, so pass constants that are themselves cached
    (e.g. returned by an ``lru_cache`` builder); the cache keeps ``value`` alive.
    """
    xp = namespace(like)
    dtype = like.dtype if dtype is None else dtype
    device = array_api_compat.device(like)
    key = (id(value), xp.__name__, str(dtype), str(device))
    hit = _CONSTANT_CACHE.get(key)
    if hit is None:
        converted = xp.asarray(np.asarray(value, dtype=np.float64), device=device)
        converted = xp.astype(converted, dtype)
        hit = (value, converted)
        _CONSTANT_CACHE[key] = hit
    return hit[1]


# --------------------------------------------------------------------------------------------
# Scatter-sum (segment sum)
# --------------------------------------------------------------------------------------------

# Rows of the one-hot matrix built at once by the generic fallback (bounds its memory).
_GENERIC_CHUNK_ELEMENTS = 1 << 22


def scatter_sum(values: Array, index: Array, num_segments: int) -> Array:
    r"""Sum the rows of `values` that share an index: $\mathrm{out}[i] = \sum_{e:\ \mathrm{index}[e]
    = i} \mathrm{values}[e]$, e.g. per-edge rows onto their center atoms.

    Also exported as [`allegro_ref.nn.scatter_sum`][allegro_ref.nn.scatter.scatter_sum], beside
    its backward (a gather). JAX and TensorFlow call this operation `segment_sum`.

    Args:
        values: `[n_items, ...]` (e.g. per-edge features).
        index: `[n_items]` integers in `[0, num_segments)`.
        num_segments: number of output rows (e.g. number of atoms).

    Returns:
        `[num_segments, ...]` of the namespace, dtype and device of `values`; rows no item points
            to are zero.

    The backward is a gather: $\partial L / \partial \mathrm{values}[e] = \partial L /
    \partial \mathrm{out}[\mathrm{index}[e]]$, `xp.take(grad_out, index, axis=0)`.

    Examples:
        ```python
        import numpy as np
        from allegro_ref.backend import scatter_sum

        edge_energies = np.array([1.0, 2.0, 3.0, 4.0])
        centers = np.array([0, 0, 2, 0])
        print(scatter_sum(edge_energies, centers, 3))  # [7. 0. 3.]
        ```
    """
    xp = namespace(values)
    if values.shape[0] != index.shape[0]:
        raise ValueError(
            f"scatter_sum: values has {values.shape[0]} rows but index has {index.shape[0]} entries"
        )
    trailing = tuple(values.shape[1:])
    width = math.prod(trailing)
    flat = xp.reshape(values, (values.shape[0], width))
    if is_numpy(values):
        out = _segment_sum_numpy(flat, index, num_segments)
    elif is_cupy(values):
        out = _segment_sum_cupy(flat, index, num_segments)
    else:
        out = _segment_sum_generic(xp, flat, index, num_segments)
    return xp.reshape(out, (num_segments, *trailing))


def segment_sum(values: Array, segment_ids: Array, num_segments: int) -> Array:
    """Deprecated name of [`scatter_sum`][allegro_ref.backend.scatter_sum] (same arguments, same
    result); it warns with a `DeprecationWarning`."""
    warnings.warn(
        "allegro_ref.backend.segment_sum is deprecated: use allegro_ref.backend.scatter_sum "
        "(or allegro_ref.nn.scatter_sum), the same function",
        DeprecationWarning,
        stacklevel=2,
    )
    return scatter_sum(values, segment_ids, num_segments)


# Up to this many real columns, NumPy's segment sum is one ``np.bincount`` per column: building the
# sparse matrix costs ~80 µs, a bincount of 2 500 items 7 µs (equal at ~9 columns).
_BINCOUNT_MAX_COLUMNS = 8


def _segment_sum_numpy(flat: np.ndarray, segment_ids: np.ndarray, num_segments: int):
    """Few real columns (energies, forces, counts): ``np.bincount`` per column, accumulated in
    float64. Otherwise a sparse ``[n_segments, n_items]`` incidence matrix times the values: one
    BLAS-like pass, about 20x faster than ``np.add.at`` for per-edge feature rows."""
    import scipy.sparse

    if flat.shape[1] <= _BINCOUNT_MAX_COLUMNS and flat.dtype.kind == "f":
        columns = [
            np.bincount(segment_ids, weights=flat[:, j], minlength=num_segments)
            for j in range(flat.shape[1])
        ]
        return np.stack(columns, axis=1).astype(flat.dtype, copy=False)
    n_items = flat.shape[0]
    incidence = scipy.sparse.csr_matrix(
        (np.ones(n_items, dtype=flat.dtype), (segment_ids, np.arange(n_items))),
        shape=(num_segments, n_items),
    )
    return np.asarray(incidence @ flat)


def _segment_sum_cupy(flat, segment_ids, num_segments: int):
    import cupy
    import cupyx

    out = cupy.zeros((num_segments, flat.shape[1]), dtype=flat.dtype)
    cupyx.scatter_add(out, segment_ids, flat)
    return out


def _segment_sum_generic(
    xp, flat, segment_ids, num_segments: int, chunk_elements: int = _GENERIC_CHUNK_ELEMENTS
):
    """Standard-only fallback: a one-hot ``[n_segments, n_items]`` matrix times the values,
    built in chunks of items so memory stays bounded. O(n_segments * n_items) work: meant for
    testing the library on strict Array-API backends, not for production runs."""
    device = array_api_compat.device(flat)
    out = xp.zeros((num_segments, flat.shape[1]), dtype=flat.dtype, device=device)
    segments = xp.arange(num_segments, dtype=segment_ids.dtype, device=device)
    chunk = max(1, chunk_elements // max(1, num_segments))
    n_items = flat.shape[0]
    for start in range(0, n_items, chunk):
        stop = min(start + chunk, n_items)
        one_hot = xp.astype(segments[:, None] == segment_ids[None, start:stop], flat.dtype)
        out = out + one_hot @ flat[start:stop, :]
    return out
