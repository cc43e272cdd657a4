"""Vectorizable ``exp(-m)`` and ``log1p(e)`` for the CPU kernels.

llvmlite 0.50's LLVM has no vector math library (SVML), so ``math.exp`` and
``math.log1p`` compile to scalar libm calls, and a loop that calls them does
not vectorize. The primitives here use only arithmetic, ``llvm.fma``, integer
operations on the bits and selects, which LLVM's loop vectorizer turns into
packed AVX-512/AVX2 code. Two sets:

* float64 in double-word (``exp_neg``, ``log1p_dw``): each returns its value
  as an unevaluated sum ``hi + lo`` accurate to well under one ULP, so that
  the float64 kernels can carry the error of the transcendental functions
  below their final rounding.
* plain float64 (``exp_neg_wide``, ``log1p_wide``), within about 1e-10, for
  the float32 kernels, which the CPU computes in float64 (see ``_kernels``).

Routing per target: ``exp_neg`` and ``log1p_dw`` are plain functions with two
Numba overloads. The generic overload keeps ``math.exp``/``math.log1p`` (so
CUDA kernels keep CUDA's own functions, in float32 for float32); the
``target='cpu'`` overload, which takes precedence on the ``cpu`` and
``parallel`` targets, uses the polynomial code for float64 and declines other
types, which then get the generic overload.

Algorithms of the double-word set (coefficients: Chebyshev interpolation in
mpmath at 300 bits, then rounded to float64, p = 52):

exp(-m), m >= 0:
    n = round(m / ln2) by the shifter trick t = fma(m, 1/ln2, 1.5 * 2^p),
    n = t - shifter; x = n ln2_hi - m is exact with an FMA (|x| <= ln2/2,
    its bits span at most p); x_lo = n ln2_lo. exp(x) = 1 + x + x^2 P(x)
    with 1 + x split exactly; exp(x + x_lo) = exp(x) (1 + x_lo). 2^-n is
    applied as two normal powers of two built from the bits of t, so that
    subnormal results are rounded once and m = inf gives exactly 0.
log1p(e), e = e_hi + e_lo in [0, 1]:
    u = 1 + e_hi with its exact error c; v = u or u/2 in [sqrt2/2, sqrt2),
    f = v - 1 exact, s = f / (2 + f); log1p(f) = f - f^2/2 + s (f^2/2 + R)
    with R = s^2 Q(s^2) (the atanh series), f^2/2 and f - f^2/2 split
    exactly; log(u + c) = k ln2 + log1p(f) + c/u.
"""

import math

import numpy as np
from numba import types
from numba.extending import overload, register_jitable

from ._intrinsics import (
    bits_to_float,
    fast_two_sum,
    fdiv,
    float_to_bits,
    fma,
    select,
)
from ._intrinsics import two_sum as two_sum_finite

# ---------------------------------------------------------------------------
# float64 double-word set. Max abs error of P on |x| <= ln2/2: 2.5e-18; of Q
# on [0, 0.02947]: 3.2e-16; both far below an ULP once multiplied by x^2 or
# s^3.


def _f64(hexes):
    return tuple(np.float64(float.fromhex(h)) for h in hexes)


_EXP_P = _f64(
    [
        "0x1.0000000000000p-1",
        "0x1.5555555555557p-3",
        "0x1.5555555555556p-5",
        "0x1.11111111100cep-7",
        "0x1.6c16c16c162ccp-10",
        "0x1.a01a01abef415p-13",
        "0x1.a01a01a6dcaffp-16",
        "0x1.71de021a90822p-19",
        "0x1.27e4db57442fbp-22",
        "0x1.af4e196027428p-26",
        "0x1.1f731ea5352cap-29",
    ]
)
_LOG_Q = _f64(
    [
        "0x1.5555555555558p-1",
        "0x1.9999999995273p-2",
        "0x1.2492492dfd86cp-2",
        "0x1.c71c62d5e53e0p-3",
        "0x1.7462b91b8df65p-3",
        "0x1.39fdcceb4bb45p-3",
        "0x1.2b5f68a50d903p-3",
    ]
)


