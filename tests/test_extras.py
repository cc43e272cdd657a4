"""The test extra installs every integration, so their tests run instead of skipping.

The integration tests skip (``pytest.importorskip``) where a library is
missing, so that the rest of the suite still runs; this test makes a missing
one a failure, since ``pip install -e ".[test]"`` (what CI runs) installs them.
"""

import importlib
import subprocess
import sys

import pytest

# Import name -> the extra that provides it.
INTEGRATION_MODULES = {
    "torch": "torch",
    "dask.array": "dask",
    "distributed": "dask",
    "xarray": "xarray",
    "xgboost": "boosting",
    "lightgbm": "boosting",
}


@pytest.mark.parametrize("module", INTEGRATION_MODULES)
def test_integration_library_is_installed(module):
    try:
        importlib.import_module(module)
    except ImportError as error:
        pytest.fail(
            f"{module} is missing ({error}); the test extra installs it through "
            f'wce_numba[{INTEGRATION_MODULES[module]}]: pip install -e ".[test]"'
        )


def test_import_wce_numba_imports_no_integration_library():
    script = (
        "import sys, numpy as np, wce_numba\n"
        "wce_numba.weighted_cross_entropy_with_logits(np.ones(3), np.ones(3), 2.0)\n"
        f"print(sorted(m for m in {sorted(INTEGRATION_MODULES)!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
