"""The demo: pos_weight trading precision for recall on real, imbalanced data.

scikit-learn's bundled digits (1797 8x8 images, no download) become the binary
task "is this digit a 9?", with about 10% positives. A logistic regression is
trained by full-batch gradient descent on the weighted cross entropy, once per
``pos_weight``, and scored on a held-out split: a larger ``pos_weight`` makes
missed nines cost more, so recall rises and precision falls.

Training uses the fused ``value_and_grad`` call with sample weights, as a
real training loop would: a slice of the training images is treated as coming
from a careless annotator (a fixed share of its labels flipped, the test
labels untouched), and its examples get a small sample weight, so the noise
barely moves the model.

scikit-learn, matplotlib and tqdm (the ``demo`` extra) are imported inside the
functions that need them, so importing this module needs only NumPy and the
package itself.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .api import (
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_value_and_grad,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Import name -> distribution name of each module the demo extra provides.
DEMO_EXTRA = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "tqdm": "tqdm"}

DEFAULT_POS_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
DEFAULT_EPOCHS = 1000
# The curvature of the loss grows with pos_weight. At 0.1 the mean training
# loss falls at every step even for pos_weight 16; at 1.0 it already rises at
# some steps there.
DEFAULT_LEARNING_RATE = 0.1
DEFAULT_SEED = 0
TEST_FRACTION = 0.25
POSITIVE_DIGIT = 9
# The noisy slice: this share of the training images, with this share of
# their labels flipped, trained with this sample weight by default.
NOISY_FRACTION = 0.2
FLIP_RATE = 0.3
DEFAULT_NOISY_WEIGHT = 0.1


def missing_demo_modules() -> list[str]:
    """Distribution names of the demo extra's packages that are not installed.

    Returns
    -------
    list of str
        Empty when scikit-learn, matplotlib and tqdm can all be imported.
    """
    return [
        distribution
        for module, distribution in DEMO_EXTRA.items()
        if importlib.util.find_spec(module) is None
    ]


@dataclass(frozen=True)
class Split:
    """Standardized features and 0/1 labels, split into training and test sets."""

    train_features: np.ndarray
    train_labels: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray


@dataclass(frozen=True)
class NoisyLabels:
    """Training labels with a noisy slice, and which examples are in it."""

    labels: np.ndarray
    in_slice: np.ndarray

    def sample_weights(self, noisy_weight: float) -> np.ndarray:
        """1 for every training example, ``noisy_weight`` in the noisy slice."""
        return np.where(self.in_slice, noisy_weight, 1.0)


@dataclass(frozen=True)
class LogisticModel:
    """A linear model whose output is the log-odds of the positive class."""

    weights: np.ndarray
    bias: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Log-odds for each row of ``features``."""
        return features @ self.weights + self.bias


@dataclass(frozen=True)
class SweepRow:
    """One model of the sweep: its training loss and its scores on the test set."""

    pos_weight: float
    train_loss: float
    precision: float
    recall: float
    f1: float
    false_negatives: int
    false_positives: int


