"""Scalar kernels: the loss and its gradient for one element, as pure math.

Each function here is plain Python over scalars, written once and compiled by
Numba for every target (the CPU ufuncs in ``_ufuncs`` and, lazily, the CUDA
ufuncs). ``register_jitable`` makes a helper callable from any Numba target
while it stays an ordinary Python function for reading and testing.

Every constant is made from the argument's own type (``type(x)(1)``): a bare
``0.0`` or ``1.0`` is a float64 literal, and Numba would promote a float32
kernel to float64 arithmetic to combine with it.

Notation: z = labels, x = logits, q = pos_weight.
"""

import math

from numba.extending import register_jitable


@register_jitable
def softplus(x):
    """``log(1 + exp(x))`` without overflow, accurate for every ``x``.

    ``log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))``: the exponent is never
    positive, so ``exp`` cannot overflow, and ``log1p`` keeps the small tail
    ``exp(-|x|)`` that ``log(1 + tiny)`` would round away (for |x| > 17 in
    float64, > 9 in float32). softplus(+inf) = inf, softplus(-inf) = 0.
    """
    zero = type(x)(0)
    return max(x, zero) + math.log1p(math.exp(-abs(x)))


@register_jitable
def weighted_softplus(coef, x):
    """``coef * softplus(x)``, taking the limit 0 where coef is 0 and x = +inf.

    The loss is a sum of such terms. At x = +inf the product is ``0 * inf``,
    which IEEE arithmetic makes NaN; the term is identically zero in coef = 0
    for every finite x, so its limit is 0, and we return that. A NaN ``x``
    still gives NaN, so NaN in any input reaches the result.
    """
    zero = type(x)(0)
    if coef == zero and math.isinf(x):
        return zero
    return coef * softplus(x)


@register_jitable
def sigmoid(x):
    """``1 / (1 + exp(-x))`` without overflow.

    For x >= 0 use ``1 / (1 + exp(-x))``; for x < 0 the same value is
    ``exp(x) / (1 + exp(x))``. Both read ``exp(-|x|)`` <= 1, so nothing
    overflows and tiny results for very negative x keep their digits instead
    of going through ``1 - sigmoid(-x)``. sigmoid(+inf) = 1, sigmoid(-inf) = 0.
    """
    one = type(x)(1)
    zero = type(x)(0)
    tail = math.exp(-abs(x))
    if x >= zero:
        return one / (one + tail)
    return tail / (one + tail)


def loss(labels, logits, pos_weight):
    """Weighted cross entropy with logits for one element.

    TensorFlow writes the loss as ``(1 - z) x + l softplus(-x)`` with
    ``l = 1 + (q - 1) z``. Using ``softplus(x) = x + softplus(-x)`` the same
    value is ``(1 - z) softplus(x) + q z softplus(-x)``, which is what we
    compute: for labels in [0, 1] and q >= 0 it is a sum of two non-negative
    terms, so nothing cancels, whereas TF's form subtracts nearly equal large
    numbers at large negative logits with soft labels. Each term vanishes where
    its coefficient does, also at infinite logits (see ``weighted_softplus``).
    """
    one = type(logits)(1)
    negative_term = weighted_softplus(one - labels, logits)
    positive_term = weighted_softplus(pos_weight * labels, -logits)
    return negative_term + positive_term


def loss_grad(labels, logits, pos_weight):
    """Derivative of ``loss`` with respect to the logits, for one element.

    ``d loss / dx = (1 - z) sigmoid(x) - q z sigmoid(-x)``. This equals
    ``(1 - z) - l sigmoid(-x)``, but that form cancels for hard labels
    (z = 0 and x << 0 gives 1 - (1 - tiny)); here each hard label leaves a
    single product, accurate to the last bits.
    """
    one = type(logits)(1)
    return (one - labels) * sigmoid(logits) - pos_weight * labels * sigmoid(-logits)
