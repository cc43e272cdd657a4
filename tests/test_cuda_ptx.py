"""The CUDA kernels compile to PTX, and the float32 ones do no float64 arithmetic.

No GPU and no driver needed: numba-cuda compiles to PTX with the NVVM and
NVRTC libraries of the PyPI wheels that the ``cuda`` extra installs. Without
them the tests are skipped, saying what is missing.

Compiled: every kernel ``_cuda.launch`` can start, for the loss and the
gradient in float32 and float64, for compute capability 9.0 (Hopper) and 8.0
(Ampere): the CUDA ufunc's kernel (with a contiguous and with a stride-0
``pos_weight``, as ``launch`` passes them) and the strided kernel. And those
of ``_cuda.launch_fused``: ``fused_kernel`` in each of its variants (sum,
mean, elementwise; value, gradient or both; weighted or not; flat or
broadcasting arrays; inputs of other dtypes converted as they are read),
and ``finish_kernel`` into each result dtype.

The fused float32 kernels that sum do use float64, and only for that: each
term is widened (``cvt.f64.f32``), added (``add``), kept in shared memory and
stored as the block's partial. The checks below allow exactly those float64
instructions there and no other (no float64 multiply, divide, fma or
conversion back), so the per-element math stays float32.
"""

import json
import re
import subprocess
import sys
import textwrap

import pytest
from test_cuda_sim import importing_this_package

CAPABILITIES = [(9, 0), (8, 0)]
QUANTITIES = ["loss", "grad"]
DTYPES = ["float32", "float64"]
KINDS = ["ufunc", "ufunc-broadcast-weight", "strided"]
# (source, target) dtypes of the casts the device path makes.
CASTS = [
    ("bool", "float32"),
    ("int32", "float32"),
    ("int64", "float64"),
    ("float16", "float32"),
    ("float32", "float16"),
    ("float64", "float32"),
]
CAST_NAMES = [f"cast-{source}-{target}" for source, target in CASTS]
# The fused kernel's variants: name: (reduction, want_value, want_grad,
# weighted, layout), layout "flat" (one-dimensional views, as launch_fused
# passes contiguous arrays) or "matrix" (two-dimensional, any layout, with
# one-dimensional weights that broadcast).
FUSED = {
    "sum-value": ("sum", True, False, False, "flat"),
    "mean-value-grad-weighted": ("mean", True, True, True, "matrix"),
    "sum-value-weighted": ("sum", True, False, True, "flat"),
    "none-value-grad-weighted": ("none", True, True, True, "flat"),
    "none-value": ("none", True, False, False, "matrix"),
    "mean-grad": ("mean", False, True, False, "flat"),
}
SUMMING = [
    name
    for name, (reduction, value, *_) in FUSED.items()
    if value and reduction != "none"
]
# Float16 logits and int8 labels, int64 weight, computed in float32.
MIXED = "fused-mean-value-grad-mixed"
RESULT_DTYPES = ["float16", "float32", "float64"]

