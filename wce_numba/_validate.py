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


def _describe(value) -> str:
    """What came, for an error message: the dtype of an array, else the type."""
    if isinstance(value, np.ndarray):
        return f"dtype {value.dtype}"
    if isinstance(value, int) and not isinstance(value, bool):
        return "a Python int outside the int64 range"
    return type(value).__name__


def as_real_array(value, name: str) -> np.ndarray:
    """``value`` as an ndarray of a real dtype, else an error naming ``name``.

    Masked arrays are handled by the API before this point; ragged nested
    lists raise ValueError as in NumPy; other non-real input raises TypeError.
    """
    try:
        array = np.asarray(value)
    except ValueError as error:
        raise ValueError(f"{name} is not a rectangular array: {error}") from None
    except TypeError as error:
        raise TypeError(
            f"{name} must be a real number or an array of real numbers, "
            f"got {type(value).__name__}: {error}"
        ) from None

    if array.dtype.kind not in _REAL_KINDS:
        got = f"dtype {array.dtype}" if array.dtype != object else _describe(value)
        raise TypeError(
            f"{name} must have a real dtype (bool, integer, float16, float32 or "
            f"float64), got {got}"
        )
    if array.dtype.kind == "f" and np.dtype(array.dtype.type) not in _COMPUTE_DTYPE:
        raise TypeError(
            f"{name} must be float16, float32 or float64 (or integer or bool), "
            f"got dtype {array.dtype}"
        )
    return array


def cast(array: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """``array`` in ``dtype``, refusing finite values the cast would make infinite.

    A pos_weight of 1e40 with float32 logits would become inf, and inf * 0 is
    NaN where the exact loss is finite: an error is clearer than that.
    """
    if array.dtype == dtype:
        return array

    with np.errstate(over="ignore"):
        converted = array.astype(dtype)
    if array.dtype.kind == "f" and np.isinf(converted).any():
        overflowed = np.isinf(converted) & np.isfinite(array)
        if overflowed.any():
            raise ValueError(
                f"{name} has values beyond the range of {dtype}, the dtype the "
                "logits are computed in (largest magnitude "
                f"{np.abs(array[overflowed]).max():g})"
            )
    return converted


def result_dtypes(logits: np.ndarray) -> tuple[np.dtype, np.dtype]:
    """(compute dtype, result dtype) decided by the logits' dtype.

    float32 and float64 logits are computed and returned in their own dtype;
    float16 is computed in float32 and returned as float16; bool and integer
    logits are computed and returned in float64, as NumPy's own math does.
    """
    if logits.dtype.kind == "f":
        # Byte order does not matter here ('>f8' is float64 too); the result
        # comes back in native order. Other float widths were refused already.
        native = np.dtype(logits.dtype.type)
        return _COMPUTE_DTYPE[native], native

    return np.dtype(np.float64), np.dtype(np.float64)


def prepare(labels, logits, pos_weight) -> Prepared:
    """Check shapes and dtypes of the three inputs and cast them for a kernel."""
    labels = as_real_array(labels, "labels")
    logits = as_real_array(logits, "logits")
    pos_weight = as_real_array(pos_weight, "pos_weight")

    check_same_shape(labels, logits)
    check_broadcasts_to(pos_weight, logits.shape, "pos_weight")

    compute_dtype, result_dtype = result_dtypes(logits)
    return Prepared(
        labels=cast(labels, compute_dtype, "labels"),
        logits=cast(logits, compute_dtype, "logits"),
        pos_weight=cast(pos_weight, compute_dtype, "pos_weight"),
        result_dtype=result_dtype,
    )


def check_same_shape(labels, logits) -> None:
    """ValueError unless labels and logits have one shape.

    As in TensorFlow, labels and logits never broadcast against each other.
    """
    if labels.shape != logits.shape:
        raise ValueError(
            "labels and logits must have the same shape, got labels shape "
            f"{labels.shape} and logits shape {logits.shape}"
        )


def prepare_weight(weight, prepared: Prepared) -> np.ndarray:
    """Sample weights in the compute dtype, broadcastable to the logits' shape.

    None means a weight of 1 for every element (a 0-d array).
    """
    dtype = prepared.compute_dtype
    if weight is None:
        return np.ones((), dtype)

    weight = as_real_array(weight, "weight")
    check_broadcasts_to(weight, prepared.logits.shape, "weight")
    return cast(weight, dtype, "weight")


REDUCTIONS = ("none", "sum", "mean")


def check_reduction(reduction) -> None:
    """ValueError unless ``reduction`` is one of ``REDUCTIONS``."""
    if not (isinstance(reduction, str) and reduction in REDUCTIONS):
        raise ValueError(
            "reduction must be 'none', 'sum' or 'mean', got "
            f"{reduction!r} ({type(reduction).__name__})"
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


def check_out(
    out, shape: tuple, dtype: np.dtype, shape_name: str = "the logits' shape"
) -> np.ndarray:
    """Check a caller's ``out=`` array: an ndarray of the result's shape and dtype.

    ``shape_name`` says in the error what ``shape`` is: the logits' shape for
    an elementwise result, ``()`` for a reduced one.
    """
    # np.matrix stays 2-D when flattened, which the compiled loops refuse.
    if not isinstance(out, np.ndarray) or isinstance(out, np.matrix):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")

    if out.shape != shape:
        raise ValueError(
            f"out must have {shape_name} {shape}, got out shape {out.shape}"
        )
    if np.dtype(out.dtype.type) != dtype:
        raise TypeError(f"out must have dtype {dtype}, got out dtype {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable, got a read-only array")
    return out


def check_name(name) -> None:
    """``name`` is TensorFlow's op name: a str or None, ignored otherwise.

    Checking it catches a NumPy-style positional ``out``, which would
    otherwise bind to ``name`` and be silently ignored.
    """
    if name is not None and not isinstance(name, str):
        raise TypeError(
            f"name must be a str or None, got {type(name).__name__} (pass the "
            "output array as out=...)"
        )
