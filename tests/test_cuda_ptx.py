"""The CUDA kernels compile to PTX, and the float32 ones do no float64 arithmetic.

No GPU and no driver needed: numba-cuda compiles to PTX with the NVVM and
NVRTC libraries of the PyPI wheels that the ``cuda`` extra installs. Without
them the tests are skipped, saying what is missing.

Compiled: every kernel ``_cuda.launch`` can start, for the loss and the
gradient in float32 and float64, for compute capability 9.0 (Hopper) and 8.0
(Ampere): the CUDA ufunc's kernel (with a contiguous and with a stride-0
``pos_weight``, as ``launch`` passes them) and the strided kernel.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

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
        ],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"},
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