# Runs in its own process, because it replaces numba-cuda's device lookup.
PTX_SCRIPT = textwrap.dedent(
    """
    import json, pathlib, sys, types

    major, minor, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    hint = 'pip install "wce_numba[cuda]"'

    def skip(reason):
        pathlib.Path(path).write_text(json.dumps({"skip": reason}))
        sys.exit()

    from wce_numba import _cuda

    try:
        _cuda.require_numba_cuda()
    except ImportError as error:
        skip(str(error))
    from numba.cuda.cudadrv import nvrtc, nvvm

    # nvvm.is_available() is True until a load fails: load both libraries.
    for name, load in (("NVVM", nvvm.NVVM), ("NVRTC", nvrtc.get_supported_ccs)):
        try:
            load()
        except Exception as error:
            skip(f"{name} was not found ({hint}): {' '.join(str(error).split())}")

    # compile_ptx(cc=...) needs no device, but numba-cuda compiles each device
    # function a kernel calls (the scalar kernel, its register_jitable helpers)
    # for the current device's compute capability (CUDADispatcher.
    # compile_device). Without a driver there is none: stand in a device of
    # the capability compiled for.
    import numba.cuda.dispatcher
    numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(
        compute_capability=(major, minor)
    )

    import numba
    from numba import cuda

    ptx = {}
    for quantity in ("loss", "grad"):
        ufunc = _cuda.build_ufunc(quantity)
        strided = _cuda.strided_kernel(quantity)
        for dtypes, (_, kernel) in ufunc.functions.items():
            t = numba.from_dtype(dtypes[0])
            flat, any_layout, matrix = t[::1], t[:], t[:, :]
            variants = {
                "ufunc": (kernel.py_func, (flat, flat, flat, flat)),
                "ufunc-broadcast-weight": (
                    kernel.py_func, (flat, flat, any_layout, flat)
                ),
                "strided": (strided.py_func, (matrix, matrix, any_layout, matrix)),
            }
            for kind, (function, argtypes) in variants.items():
                code, _ = cuda.compile_ptx(function, argtypes, cc=(major, minor))
                ptx[f"{kind}-{quantity}-{dtypes[0]}"] = code

    # The device-side casts of labels, pos_weight and float16 logits.
    import numpy as np

    cast = _cuda.cast_kernel()
    for source, target in json.loads(sys.argv[4]):
        argtypes = (
            numba.from_dtype(np.dtype(source))[::1],
            numba.from_dtype(np.dtype(target))[::1],
        )
        code, _ = cuda.compile_ptx(cast.py_func, argtypes, cc=(major, minor))
        ptx[f"cast-{source}-{target}"] = code

    # The fused path: every variant, in each compute dtype.
    fused_variants = json.loads(sys.argv[5])
    for name, (reduction, value, grad, weighted, layout) in fused_variants.items():
        for dtype in ("float32", "float64"):
            t = numba.from_dtype(np.dtype(dtype))
            array = t[::1] if layout == "flat" else t[:, :]
            weight = t[::1] if layout == "flat" else t[:]
            kernel = _cuda.fused_kernel(reduction, value, grad, weighted, dtype, 256)
            argtypes = (
                array, array, weight, weight, array, array, numba.float64[::1], t
            )
            code, _ = cuda.compile_ptx(kernel.py_func, argtypes, cc=(major, minor))
            ptx[f"fused-{name}-{dtype}"] = code

    kernel = _cuda.fused_kernel("mean", True, True, True, "float32", 256)
    flat = [
        numba.from_dtype(np.dtype(name))[::1]
        for name in ("int8", "float16", "float32", "int64", "float16", "float16")
    ]
    argtypes = (*flat, numba.float64[::1], numba.float32)
    code, _ = cuda.compile_ptx(kernel.py_func, argtypes, cc=(major, minor))
    ptx["fused-mean-value-grad-mixed"] = code

    finish = _cuda.finish_kernel(256)
    for dtype in ("float16", "float32", "float64"):
        argtypes = (
            numba.float64[::1], numba.float64, numba.from_dtype(np.dtype(dtype))[:]
        )
        code, _ = cuda.compile_ptx(finish.py_func, argtypes, cc=(major, minor))
        ptx[f"finish-{dtype}"] = code
    pathlib.Path(path).write_text(json.dumps({"ptx": ptx}))
    """
)


def capability_id(capability):
    return "sm_{}{}".format(*capability)


@pytest.fixture(scope="module", params=CAPABILITIES, ids=capability_id)
def compiled(request, tmp_path_factory):
    """(compute capability, {kernel name: PTX}) from one compiling process."""
    major, minor = request.param
    folder = tmp_path_factory.mktemp("ptx")
    script, path = folder / "compile_ptx.py", folder / "ptx.json"
    script.write_text(PTX_SCRIPT)
    process = subprocess.run(
        [
            sys.executable,
            str(script),
            str(major),
            str(minor),
            str(path),
            json.dumps(CASTS),
            json.dumps(FUSED),
        ],
        env={**importing_this_package(), "NUMBA_ENABLE_CUDASIM": "0"},
        capture_output=True,
        text=True,
    )
    assert process.returncode == 0, process.stderr
    result = json.loads(path.read_text())
    if "skip" in result:
        pytest.skip(result["skip"])
    return request.param, result["ptx"]


def instructions(ptx: str) -> str:
    """The PTX without its comments, so only code is searched."""
    return "\n".join(line.split("//")[0] for line in ptx.splitlines())


def kernel_names(dtype):
    return [f"{kind}-{q}-{dtype}" for kind in KINDS for q in QUANTITIES]


@pytest.mark.parametrize("name", kernel_names("float32"))
def test_float32_kernels_have_no_float64_instruction(compiled, name):
    _, ptx = compiled
    code = instructions(ptx[name])

    assert re.findall(r"\.f64\b", code) == []
    # The error-free transformations need llvm.fma to be a fused multiply-add.
    assert "fma.rn.f32" in code


@pytest.mark.parametrize("name", kernel_names("float64"))
def test_float64_kernels_do_have_float64_instructions(compiled, name):
    # The control: the same search finds float64 arithmetic where it belongs,
    # or the test above proves nothing.
    _, ptx = compiled
    code = instructions(ptx[name])

    assert len(re.findall(r"\.f64\b", code)) > 10
    assert "fma.rn.f64" in code


@pytest.mark.parametrize("name", kernel_names("float32") + kernel_names("float64"))
def test_kernels_target_the_requested_capability(compiled, name):
    (major, minor), ptx = compiled

    assert re.search(rf"^\.target sm_{major}{minor}\b", ptx[name], re.MULTILINE)


@pytest.mark.parametrize("name", CAST_NAMES)
def test_cast_kernels_compile_and_round_to_nearest(compiled, name):
    # Every cast the device path makes compiles for the target; float
    # conversions that can round use round-to-nearest (cvt.rn), as astype.
    (major, minor), ptx = compiled
    code = instructions(ptx[name])

    assert re.search(rf"^\.target sm_{major}{minor}\b", ptx[name], re.MULTILINE)
    if name in ("cast-float32-float16", "cast-float64-float32", "cast-int32-float32"):
        assert re.search(r"\bcvt\.rn\.", code), code


