"""Dask's distributed scheduler: a mean over 1e8 elements on two worker processes."""

import math
import resource

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import wce_numba  # noqa: E402
from wce_numba import weighted_cross_entropy_with_logits  # noqa: E402

SIZE = 10**8
CHUNK = 25 * 10**5  # 10 MB of float32 per block and operand
POS_WEIGHT = 4.0
# A whole float32 operand is 400 MB: a worker whose peak memory grows by
# even half of that during the computation did not stream it.
MAX_GROWTH_BYTES = SIZE * 4 // 2


def _worker_state():
    """Where a worker imports the package from, and its peak memory (bytes).

    Before the first call, each worker compiles (or loads) the kernels on a
    few elements, so the peak that follows is the computation's own.
    """
    import wce_numba as package

    package.weighted_cross_entropy_with_logits(
        np.zeros(8, np.float32), np.zeros(8, np.float32), 1.0, reduction="sum"
    )
    return package.__file__, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _operands():
    """1e8 logits and 10 % positive labels, generated lazily, block by block."""
    rng = da.random.default_rng(2026)
    logits = rng.standard_normal(SIZE, chunks=CHUNK, dtype=np.float32) * np.float32(3)
    labels = (rng.random(SIZE, chunks=CHUNK, dtype=np.float32) < 0.1).astype(np.float32)
    return labels, logits


@pytest.mark.slow
def test_mean_over_1e8_elements_on_a_local_cluster_equals_the_numpy_path(tmp_path):
    labels, logits = _operands()

    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            local_directory=str(tmp_path),
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        before = client.run(_worker_state)
        mean = weighted_cross_entropy_with_logits(
            labels, logits, POS_WEIGHT, reduction="mean"
        )
        result = mean.compute()

        # The NumPy path, one block at a time: each block comes to this
        # process alone (10 MB), its elementwise loss is summed in float64.
        partials = []
        for index in range(logits.numblocks[0]):
            label_block, logit_block = client.compute(
                [labels.blocks[index], logits.blocks[index]], sync=True
            )
            loss = weighted_cross_entropy_with_logits(
                label_block, logit_block, POS_WEIGHT
            )
            partials.append(np.sum(loss, dtype=np.float64))
        after = client.run(_worker_state)

    assert result.dtype == np.float32 and result.shape == ()
    expected = math.fsum(partials) / SIZE
    # The cluster rounds each block's sum to float32 (2^-24 relative, the
    # terms being positive) and the mean once more; NumPy's pairwise float64
    # sums add ~1e-15: two float32 epsilons cover both.
    np.testing.assert_allclose(result, expected, rtol=2 * np.finfo(np.float32).eps)
    assert len(after) == 2
    for worker, (path, peak_bytes) in after.items():
        assert path == wce_numba.__file__
        assert peak_bytes - before[worker][1] < MAX_GROWTH_BYTES
