"""Concurrent calls from Python threads: same bits, and the process survives.

Numba's workqueue threading layer aborts the whole process when two threads
launch parallel work at once, so the package runs one parallel call at a time
and sends the others to the serial ufunc. These tests call the public loss
from eight threads in this process and, per threading layer, in a subprocess.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from wce_numba import _dispatch, weighted_cross_entropy_with_logits
from wce_numba._ufuncs import cpu_ufunc

THREADS = 8
POS_WEIGHT = 2.0
LARGE = 100_000

# Sum of the exact losses of the 101-element case, rounded to float64.
SMALL_SUM = 214.47892731568874


def inputs(size):
    """Logits from -5 to 5, labels alternating 0 and 1, in float64."""
    logits = np.linspace(-5.0, 5.0, size)
    labels = (np.arange(size) % 2).astype(np.float64)
    return labels, logits


def digest(array):
    return hashlib.sha256(array.tobytes()).hexdigest()


def call_from_threads(function, calls_per_thread):
    """Run ``function`` ``calls_per_thread`` times in each of THREADS threads.

    All threads start together; returns every result and every exception.
    """
    barrier = threading.Barrier(THREADS)
    results, errors = [], []

    def work():
        try:
            barrier.wait()
            for _ in range(calls_per_thread):
                results.append(function())
        except Exception as error:  # reported by the test, not lost in a thread
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results, errors


def test_small_case_sums_to_the_known_total():
    labels, logits = inputs(101)

    total = math.fsum(weighted_cross_entropy_with_logits(labels, logits, POS_WEIGHT))

    # Each loss is within 2 ULP of exact and fsum adds them with one rounding;
    # on this data the total lands within 2 ULP of the exact total.
    assert abs(total - SMALL_SUM) <= 2 * np.spacing(SMALL_SUM)


@pytest.mark.parametrize(
    ("size", "calls_per_thread"),
    [(101, 200), (LARGE, 10)],
    ids=["serial", "parallel"],
)
def test_concurrent_calls_match_a_single_call(size, calls_per_thread):
    labels, logits = inputs(size)
    expected = weighted_cross_entropy_with_logits(labels, logits, POS_WEIGHT)

    results, errors = call_from_threads(
        lambda: weighted_cross_entropy_with_logits(labels, logits, POS_WEIGHT),
        calls_per_thread,
    )

    assert errors == []
    assert len(results) == THREADS * calls_per_thread
    assert all(r.tobytes() == expected.tobytes() for r in results)


FORK_SCRIPT = """
import multiprocessing, numpy as np
from wce_numba import weighted_cross_entropy_with_logits as loss

x = np.linspace(-5.0, 5.0, 200_000)
z = (np.arange(x.size) % 2).astype(float)
parent = loss(z, x, 2.0)          # the multi-core path, before the fork

def child(_):
    return loss(z, x, 2.0).tobytes() == parent.tobytes()

with multiprocessing.get_context("fork").Pool(2) as pool:
    print(all(pool.map(child, range(4), chunksize=1)))
"""


def test_forked_children_can_call_after_the_parent_used_every_core():
    # GNU OpenMP kills a forked child that starts parallel work once the
    # parent has; a thread pool inherited across fork has no threads. Either
    # would hang or kill the pool's workers here.
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


# Runs in a fresh interpreter: prints the threading layer and the digests of
# the small and large results after eight threads called the loss at once.
# Exits 3 when the requested threading layer cannot load.
SUBPROCESS_SCRIPT = f"""
import hashlib
import threading

import numba
import numpy as np

from wce_numba import weighted_cross_entropy_with_logits as loss

THREADS = {THREADS}


def inputs(size):
    logits = np.linspace(-5.0, 5.0, size)
    labels = (np.arange(size) % 2).astype(np.float64)
    return labels, logits


@numba.njit(parallel=True)
def user_parallel_code(values):
    total = 0.0
    for i in numba.prange(values.size):
        total += values[i]
    return total


small = inputs(101)
large = inputs({LARGE})
# The process's own Numba code starts the requested layer, as a user's would.
try:
    user_parallel_code(np.ones(1000))
except ValueError as error:
    if "threading layer" not in str(error):
        raise
    print("unavailable:", error)
    raise SystemExit(3)
expected_large = loss(*large, {POS_WEIGHT!r})
expected_small = loss(*small, {POS_WEIGHT!r})
print("layer", numba.threading_layer())

barrier = threading.Barrier(THREADS)
mismatches = []


def work():
    barrier.wait()
    for _ in range(10):
        for args, expected in ((large, expected_large), (small, expected_small)):
            if loss(*args, {POS_WEIGHT!r}).tobytes() != expected.tobytes():
                mismatches.append(args[0].size)


threads = [threading.Thread(target=work) for _ in range(THREADS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()

assert not mismatches, mismatches
for array in (expected_small, expected_large):
    print("digest", hashlib.sha256(array.tobytes()).hexdigest())
"""


@pytest.mark.parametrize("layer", [None, "workqueue", "omp"], ids=str)
def test_concurrent_calls_survive_each_threading_layer(layer):
    env = dict(os.environ)
    env.pop("NUMBA_THREADING_LAYER", None)
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer

    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", SUBPROCESS_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    if completed.returncode == 3 and layer == "omp":
        pytest.skip(
            f"Numba's omp threading layer does not load here: "
            f"{completed.stdout.strip()}"
        )
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.split("\n")
    if layer is not None:
        assert f"layer {layer}" in lines
    expected = [
        weighted_cross_entropy_with_logits(*inputs(size), POS_WEIGHT)
        for size in (101, LARGE)
    ]
    assert [line for line in lines if line.startswith("digest")] == [
        f"digest {digest(array)}" for array in expected
    ]


def test_parallel_ufunc_serves_large_calls_when_its_layer_is_safe(monkeypatch):
    # With TBB as Numba's layer the dispatcher uses the parallel ufunc and
    # not the block pool; the result is the serial one, bit for bit.
    monkeypatch.setattr(_dispatch, "parallel_ufunc_is_safe", lambda: True)
    monkeypatch.setattr(_dispatch, "thread_count", lambda: 2)
    monkeypatch.setattr(_dispatch, "_run_blocks", None)  # must not be called
    labels, logits = inputs(LARGE)

    result = weighted_cross_entropy_with_logits(labels, logits, POS_WEIGHT)

    serial = cpu_ufunc("loss", "cpu")(labels, logits, POS_WEIGHT)
    assert result.tobytes() == serial.tobytes()