def _constants():
    dtype = np.float64
    finfo = np.finfo(dtype)
    ln2_hi = np.float64(float.fromhex("0x1.62e42fefa39efp-1"))
    ln2_lo = np.float64(float.fromhex("0x1.abc9e3b39803fp-56"))
    clamp = 746.0  # exp(-746) < 2^-1075: rounds to 0
    return dict(
        ln2_hi=ln2_hi,
        ln2_lo=ln2_lo,
        inv_ln2=dtype(1 / math.log(2)),
        shifter=dtype(1.5 * 2.0**finfo.nmant),
        clamp=dtype(clamp),
        bias=int(finfo.maxexp) - 1,
        mantissa=int(finfo.nmant),
        sqrt2=dtype(math.sqrt(2)),
    )


def _estrin(coefficients):
    """A jitable ``p(x) = c0 + c1 x + ...`` by Estrin's scheme, with FMA.

    Pairs ``c_2i + c_2i+1 x`` are combined with x^2, those pairs with x^4,
    and so on, unrolled in the source: Horner's FMAs plus the few squarings,
    but a chain of about log2(degree) dependent FMAs instead of degree. The
    loops run several elements' chains at once only as far as the
    processor's scheduler holds them, so short chains are what let the
    vectorized loops reach the FMA units' throughput.
    """
    terms = [f"c{i}" for i in range(len(coefficients))]
    lines = ["def poly(x):"]
    power = "x"
    level = 0
    while len(terms) > 1:
        level += 1
        combined = []
        for index in range(0, len(terms) - 1, 2):
            name = f"t{level}_{index // 2}"
            lines.append(
                f"    {name} = fma({power}, {terms[index + 1]}, {terms[index]})"
            )
            combined.append(name)
        if len(terms) % 2:
            combined.append(terms[-1])
        if len(combined) > 1:
            lines.append(f"    x{level} = {power} * {power}")
            power = f"x{level}"
        terms = combined
    lines.append(f"    return {terms[0]}")
    names = [f"c{i}" for i in range(len(coefficients))]
    namespace = dict(zip(names, coefficients, strict=True), fma=fma)
    exec("\n".join(lines) + "\n", namespace)  # noqa: S102
    return register_jitable(forceinline=True)(namespace["poly"])


