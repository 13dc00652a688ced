"""A fitted scikit-learn ``IsolationForest`` as flat arrays: the same scores, without the per-tree overhead.

``IsolationForest.score_samples`` walks its trees one by one through joblib, each ``tree.apply`` with its own
checks: a fixed cost of tens of milliseconds per call however few rows it scores. The per-order alert path
scores a handful of orders per Kafka poll, and the micro-batch scores every batch, so that fixed cost is most of
their scoring time. ``CompiledForest`` holds every tree's nodes in arrays of one shape (trees x nodes) and walks
all trees for all rows at once, one numpy step per level (at most ``ceil(log2(max_samples))`` levels).

The arithmetic is scikit-learn's (``sklearn.ensemble._iforest``), in the same order: rows as float32 compared
with float64 thresholds (``x <= threshold`` goes left), each tree's leaf contributes ``decision path length +
average path length - 1.0``, summed tree by tree, then ``-2 ** (-depth / (n_trees * c(max_samples)))``. Scores
are equal to ``score_samples``' bit for bit (``tests/unit/ml/test_forest.py``). Rows with a missing value go
through scikit-learn (its trees' rule for missing values is not repeated here).
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length


class CompiledForest:
    """``score_samples`` of a fitted ``IsolationForest``, for a 2-D float array of its input features."""

    def __init__(self, forest: IsolationForest):
        trees = [estimator.tree_ for estimator in forest.estimators_]
        count, width = len(trees), max(tree.node_count for tree in trees)
        self.left = np.zeros((count, width), dtype=np.intp)
        self.right = np.zeros((count, width), dtype=np.intp)
        self.feature = np.zeros((count, width), dtype=np.intp)
        self.threshold = np.zeros((count, width), dtype=np.float64)
        self.value = np.zeros((count, width), dtype=np.float64)
        for i, (tree, columns) in enumerate(zip(trees, forest.estimators_features_, strict=True)):
            n = tree.node_count
            nodes = np.arange(n)
            leaf = tree.children_left == -1
            self.left[i, :n] = np.where(leaf, nodes, tree.children_left)  # a leaf points at itself
            self.right[i, :n] = np.where(leaf, nodes, tree.children_right)
            self.feature[i, :n] = np.asarray(columns)[np.where(leaf, 0, tree.feature)]
            self.threshold[i, :n] = np.where(leaf, np.inf, tree.threshold)
            self.value[i, :n] = forest._decision_path_lengths[i] + forest._average_path_length_per_tree[i] - 1.0
        self.depth = max(int(estimator.get_depth()) for estimator in forest.estimators_)
        self.denominator = count * _average_path_length([forest._max_samples])[0]
        self.forest = forest

    def score_samples(self, X) -> np.ndarray:
        """As ``IsolationForest.score_samples(X)``: the opposite of the anomaly score, lower = more abnormal."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or np.isnan(X).any():
            return self.forest.score_samples(X)
        trees = np.arange(len(self.left))[:, None]
        rows = np.arange(len(X))[None, :]
        node = np.zeros((len(self.left), len(X)), dtype=np.intp)
        for _ in range(self.depth):
            go_left = X[rows, self.feature[trees, node]] <= self.threshold[trees, node]
            node = np.where(go_left, self.left[trees, node], self.right[trees, node])
        leaves = self.value[trees, node]
        depths = np.zeros(len(X))
        for contribution in leaves:  # tree by tree, the order scikit-learn adds them in
            depths += contribution
        denominator = self.denominator
        scores = 2 ** (-np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0))
        return -scores
