"""``CompiledForest`` gives scikit-learn's IsolationForest scores bit for bit, in one vectorised walk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest

from ml.forest import CompiledForest


@pytest.mark.parametrize(
    ("max_samples", "max_features", "rows"),
    [(256, 1.0, 1), (256, 1.0, 1000), (64, 0.6, 37), (300, 1.0, 5)],  # 300 > the training rows: all of them
)
def test_scores_equal_scikit_learns_bit_for_bit(max_samples, max_features, rows):
    rng = np.random.default_rng(7)
    train = rng.normal(size=(250, 6))
    train[:, 2] = rng.integers(0, 2, size=250)  # a binary feature: thresholds between 0 and 1
    forest = IsolationForest(n_estimators=60, max_samples=min(max_samples, 250), max_features=max_features,
                             random_state=3).fit(train)  # fmt: skip
    X = np.vstack([rng.normal(scale=3, size=(rows, 6)), train[:3]])  # new points, far ones, training points
    X[0, 1] = np.float32(forest.estimators_[0].tree_.threshold[0])  # a value on a split: goes left

    np.testing.assert_array_equal(CompiledForest(forest).score_samples(X), forest.score_samples(X))


def test_a_frame_with_feature_names_scores_as_the_forest_fitted_on_it_does():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    forest = IsolationForest(n_estimators=20, random_state=0).fit(frame)
    np.testing.assert_array_equal(
        CompiledForest(forest).score_samples(frame.head(9)), forest.score_samples(frame.head(9))
    )


def test_rows_with_a_missing_value_are_scored_by_scikit_learn():
    rng = np.random.default_rng(2)
    forest = IsolationForest(n_estimators=20, random_state=0).fit(rng.normal(size=(200, 3)))
    X = rng.normal(size=(4, 3))
    X[1, 2] = np.nan
    np.testing.assert_array_equal(CompiledForest(forest).score_samples(X), forest.score_samples(X))
