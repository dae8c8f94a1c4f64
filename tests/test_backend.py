"""allegro_ref.backend: namespaces, dtypes, host moves, cached constants and scatter_sum on NumPy
and on array-api-strict's simulated device."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allegro_ref import backend as B
from tests.strategies import seeds


def loop_scatter_sum(values, segment_ids, num_segments):
    out = np.zeros((num_segments, *values.shape[1:]), dtype=values.dtype)
    for e, s in enumerate(segment_ids):
        out[s] += values[e]
    return out


# --------------------------------------------------------------------------------------------
# namespace, dtypes, host moves
# --------------------------------------------------------------------------------------------


def test_namespace_refuses_mixed_libraries():
    import array_api_strict

    with pytest.raises(TypeError):
        B.namespace(np.zeros(2), array_api_strict.asarray([0.0, 1.0]))


def test_namespace_of_numpy_arrays_is_the_general_lookup():
    """The NumPy fast path returns what array-api-compat's search returns (a view, a 0-d array
    and a subclass included) and, like it, refuses an empty call."""
    import array_api_compat

    for arrays in ((np.zeros(2),), (np.zeros((2, 3))[:, 1], np.float64(1.0) * np.ones(())),
                   (np.ma.zeros(2),)):  # fmt: skip
        assert B.namespace(*arrays) is array_api_compat.array_namespace(*arrays)
    with pytest.raises(TypeError):
        B.namespace()


def test_float_dtype(backend):
    xp = backend.xp
    assert B.float_dtype(xp) == xp.float64  # the default
    assert B.float_dtype(xp, "float32") == xp.float32
    assert B.float_dtype(xp, xp.float32) == xp.float32  # dtype objects pass through
    with pytest.raises(ValueError, match=r"dtype 'float16' is not supported; use one of"):
        B.float_dtype(xp, "float16")
    with pytest.raises(ValueError, match="is not supported"):
        B.float_dtype(xp, xp.int32)


def test_to_numpy_is_explicit_and_exact(backend):
    host = np.array([[1.5, -2.0], [3.0, 1e-300]], dtype=np.float32)
    moved = backend.asarray(host)
    back = B.to_numpy(moved)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, host)
    ints = B.to_numpy(backend.asarray(np.array([3, 1], dtype=np.int64)))
    assert ints.dtype == np.int64 and ints.tolist() == [3, 1]
    if backend.name == "numpy":
        assert back is moved  # no copy for NumPy input


def test_to_backend_numpy_and_unknown():
    x = np.arange(3.0)
    assert B.to_backend(x, "numpy") is x
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        B.to_backend(x, "jax")


# --------------------------------------------------------------------------------------------
# as_constant
# --------------------------------------------------------------------------------------------

_THIRDS = np.array([[1.0 / 3.0, -2.0 / 3.0], [1e-40, 7.0]])  # 1e-40 is subnormal in float32


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_as_constant_matches_dtype_and_device_of_like(backend, dtype):
    like = backend.asarray(np.zeros(3), dtype=dtype)
    c = B.as_constant(_THIRDS, like=like)
    assert c.dtype == like.dtype
    assert B.device(c) == B.device(like)
    # Built in float64 and cast last: one rounding, exactly NumPy's cast of the float64 value.
    np.testing.assert_array_equal(B.to_numpy(c), _THIRDS.astype(dtype))


def test_as_constant_is_cached_per_dtype(backend):
    like64 = backend.asarray(np.zeros(1))
    like32 = backend.asarray(np.zeros(1), dtype="float32")
    first = B.as_constant(_THIRDS, like=like64)
    assert B.as_constant(_THIRDS, like=backend.asarray(np.ones(4))) is first
    as32 = B.as_constant(_THIRDS, like=like32)
    assert as32 is not first and as32.dtype == like32.dtype
    assert B.as_constant(_THIRDS, like=like64, dtype=like32.dtype) is as32  # explicit dtype


# --------------------------------------------------------------------------------------------
# scatter_sum
# --------------------------------------------------------------------------------------------


@st.composite
def segment_problems(draw):
    num_segments = draw(st.integers(1, 9))
    ids = draw(st.lists(st.integers(0, num_segments - 1), max_size=40))
    # up to 8 columns: one bincount per column on NumPy; more: a sparse incidence matrix
    trailing = draw(st.sampled_from([(), (1,), (4,), (2, 3), (3, 4)]))
    return np.array(ids, dtype=np.int64), num_segments, trailing, draw(seeds)


@given(problem=segment_problems())
def test_scatter_sum_matches_loop(problem):
    ids, num_segments, trailing, seed = problem
    values = np.random.default_rng(seed).standard_normal((ids.size, *trailing))
    out = B.scatter_sum(values, ids, num_segments)
    assert out.shape == (num_segments, *trailing) and out.dtype == values.dtype
    np.testing.assert_allclose(
        out, loop_scatter_sum(values, ids, num_segments), rtol=1e-14, atol=1e-15
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scatter_sum_backends_agree(backend, dtype):
    rng = np.random.default_rng(9)
    ids = np.array([2, 0, 2, 5, 0, 2, 5, 5, 1], dtype=np.int64)  # segments 3 and 4 are empty
    values = rng.standard_normal((ids.size, 2, 3)).astype(dtype)
    out = B.scatter_sum(backend.asarray(values), backend.asarray(ids), 6)
    assert out.dtype == backend.asarray(values).dtype
    expected = loop_scatter_sum(values.astype(np.float64), ids, 6)
    rtol = 1e-6 if dtype == "float32" else 1e-14
    np.testing.assert_allclose(B.to_numpy(out), expected, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(B.to_numpy(out)[3:5], 0)


def test_scatter_sum_generic_path_in_chunks(backend):
    """The standard-only fallback (used on array-api-strict) with chunks smaller than the input."""
    rng = np.random.default_rng(10)
    ids = rng.integers(0, 4, 21)
    values = rng.standard_normal((21, 3))
    # 5 items per chunk with 4 segments: chunks of 5, 5, 5, 5 and a last one of a single item.
    xp = backend.xp
    out = B._segment_sum_generic(
        xp, backend.asarray(values), backend.asarray(ids), 4, chunk_elements=4 * 5
    )
    np.testing.assert_allclose(B.to_numpy(out), loop_scatter_sum(values, ids, 4), rtol=1e-14)


def test_scatter_sum_empty_input(backend):
    out = B.scatter_sum(
        backend.asarray(np.zeros((0, 2))), backend.asarray(np.zeros(0, np.int64)), 3
    )
    np.testing.assert_array_equal(B.to_numpy(out), np.zeros((3, 2)))


def test_scatter_sum_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="values has 3 rows but index has 2 entries"):
        B.scatter_sum(np.zeros((3, 2)), np.zeros(2, dtype=np.int64), 4)


# --------------------------------------------------------------------------------------------
# host/device questions, and the claim that only this module knows NumPy from CuPy
# --------------------------------------------------------------------------------------------


def test_block_rows_are_small_on_the_host_and_whole_or_large_elsewhere(backend):
    like = backend.asarray(np.zeros(3))
    on_host = backend.name == "numpy"
    assert B.is_numpy(like) is on_host
    assert B.is_numpy_namespace(backend.xp) is on_host
    rows = B.block_rows(like, 1000, host_bytes=10**6)
    assert rows == (1000 if on_host else None)
    assert B.block_rows(like, 1000, host_bytes=10**6, device_bytes=10**8) == (
        1000 if on_host else 10**5
    )
    assert B.block_rows(like, 10**9, host_bytes=10**6, device_bytes=10**6) == 1


def test_only_the_backend_module_imports_cupy_or_array_api_compat():
    """docs/gpu.md and notebook 07 say that everything NumPy/CuPy-specific lives in
    ``allegro_ref.backend``: no other module of the library imports CuPy or array-api-compat."""
    import ast
    from pathlib import Path

    root = Path(B.__file__).resolve().parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "backend.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("cupy", "cupyx", "array_api_compat"):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno} imports {name}")
    assert not offenders, offenders


def test_models_say_where_they_live(backend):
    from allegro_ref.model import AllegroConfig, AllegroModel

    config = AllegroConfig(type_names=("H",), r_max=2.0, l_max=1, num_layers=1)
    model = AllegroModel.init(config, seed=0)
    moved = AllegroModel(config, {k: backend.asarray(v) for k, v in model.params.items()})
    like = moved.params["readout.0"]
    assert moved.namespace is B.namespace(like)
    assert moved.device == B.device(like)


def test_segment_sum_is_the_deprecated_name_of_scatter_sum():
    values, ids = np.arange(6.0).reshape(3, 2), np.array([1, 0, 1])
    with pytest.warns(DeprecationWarning, match="use allegro_ref.backend.scatter_sum"):
        out = B.segment_sum(values, ids, 2)
    np.testing.assert_array_equal(out, B.scatter_sum(values, ids, 2))
