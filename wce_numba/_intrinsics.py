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


@intrinsic
def float_to_bits(typingctx, x):
    """The bits of a float32/float64 as int32/int64 (an LLVM bitcast)."""
    if not isinstance(x, types.Float):
        return None
    int_type = types.int32 if x.bitwidth == 32 else types.int64

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(x.bitwidth))

    return int_type(x), codegen


@intrinsic
def bits_to_float(typingctx, bits, like):
    """The float of ``like``'s type whose bits are the low bits of ``bits``.

    Numba widens int32 arithmetic to int64; the integer is truncated (or
    sign-extended) to the float's width first, then bit cast.
    """
    if not (isinstance(bits, types.Integer) and isinstance(like, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        width = like.bitwidth
        value = args[0]
        int_type = ir.IntType(width)
        if bits.bitwidth > width:
            value = builder.trunc(value, int_type)
        elif bits.bitwidth < width:
            value = builder.sext(value, int_type)
        return builder.bitcast(value, context.get_value_type(like))

    return like(bits, like), codegen


@intrinsic
def _llvm_select(typingctx, condition, if_true, if_false):
    """LLVM ``select``: no branch (both values are computed beforehand)."""
    if not isinstance(condition, types.Boolean) or if_true != if_false:
        return None

    def codegen(context, builder, signature, args):
        flag = args[0]
        if flag.type != ir.IntType(1):
            flag = builder.trunc(flag, ir.IntType(1))
        return builder.select(flag, args[1], args[2])

    return if_true(condition, if_true, if_false), codegen


def select(condition, if_true, if_false):
    """``if_true if condition else if_false``, compiled as one ``select``.

    Numba lowers ``if``/``else`` and ``a if c else b`` to branches, which
    LLVM's loop vectorizer rejects unless it can if-convert them (only for
    cheap arms). Both values here are arguments, computed beforehand. This
    Python body serves code run as Python (numba-cuda's simulator).
    """
    return if_true if condition else if_false


@overload(select)
def _select(condition, if_true, if_false):
    if isinstance(condition, types.Boolean) and if_true == if_false:
        return lambda condition, if_true, if_false: _llvm_select(
            condition, if_true, if_false
        )
    return None


@intrinsic
def _llvm_fdiv(typingctx, a, b):
    """LLVM ``fdiv``: IEEE division."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        return builder.fdiv(args[0], args[1])

    return a(a, b), codegen


def fdiv(a, b):
    """``a / b`` as IEEE division: no ZeroDivisionError check.

    Numba's Python error model guards every ``/`` with a test for a zero
    divisor and a raise, and ``register_jitable`` helpers get that model
    whatever their caller's: the branch and the possible exception stop the
    loop vectorizer ("Cannot vectorize early exit loop"). This Python body
    serves code run as Python.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return type(a)(np.true_divide(a, b))


@overload(fdiv)
def _fdiv(a, b):
    if isinstance(a, types.Float) and a == b:
        return lambda a, b: _llvm_fdiv(a, b)
    return None


@register_jitable(forceinline=True)
def fast_two_sum(a, b):
    """``(s, err)``, ``s = fl(a + b)``, exact when ``|a| >= |b|`` (or a = 0)."""
    total = a + b
    return total, b - (total - a)


@register_jitable(forceinline=True)
def two_sum(a, b):
    """``(s, err)`` with ``s = fl(a + b)`` and ``s + err = a + b`` (Knuth).

    No guard: where the sum overflows, ``err`` is NaN (inf - inf), and the
    kernels check for that once, at the end.
    """
    total = a + b
    b_part = total - a
    return total, (a - (total - b_part)) + (b - b_part)


@register_jitable(forceinline=True)
def two_product(a, b):
    """``(p, err)`` with ``p = fl(a * b)`` and ``p + err = a * b`` exactly.

    Exact while ``a * b`` is neither subnormal nor beyond the largest float;
    where it overflows, ``err`` is inf or NaN (unguarded, as ``two_sum``).
    """
    product = a * b
    return product, fma(a, b, -product)


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