def _make_cpu_primitives():
    dtype = np.float64
    k = _constants()
    exp_p = _estrin(_EXP_P)
    log_q = _estrin(_LOG_Q)
    zero, one, two, half = dtype(0), dtype(1), dtype(2), dtype(0.5)
    third = dtype(1 / 3)
    # e^4/4 < 2^-p e / 20 for e below 2^-20.
    tiny_limit = dtype(2.0**-20)
    ln2_hi, ln2_lo, inv_ln2 = k["ln2_hi"], k["ln2_lo"], k["inv_ln2"]
    shifter, clamp, sqrt2 = k["shifter"], k["clamp"], k["sqrt2"]
    bias, mantissa = k["bias"], k["mantissa"]

    @register_jitable(forceinline=True)
    def exp_neg_cpu(m):
        # m > clamp is false for NaN, which stays NaN through the arithmetic.
        m = select(m > clamp, clamp, m)
        t = fma(m, inv_ln2, shifter)
        n = t - shifter
        # n ln2_hi - m is exact: an FMA rounds once and the result fits.
        x = fma(n, ln2_hi, -m)
        x_lo = n * ln2_lo
        # exp(x) = 1 + x + x^2 P(x), with 1 + x split exactly (|x| < 1).
        head = one + x
        lo = ((one - head) + x) + (x * x) * exp_p(x)
        # exp(x + x_lo) = exp(x) (1 + x_lo); x_lo reaches n 2^-p.
        lo = fma(x_lo, head + lo, lo)
        hi, lo = fast_two_sum(head, lo)
        # 2^-n = 2^-n1 2^-n2, both normal: exact products in the normal
        # range, one rounding for subnormal results.
        shift = float_to_bits(t) - float_to_bits(shifter)
        first = shift >> 1
        scale1 = bits_to_float((bias - first) << mantissa, m)
        scale2 = bits_to_float((bias - (shift - first)) << mantissa, m)
        return (hi * scale1) * scale2, (lo * scale1) * scale2

    @register_jitable(forceinline=True)
    def log1p_dw_cpu(e_hi, e_lo):
        u = one + e_hi
        # 1 + e = u + c exactly: u - 1 is exact for u in [1, 2].
        c = (e_hi - (u - one)) + e_lo
        big = u > sqrt2
        v = select(big, u * half, u)
        f = v - one  # exact (Sterbenz)
        s = fdiv(f, two + f)
        z = s * s
        r = z * log_q(z)
        half_f = half * f
        hfsq = half_f * f
        hfsq_lo = fma(half_f, f, -hfsq)
        a_hi, a_lo = two_sum_finite(f, -hfsq)
        # log1p(f) = a_hi + a_lo - hfsq_lo + s (hfsq + R)
        correction = (a_lo - hfsq_lo) + s * (hfsq + r)
        k_hi = select(big, ln2_hi, zero)
        k_lo = select(big, ln2_lo, zero)
        b_hi, b_lo = two_sum_finite(k_hi, a_hi)
        # log(u + c) = log(u) + t - t^2 / 2 with t = c / u < 2^-p; the t^2
        # term matters only where u = 1 (e below 2^-p).
        t = fdiv(c, u)
        lo = b_lo + (correction + (k_lo + fma(-half * t, t, t)))
        hi, lo = fast_two_sum(b_hi, lo)
        # Small e: log1p(e) = e - e^2/2 + e^3/3 (the next term is below
        # 2^-p e / 20 under tiny_limit), kept as e_hi + (e_lo + ...). Near
        # u = 1 the path above rounds e_lo into c, which is then as large
        # as L itself (up to 0.6 ULP); this one keeps every digit.
        tiny = e_hi < tiny_limit
        tiny_lo = fma(e_hi * e_hi, fma(e_hi, third, -half), e_lo)
        tiny_hi, tiny_lo = fast_two_sum(e_hi, tiny_lo)
        return select(tiny, tiny_hi, hi), select(tiny, tiny_lo, lo)

    return exp_neg_cpu, log1p_dw_cpu


_EXP_NEG_CPU, _LOG1P_DW_CPU = _make_cpu_primitives()


# ---------------------------------------------------------------------------
# Plain float64 primitives for float32 kernels on the CPU. A float32 result
# only needs its float64 intermediate within ~1e-9 relative error: rounding it
# to float32 then adds at most 0.5 ULP plus 1e-9 * 2^24 = 0.02 ULP. Plain
# float64 arithmetic (no double-word pairs) and short polynomials give that,
# and 4 float64 lanes of it are cheaper than 8 float32 lanes of double-word
# code. Coefficients: Chebyshev interpolation at 300 bits in mpmath, rounded
# to float64; maximum relative errors: exp 5.5e-11 on |r| <= ln2/2 (degree
# 7), log1p(e)/e 8.4e-10 on [0, 1] (degree 10).

