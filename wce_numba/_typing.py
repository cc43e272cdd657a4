"""Type aliases for the public API and the dispatcher, kept in one place."""

from numpy.typing import ArrayLike, NDArray

__all__ = ["ArrayLike", "NDArray"]