@pytest.mark.parametrize(
    "name", ["cast-bool-float32", "cast-int32-float32", "cast-float16-float32"]
)
def test_casts_into_float32_use_no_float64(compiled, name):
    _, ptx = compiled

    assert ".f64" not in instructions(ptx[name])


def f64_opcodes(code: str) -> set:
    """The opcodes of the instructions that name a float64 operand type."""
    opcodes = set()
    for line in code.splitlines():
        match = re.match(r"\s*(?:@!?%p\d+\s+)?([a-z][\w.]*)", line)
        if match and re.search(r"\.f64\b", match.group(1)):
            opcodes.add(match.group(1))
    return opcodes


# What a float32 kernel that sums may do in float64: widen a term, add, move a
# constant, keep the sums in shared memory, store the block's partial.
ACCUMULATOR_OPCODES = {
    "cvt.f64.f32",
    "add.f64",
    "add.rn.f64",
    "mov.f64",
    "ld.shared.f64",
    "st.shared.f64",
    "st.global.f64",
}


def fused_names(dtype, names=FUSED):
    return [f"fused-{name}-{dtype}" for name in names]


@pytest.mark.parametrize("name", fused_names("float32") + [MIXED])
def test_fused_float32_kernels_compute_each_element_in_float32(compiled, name):
    _, ptx = compiled
    code = instructions(ptx[name])
    summing = any(name == f"fused-{s}-float32" for s in SUMMING) or name == MIXED

    assert "fma.rn.f32" in code
    if summing:
        # The float64 accumulator, and nothing else in float64.
        assert f64_opcodes(code) <= ACCUMULATOR_OPCODES, f64_opcodes(code)
        assert "cvt.f64.f32" in f64_opcodes(code)
        assert f64_opcodes(code) & {"add.f64", "add.rn.f64"}
    else:
        assert re.findall(r"\.f64\b", code) == []


@pytest.mark.parametrize("name", fused_names("float32", SUMMING) + [MIXED])
def test_fused_kernels_that_sum_reduce_each_block_in_shared_memory(compiled, name):
    _, ptx = compiled
    code = instructions(ptx[name])

    assert "bar.sync" in code
    assert "st.shared.f64" in code and "st.global.f64" in code


FLAT = [name for name, (*_, layout) in FUSED.items() if layout == "flat"]


@pytest.mark.parametrize("name", fused_names("float32", FLAT) + [MIXED])
def test_fused_kernels_on_flat_arrays_index_without_remainders(compiled, name):
    # One-dimensional views need no unravelling and a weight no modulo: the
    # only integer division left is the grid-stride loop's trip count, once
    # per thread.
    _, ptx = compiled

    assert not re.search(r"\brem\.", instructions(ptx[name]))


@pytest.mark.parametrize("name", fused_names("float64"))
def test_fused_float64_kernels_do_have_float64_math(compiled, name):
    # The control for the tests above: the same search finds float64 math.
    _, ptx = compiled
    code = instructions(ptx[name])

    assert "fma.rn.f64" in f64_opcodes(code)


def test_fused_mixed_dtypes_are_converted_in_the_kernel(compiled):
    # float16 logits widened and the float16 gradient rounded to nearest,
    # int8 labels and int64 weights converted: no cast kernel needed.
    _, ptx = compiled
    code = instructions(ptx[MIXED])

    assert re.search(r"\bcvt\.f32\.f16\b", code)
    assert re.search(r"\bcvt\.rn\.f16\.f32\b", code)
    assert re.search(r"\bcvt\.rn\.f32\.s8\b", code) or re.search(
        r"\bcvt\.rn\.f32\.s(16|32)\b", code
    )
    assert re.search(r"\bcvt\.rn\.f32\.s64\b", code)


@pytest.mark.parametrize("dtype", RESULT_DTYPES)
def test_finish_kernel_divides_in_float64_and_rounds_once(compiled, dtype):
    (major, minor), ptx = compiled
    code = instructions(ptx[f"finish-{dtype}"])
    roundings = re.findall(r"\bcvt\.rn\.f(?:16|32)\.f64\b", code)

    assert re.search(rf"^\.target sm_{major}{minor}\b", ptx[f"finish-{dtype}"], re.M)
    assert "div.rn.f64" in code and "bar.sync" in code
    # Straight from float64 into the result dtype: one rounding, none for
    # a float64 result.
    expected = {"float16": ["cvt.rn.f16.f64"], "float32": ["cvt.rn.f32.f64"]}
    assert roundings == expected.get(dtype, [])


@pytest.mark.parametrize(
    "name", fused_names("float32") + fused_names("float64") + [MIXED]
)
def test_fused_kernels_target_the_requested_capability(compiled, name):
    (major, minor), ptx = compiled

    assert re.search(rf"^\.target sm_{major}{minor}\b", ptx[name], re.MULTILINE)