def load_digits_task(seed: int = DEFAULT_SEED) -> Split:
    """The digits data set as "is this digit a 9?", split and standardized.

    Parameters
    ----------
    seed : int, optional
        Seed of the stratified train/test split (a quarter of the data is held
        out; both parts keep the data's share of positives).

    Returns
    -------
    Split
        float64 features standardized with the training split's mean and
        standard deviation (the test split never informs the scaling), and
        float64 labels that are 1.0 for a 9 and 0.0 for any other digit.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    features, digits = load_digits(return_X_y=True)
    labels = (digits == POSITIVE_DIGIT).astype(np.float64)
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=TEST_FRACTION, random_state=seed, stratify=labels
    )

    # Pixels that are blank in every training image have zero spread; the
    # scaler leaves them at 0 instead of dividing by it.
    scaler = StandardScaler().fit(train_x)
    return Split(scaler.transform(train_x), train_y, scaler.transform(test_x), test_y)


def add_noisy_slice(labels: np.ndarray, seed: int = DEFAULT_SEED) -> NoisyLabels:
    """Flip ``FLIP_RATE`` of the labels in a random ``NOISY_FRACTION`` of rows.

    Parameters
    ----------
    labels : numpy.ndarray
        Clean 0/1 training labels; not modified.
    seed : int, optional
        Seed of the choice of the slice and of the flipped labels.

    Returns
    -------
    NoisyLabels
        A copy of the labels with the flips, and the mask of the slice.

    Examples
    --------
    >>> import numpy as np
    >>> noisy = add_noisy_slice(np.zeros(1000))
    >>> int(noisy.in_slice.sum()), int(noisy.labels.sum())
    (200, 60)
    """
    rng = np.random.default_rng(seed)
    size = len(labels)
    in_slice = np.zeros(size, dtype=bool)
    in_slice[rng.choice(size, round(NOISY_FRACTION * size), replace=False)] = True
    flipped = np.flatnonzero(in_slice)
    flipped = rng.choice(flipped, round(FLIP_RATE * len(flipped)), replace=False)

    noisy = labels.copy()
    noisy[flipped] = 1.0 - noisy[flipped]
    return NoisyLabels(noisy, in_slice)


def train_logistic_regression(
    features: np.ndarray,
    labels: np.ndarray,
    pos_weight: float,
    *,
    sample_weight: np.ndarray | None = None,
    epochs: int = DEFAULT_EPOCHS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    progress=None,
) -> LogisticModel:
    """Minimize the mean weighted cross entropy by full-batch gradient descent.

    Parameters
    ----------
    features : numpy.ndarray
        Training inputs, shape ``(n_examples, n_features)``.
    labels : numpy.ndarray
        Training targets in [0, 1], shape ``(n_examples,)``.
    pos_weight : float
        Weight of the positive term of the loss.
    sample_weight : numpy.ndarray, optional
        Weight of each training example in the mean loss, shape
        ``(n_examples,)``; default 1 for all.
    epochs : int, optional
        Number of gradient steps, each over the whole training set.
    learning_rate : float, optional
        Step size.
    progress : object, optional
        Anything with an ``update(n)`` method, such as a ``tqdm`` bar; it is
        advanced by one after each epoch.

    Returns
    -------
    LogisticModel
        The weights and bias after the last step, starting from zero (the loss
        is convex in them, so the start only changes how fast it converges).

    Examples
    --------
    >>> import numpy as np
    >>> features = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    >>> labels = np.array([0.0, 0.0, 1.0, 1.0])
    >>> model = train_logistic_regression(features, labels, pos_weight=2.0)
    >>> model.logits(features) > 0
    array([False, False,  True,  True])
    """
    n_features = features.shape[1]
    weights = np.zeros(n_features, dtype=features.dtype)
    bias = 0.0

    for _ in range(epochs):
        # The loss is the mean over examples of w_i loss_i(logit_i), with
        # logit_i = features_i . weights + bias. One fused call gives its
        # value and g_i = d loss / d logit_i (already times w_i / n), so by
        # the chain rule the gradient is features.T @ g for the weights and
        # sum(g) for the bias.
        loss, grad = weighted_cross_entropy_with_logits_value_and_grad(
            labels,
            features @ weights + bias,
            pos_weight,
            weight=sample_weight,
            reduction="mean",
        )
        weights -= learning_rate * (features.T @ grad)
        bias -= learning_rate * float(grad.sum())
        if progress is not None:
            progress.update(1)
            # refresh=False: the bar redraws at its own pace, not every epoch
            # (which wrote 0.7 MB to a redirected stderr).
            progress.set_postfix(
                pos_weight=f"{pos_weight:g}", loss=f"{loss:.4f}", refresh=False
            )

    return LogisticModel(weights, bias)


def mean_loss(
    model: LogisticModel,
    features: np.ndarray,
    labels: np.ndarray,
    pos_weight: float,
    sample_weight: np.ndarray | None = None,
) -> float:
    """The mean weighted cross entropy of ``model`` on the given examples."""
    loss = weighted_cross_entropy_with_logits(
        labels,
        model.logits(features),
        pos_weight,
        weight=sample_weight,
        reduction="mean",
    )
    return float(loss)


def evaluate(model: LogisticModel, features: np.ndarray, labels: np.ndarray) -> dict:
    """Precision, recall, F1 and error counts of ``model`` at a 0.5 threshold.

    Parameters
    ----------
    model : LogisticModel
        The model to score.
    features, labels : numpy.ndarray
        The examples to score it on, labels 0 or 1.

    Returns
    -------
    dict
        ``precision``, ``recall`` and ``f1`` as floats (0.0 where undefined,
        for instance precision when nothing is predicted positive), and
        ``false_negatives`` and ``false_positives`` as ints.
    """
    from sklearn.metrics import (
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
    )

    # sigmoid(logit) > 0.5 exactly when logit > 0.
    predicted = (model.logits(features) > 0).astype(labels.dtype)
    _, false_positives, false_negatives, _ = confusion_matrix(
        labels, predicted, labels=[0, 1]
    ).ravel()
    return {
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "false_negatives": int(false_negatives),
        "false_positives": int(false_positives),
    }


def run_sweep(
    split: Split,
    pos_weights: Sequence[float] = DEFAULT_POS_WEIGHTS,
    *,
    noisy_weight: float = DEFAULT_NOISY_WEIGHT,
    epochs: int = DEFAULT_EPOCHS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = DEFAULT_SEED,
    progress: bool = False,
) -> list[SweepRow]:
    """Train and score one model per ``pos_weight``, on labels with a noisy slice.

    Parameters
    ----------
    split : Split
        Training and test data, as from :func:`load_digits_task`.
    pos_weights : sequence of float, optional
        The weights to sweep, in the order the rows should come.
    noisy_weight : float, optional
        Sample weight of the training examples in the noisy slice (see
        :func:`add_noisy_slice`); 1 trains on them like on the rest.
    epochs, learning_rate : optional
        Passed to :func:`train_logistic_regression`.
    seed : int, optional
        Seed of the noisy slice.
    progress : bool, optional
        Show one tqdm progress bar over all epochs of all models, on stderr.

    Returns
    -------
    list of SweepRow
        One row per weight: the mean weighted training loss of the trained
        model and its scores on the (clean) test split.
    """
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pos_weights) * epochs, unit="epoch", desc="training")

    noisy = add_noisy_slice(split.train_labels, seed)
    sample_weight = noisy.sample_weights(noisy_weight)
    rows = []
    try:
        for pos_weight in pos_weights:
            model = train_logistic_regression(
                split.train_features,
                noisy.labels,
                pos_weight,
                sample_weight=sample_weight,
                epochs=epochs,
                learning_rate=learning_rate,
                progress=bar,
            )
            train_loss = mean_loss(
                model, split.train_features, noisy.labels, pos_weight, sample_weight
            )
            scores = evaluate(model, split.test_features, split.test_labels)
            rows.append(SweepRow(pos_weight, train_loss, **scores))
    finally:
        if bar is not None:
            bar.close()
    return rows


# Header, SweepRow field and format of each column of the table.
_COLUMNS = (
    ("pos_weight", "pos_weight", "{:g}"),
    ("train_loss", "train_loss", "{:.4f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("F1", "f1", "{:.3f}"),
    ("false_neg", "false_negatives", "{:d}"),
    ("false_pos", "false_positives", "{:d}"),
)


def format_table(rows: Sequence[SweepRow]) -> str:
    """The sweep as a plain-text table with right-aligned columns.

    Examples
    --------
    >>> row = SweepRow(pos_weight=2.0, train_loss=0.1234567, precision=0.875,
    ...                recall=0.9333, f1=0.9032, false_negatives=3,
    ...                false_positives=6)
    >>> print(format_table([row]))
    pos_weight  train_loss  precision  recall     F1  false_neg  false_pos
             2      0.1235      0.875   0.933  0.903          3          6
    """
    headers = [header for header, _, _ in _COLUMNS]
    cells = [
        [spec.format(getattr(row, field)) for _, field, spec in _COLUMNS]
        for row in rows
    ]
    widths = [
        max(len(line[i]) for line in [headers, *cells]) for i in range(len(headers))
    ]
    return "\n".join(
        "  ".join(text.rjust(width) for text, width in zip(line, widths, strict=True))
        for line in [headers, *cells]
    )


def plot_precision_recall(rows: Sequence[SweepRow], path: str | Path) -> Figure:
    """Write a PNG of test precision and recall versus ``pos_weight``.

    Parameters
    ----------
    rows : sequence of SweepRow
        The sweep, in any order; points are joined in increasing ``pos_weight``.
    path : str or pathlib.Path
        Where to write the PNG.

    Returns
    -------
    matplotlib.figure.Figure
        The figure that was written, with one axes holding the precision line
        and then the recall line.
    """
    # The object-oriented API with the Agg canvas renders without pyplot, so
    # no GUI backend is chosen and no global figure state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = sorted(rows, key=lambda row: row.pos_weight)
    pos_weights = [row.pos_weight for row in rows]

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(pos_weights, [row.precision for row in rows], "o-", label="precision")
    axes.plot(pos_weights, [row.recall for row in rows], "s-", label="recall")
    axes.set_xscale("log", base=2)
    axes.set_xticks(pos_weights, labels=[f"{weight:g}" for weight in pos_weights])
    axes.minorticks_off()
    axes.set_ylim(0.0, 1.02)
    axes.set_xlabel("pos_weight (log2 scale)")
    axes.set_ylabel("score on the test split")
    axes.set_title(f"Is this digit a {POSITIVE_DIGIT}? Test precision and recall")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")

    figure.savefig(path, format="png", dpi=100)
    return figure
