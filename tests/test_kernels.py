"""The compiled kernels: float32 stays float32 where it must, the ufuncs' loops."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from wce_numba import _loops, _ufuncs

# Compiles each native kernel (the one CUDA compiles; on the CPU, float32 is
# computed in float64 on purpose, by the widened kernels) for float32 as a C
# callback and counts the `double` tokens in its LLVM IR. NUMBA_OPT=0 keeps
# LLVM from folding a promotion away (max(x, 0.0) on a float32 compiles to
# fpext/fptrunc pairs that the optimiser would otherwise remove), so any
# float64 literal or promotion shows up. test_cuda_ptx checks the PTX itself.
IR_SCRIPT = textwrap.dedent(
    """
    import re, sys
    import numba
    from numba import float32
    from wce_numba import _kernels

    def promoted(labels, logits, pos_weight):
        return max(-logits, 0.0)

    kernels = {"loss": _kernels.native_loss, "grad": _kernels.native_loss_grad,
               "wide": _kernels.loss, "promoted": promoted}
    for name, kernel in kernels.items():
        compiled = numba.cfunc(float32(float32, float32, float32))(kernel)
        ir = compiled.inspect_llvm()
        print(name, len(re.findall(r"\\bdouble\\b", ir)))
    """
)


@pytest.fixture(scope="module")
def double_counts():
    result = subprocess.run(
        [sys.executable, "-c", IR_SCRIPT],
        env={**os.environ, "NUMBA_OPT": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        name: int(count)
        for name, count in (line.split() for line in result.stdout.splitlines())
    }


@pytest.mark.parametrize("kernel", ["loss", "grad"])
def test_float32_native_kernel_has_no_double_operation(double_counts, kernel):
    assert double_counts[kernel] == 0


def test_ir_check_detects_a_float64_literal(double_counts):
    # The same check on a kernel with a bare 0.0 literal must find doubles,
    # or the two tests above prove nothing.
    assert double_counts["promoted"] > 0


def test_float32_kernel_on_the_cpu_is_computed_in_float64(double_counts):
    # The routing in _kernels picks the widened kernel for the CPU target.
    assert double_counts["wide"] > 0


@pytest.mark.parametrize("quantity", ["loss", "grad"])
@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_ufuncs_have_exactly_float32_and_float64_loops(quantity, target):
    ufunc = _ufuncs.cpu_ufunc(quantity, target)

    assert ufunc.types == ["fff->f", "ddd->d"]
    assert ufunc.nin == 3 and ufunc.nout == 1


@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_cpu_and_parallel_ufuncs_agree_bit_for_bit(quantity):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 10, 50_000)
    z = rng.uniform(0, 1, 50_000)

    serial = _ufuncs.cpu_ufunc(quantity, "cpu")(z, x, 2.0)
    parallel = _ufuncs.cpu_ufunc(quantity, "parallel")(z, x, 2.0)

    np.testing.assert_array_equal(serial, parallel)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("quantity", ["loss", "grad"])
def test_contiguous_loops_agree_with_the_ufunc_bit_for_bit(quantity, dtype):
    # The loops run the kernel vectorized, the ufunc one element at a time;
    # both compile the same kernel, so every bit must match, at special
    # values too. 1001 elements leave a remainder after the vector body.
    rng = np.random.default_rng(9)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 800.0, -800.0]
    x = np.concatenate([rng.normal(0, 30, 1001 - len(special)), special])
    z = rng.choice([0.0, 1.0, 0.3, 1e-8, np.nan], x.size)
    q = rng.choice([0.0, 2.0, 1e6, np.inf, np.nan], x.size)
    z, x, q = (v.astype(dtype) for v in (z, x, q))
    code = _loops.GRAD if quantity == "grad" else _loops.LOSS
    ufunc = _ufuncs.cpu_ufunc(quantity, "cpu")
    with_array, with_scalar = np.empty_like(x), np.empty_like(x)

    with np.errstate(invalid="ignore"):  # NaN inputs give NaN, as they should
        _loops.fill_array_weight(code, z, x, q, with_array)
        _loops.fill_scalar_weight(code, z, x, dtype(3), with_scalar)
        expected = ufunc(z, x, q)
        expected_scalar = ufunc(z, x, dtype(3))

    assert_same_bits(with_array, expected)
    assert_same_bits(with_scalar, expected_scalar)


def assert_same_bits(result, expected):
    """Equal bits, NaN matching NaN (the sign of a NaN carries no meaning)."""
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    numbers = ~np.isnan(expected)
    np.testing.assert_array_equal(
        result[numbers].view(np.uint8), expected[numbers].view(np.uint8)
    )


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_building_blocks_are_numpy_ufuncs(target):
    ufunc = _ufuncs.cpu_ufunc("loss", target)

    assert isinstance(ufunc, np.ufunc)
    out = np.empty(3)
    result = ufunc([1.0, 0.0, 0.5], [0.0, 0.0, 0.0], 2.0, out=out)
    assert result is out
