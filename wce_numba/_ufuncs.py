"""Ufunc builders: compile the scalar kernels into NumPy ufuncs per target.

The ufuncs are the package's building blocks: real NumPy ufuncs with two
loops, ``ff->f`` and ``dd->d``, supporting ``out=``, broadcasting and the ufunc
protocol. They are built on first use (not at import, so ``import wce_numba``
stays cheap) and cached on disk by Numba (``cache=True``), so a new process
loads machine code instead of compiling it again.
"""

from __future__ import annotations

import functools
from typing import Literal

import numba
import numpy as np

from . import _kernels

CpuTarget = Literal["cpu", "parallel"]

# Explicit signatures: one float32 and one float64 loop, and no lazy
# compilation for other dtypes. The API casts every input to one of these.
SIGNATURES = [
    "float32(float32, float32, float32)",
    "float64(float64, float64, float64)",
]

KERNELS = {
    "loss": _kernels.loss,
    "grad": _kernels.loss_grad,
}


@functools.cache
def cpu_ufunc(quantity: str, target: CpuTarget) -> np.ufunc:
    """The compiled ufunc for ``quantity`` ('loss' or 'grad') on a CPU target.

    Examples
    --------
    >>> import numpy as np
    >>> loss = cpu_ufunc("loss", "cpu")
    >>> loss.types
    ['fff->f', 'ddd->d']
    >>> print(np.round(loss(1.0, 0.0, 2.0), 6))
    1.386294
    """
    kernel = KERNELS[quantity]
    compiled = numba.vectorize(SIGNATURES, target=target, cache=True)(kernel)

    # The cpu target returns a DUFunc, a wrapper that can add loops for new
    # dtypes at call time; its ``.ufunc`` is the NumPy ufunc with just our two
    # loops, and calling it directly skips a Python-level __call__.
    return getattr(compiled, "ufunc", compiled)
