"""Argument checks and conversion shared by every public function.

Every error names the argument, what was expected and what came, and is
raised before any kernel runs. Inputs are converted with ``np.asarray`` and
cast with ``astype``, which copies: the caller's arrays are never written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# dtype kinds accepted as input: bool, signed and unsigned integers, floats.
_REAL_KINDS = "biuf"

# Floating dtypes computed natively; float16 is computed in float32 (no
# float16 loop: stepwise float16 arithmetic loses the small losses entirely).
_COMPUTE_DTYPE = {
    np.dtype(np.float16): np.dtype(np.float32),
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float64): np.dtype(np.float64),
}


@dataclass(frozen=True)
class Prepared:
    """Inputs cast to the compute dtype, plus the dtype the caller gets back."""

    labels: np.ndarray
    logits: np.ndarray
    pos_weight: np.ndarray
    result_dtype: np.dtype

    @property
    def compute_dtype(self) -> np.dtype:
        return self.logits.dtype


def as_real_array(value, name: str) -> np.ndarray:
    """``value`` as an ndarray of a real dtype, else TypeError naming ``name``."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be a real number or an array of real numbers, "
            f"got {type(value).__name__}: {error}"
        ) from None

    if array.dtype.kind not in _REAL_KINDS:
        raise TypeError(
            f"{name} must have a real dtype (bool, integer, float16, float32 or "
            f"float64), got dtype {array.dtype}"
        )
    return array


def result_dtypes(logits: np.ndarray) -> tuple[np.dtype, np.dtype]:
    """(compute dtype, result dtype) decided by the logits' dtype.

    float32 and float64 logits are computed and returned in their own dtype;
    float16 is computed in float32 and returned as float16; bool and integer
    logits are computed and returned in float64, as NumPy's own math does.
    """
    if logits.dtype.kind == "f":
        # Byte order does not matter here ('>f8' is float64 too); the result
        # comes back in native order.
        native = np.dtype(logits.dtype.type)
        if native not in _COMPUTE_DTYPE:
            raise TypeError(
                "logits must be float16, float32 or float64 (or integer or "
                f"bool), got dtype {logits.dtype}"
            )
        return _COMPUTE_DTYPE[native], native

    return np.dtype(np.float64), np.dtype(np.float64)


def prepare(labels, logits, pos_weight) -> Prepared:
    """Check shapes and dtypes of the three inputs and cast them for a kernel."""
    labels = as_real_array(labels, "labels")
    logits = as_real_array(logits, "logits")
    pos_weight = as_real_array(pos_weight, "pos_weight")

    # As in TensorFlow, labels and logits never broadcast against each other.
    if labels.shape != logits.shape:
        raise ValueError(
            "labels and logits must have the same shape, got labels shape "
            f"{labels.shape} and logits shape {logits.shape}"
        )
    check_broadcasts_to(pos_weight, logits.shape, "pos_weight")

    compute_dtype, result_dtype = result_dtypes(logits)
    return Prepared(
        labels=labels.astype(compute_dtype, copy=False),
        logits=logits.astype(compute_dtype, copy=False),
        pos_weight=pos_weight.astype(compute_dtype, copy=False),
        result_dtype=result_dtype,
    )


def check_broadcasts_to(array: np.ndarray, shape: tuple, name: str) -> None:
    """ValueError unless ``array`` broadcasts to exactly ``shape``.

    The result always has the logits' shape: an argument whose broadcast would
    grow it (shape (1, 2, 3) against logits (2, 3)) is an error too.
    """
    try:
        broadcast = np.broadcast_shapes(array.shape, shape)
    except ValueError:
        broadcast = None

    if broadcast != shape:
        raise ValueError(
            f"{name} must be a scalar or broadcast to the logits' shape {shape}, "
            f"got {name} shape {array.shape}"
        )


def check_out(out, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Check a caller's ``out=`` array: an ndarray of the result's shape and dtype."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")

    if out.shape != shape:
        raise ValueError(
            f"out must have the logits' shape {shape}, got out shape {out.shape}"
        )
    if out.dtype != dtype:
        raise TypeError(f"out must have dtype {dtype}, got out dtype {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable, got a read-only array")
    return out
