"""Collection rules for the whole repository.

``wce_numba/torch.py`` imports PyTorch at import time (its classes subclass
PyTorch's), so its doctests are collected only where PyTorch is installed;
``tests/test_extras.py`` fails where the test extra's libraries are missing.
"""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("wce_numba/torch.py")
