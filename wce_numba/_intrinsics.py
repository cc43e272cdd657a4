"""Low-level helpers the scalar kernels need and Python's ``math`` lacks.

``fma`` lowers to LLVM's ``llvm.fma`` intrinsic, which every Numba target
understands: a fused multiply-add instruction on x86-64 with FMA (AVX2 and
AVX-512 machines), libm's ``fma`` elsewhere, and ``fma.rn`` on CUDA GPUs. It
rounds once, which is what the error-free transformations below rely on.
"""

import math
from fractions import Fraction

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload, register_jitable


@intrinsic
def _llvm_fma(typingctx, a, b, c):
    """``llvm.fma``: ``a * b + c`` rounded once (three floats of one type)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        float_type = context.get_value_type(signature.return_type)
        function_type = ir.FunctionType(float_type, [float_type] * 3)
        function = builder.module.declare_intrinsic(
            "llvm.fma", [float_type], function_type
        )
        return builder.call(function, args)

    return a(a, b, c), codegen


def fma(a, b, c):
    """``a * b + c`` rounded once, to the type of ``a``.

    Compiled code, on every Numba target, calls ``llvm.fma`` (the overload
    below). This body serves code that runs as Python, such as kernels in
    numba-cuda's simulator: the exact value as a fraction, rounded once.
    """
    kind = type(a)
    try:
        exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    except (OverflowError, ValueError):  # an infinity or a NaN
        if math.isfinite(a) and math.isfinite(b):
            return kind(c)  # a finite product leaves c as it is
        return kind(a * b + c)
    if exact == 0:
        return kind(a * b + c)  # the sign of an exact zero, as IEEE gives it
    try:
        nearest = float(exact)
    except OverflowError:
        return kind(math.inf if exact > 0 else -math.inf)
    if np.dtype(kind) == np.float64 or Fraction(nearest) == exact:
        return kind(nearest)

    # float32: rounding to float64 and then to float32 could round twice.
    # Rounding to odd in float64 first (53 >= 2 * 24 + 2 bits) cannot.
    toward = math.inf if exact > nearest else -math.inf
    neighbour = math.nextafter(nearest, toward)
    odd = nearest if np.float64(nearest).view(np.int64) & 1 else neighbour
    return kind(odd)


@overload(fma)
def _fma(a, b, c):
    if isinstance(a, types.Float) and a == b == c:
        return lambda a, b, c: _llvm_fma(a, b, c)
    return None


@register_jitable
def two_sum(a, b):
    """``(s, err)`` with ``s = fl(a + b)`` and ``s + err = a + b`` exactly (Knuth).

    An infinite sum has no finite error (the formula would give NaN); ``err``
    is 0 there, so that the pair still adds up to ``s``.
    """
    total = a + b
    b_part = total - a
    error = (a - (total - b_part)) + (b - b_part)
    if math.isinf(total):
        error = type(a)(0)
    return total, error


@register_jitable
def two_product(a, b):
    """``(p, err)`` with ``p = fl(a * b)`` and ``p + err = a * b`` exactly.

    Exact while ``a * b`` is neither subnormal nor beyond the largest float;
    an infinite product gets ``err = 0`` as in ``two_sum``.
    """
    product = a * b
    error = fma(a, b, -product)
    if math.isinf(product):
        error = type(a)(0)
    return product, error


# exp(-87) = 1.6e-38 > float32's smallest normal 1.18e-38;
# exp(-708) = 3.3e-308 > float64's smallest normal 2.2e-308.
_EXP_NORMAL_LIMIT = {np.dtype(np.float32): 87, np.dtype(np.float64): 708}


def exp_normal_limit(x):
    """Largest whole m for which ``exp(-m)`` is a normal float of x's type.

    Beyond it ``exp(-m)`` is subnormal and keeps fewer digits than the type
    has, so products with it must be formed before the exponential shrinks.
    """
    return type(x)(_EXP_NORMAL_LIMIT[np.asarray(x).dtype])


@overload(exp_normal_limit)
def _exp_normal_limit(x):
    if not isinstance(x, types.Float):
        return None
    limit = _EXP_NORMAL_LIMIT[np.dtype(x.name)]
    return lambda x: type(x)(limit)