_WIDE_EXP = _f64(
    [
        "0x1.ffffffffa7011p-1",
        "0x1.fffffffff61ddp-1",
        "0x1.0000005c981fcp-1",
        "0x1.5555557e7777ep-3",
        "0x1.555464884204ep-5",
        "0x1.1110a6173845ep-7",
        "0x1.6da767a4988a9p-10",
        "0x1.a17e052cd2c8fp-13",
    ]
)
_WIDE_LOG1P_RATIO = _f64(
    [
        "0x1.fffffff8bf536p-1",
        "-0x1.fffff23ca5d8fp-2",
        "0x1.55532471bce50p-2",
        "-0x1.ffb933dac867dp-3",
        "0x1.9742f82e42739p-3",
        "-0x1.49797a179fca6p-3",
        "0x1.fb00b1a6ce14cp-4",
        "-0x1.4f61d4fd9d9cap-4",
        "0x1.4fed049df857ap-5",
        "-0x1.b02381e6f92c7p-7",
        "0x1.046679cb2b7ebp-9",
    ]
)
_wide_exp_poly = _estrin(_WIDE_EXP)
_wide_log1p_ratio_poly = _estrin(_WIDE_LOG1P_RATIO)
_WIDE = _constants()
_WIDE_LN2 = np.float64(math.log(2))
_WIDE_INV_LN2 = _WIDE["inv_ln2"]
_WIDE_SHIFTER = _WIDE["shifter"]
# exp(-m) for m <= 700 is a normal float64 (2^-1010 at the least), and beyond
# it, times any finite float32 coefficient (< 2^128), rounds to float32 0.
_WIDE_LIMIT = np.float64(700)
_WIDE_ONE_BITS = np.int64(1023) << np.int64(52)


@register_jitable(forceinline=True)
def exp_neg_wide(m):
    """``exp(-m)`` for a float64 ``m >= 0``, within 6e-11 relative error.

    0 beyond m = 700 (and at m = inf), NaN for NaN. m = n ln2 - r with
    n = round(m / ln2) by the shifter trick and |r| <= ln2/2; exp(-m) =
    2^-n exp(r). r is one FMA off by at most n |ln2 - fl(ln2)| < 3e-14; 2^-n
    is built from the low bits of t, where the shifter left n (n << 52 only
    keeps them), and applied by a product, so a NaN stays NaN. No integer
    is converted to a float: the vectorizer keeps every step in lanes.
    """
    t = fma(m, _WIDE_INV_LN2, _WIDE_SHIFTER)
    n = t - _WIDE_SHIFTER
    r = fma(n, _WIDE_LN2, -m)
    scale = bits_to_float(_WIDE_ONE_BITS - (float_to_bits(t) << 52), m)
    value = _wide_exp_poly(r) * scale
    return select(m > _WIDE_LIMIT, np.float64(0), value)


@register_jitable(forceinline=True)
def log1p_wide(e):
    """``log1p(e)`` for a float64 ``e`` in [0, 1], within 9e-10 relative error.

    ``e * P(e)`` with P close to log1p(e)/e, which is smooth on the whole
    interval: no range reduction and no division, and tiny e keeps its
    digits (P(0) = 1).
    """
    return e * _wide_log1p_ratio_poly(e)


# ---------------------------------------------------------------------------
# Public primitives with per-target overloads.


def exp_neg(m):
    """``exp(-m)`` as ``(hi, lo)`` for ``m >= 0`` (Python fallback: libm)."""
    return math.exp(-m), type(m)(0)


def log1p_dw(e_hi, e_lo):
    """``log1p(e_hi + e_lo)`` as ``(hi, lo)`` for ``e`` in [0, 1]."""
    return math.log1p(e_hi), e_lo / (1 + e_hi)


@overload(exp_neg, target="generic")
def _exp_neg_generic(m):
    if isinstance(m, types.Float):
        return lambda m: (math.exp(-m), type(m)(0))
    return None


@overload(exp_neg, target="cpu")
def _exp_neg_cpu(m):
    if m != types.float64:
        return None
    return lambda m: _EXP_NEG_CPU(m)


@overload(log1p_dw, target="generic")
def _log1p_dw_generic(e_hi, e_lo):
    if isinstance(e_hi, types.Float) and e_hi == e_lo:
        return lambda e_hi, e_lo: (
            math.log1p(e_hi),
            e_lo / (type(e_hi)(1) + e_hi),
        )
    return None


@overload(log1p_dw, target="cpu")
def _log1p_dw_cpu(e_hi, e_lo):
    if not e_hi == e_lo == types.float64:
        return None
    return lambda e_hi, e_lo: _LOG1P_DW_CPU(e_hi, e_lo)
