"""Score rows with a LightGBM binary model as compiled arrays: the same probabilities as ``Booster.predict``, bit for
bit, several times faster (``benchmarks/night_throughput.py`` times the night against LightGBM's own predict).

Why this exists: ``Booster.predict`` on a dense matrix spends most of its time outside the trees (it copies each row
into a sparse vector, then walks the 200 trees one row at a time); the two compiled scorers that are faster with
identical scores cannot be used at night (lleaves does not run with the llvmlite numba needs; tl2cgen needs gcc and
20-60 s per model, see ``benchmarks/README.md``). Here the trees are flat arrays walked by a numba kernel, a block of
rows per tree at a time, in threads over row ranges.

Identical to LightGBM because it does what LightGBM does, in the same order: inputs with ``|x| <= 1e-35`` read as 0,
each split decided by LightGBM's ``Tree::Decision`` (``treeshap.goes_left``, shared with the TreeSHAP engine), the
raw score the sum of the trees' leaf values in tree order starting from 0.0, and the probability
``1 / (1 + exp(-sigmoid * raw))`` (LightGBM's ``BinaryLogloss::ConvertOutput``). Models of another kind (several
outputs per row, linear trees, averaged output, another objective) raise ``UnsupportedModel``; callers score those
with ``Booster.predict``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numba
import numpy as np

from nightkeeper.treeshap import ZERO_THRESHOLD, SplitNodes, UnsupportedModel, goes_left, in_row_ranges

# rows walked together per tree: the block's values and running scores stay in cache
BLOCK_ROWS = 512


@dataclass(frozen=True)
class ScoringForest:
    """A binary booster's trees as flat arrays for ``probabilities``. Build with ``scoring_forest``."""

    num_features: int
    sigmoid: float
    arrays: tuple[np.ndarray, ...]


def scoring_forest(booster: lgb.Booster) -> ScoringForest:
    """Flatten ``booster`` for ``probabilities``. Raises ``UnsupportedModel`` unless it is a single-output binary
    model (objective ``binary``) with constant leaves and summed (not averaged) trees."""
    dump = booster.dump_model()
    objective = str(dump.get("objective", "")).split()
    if dump.get("num_tree_per_iteration", 1) != 1 or not objective or objective[0] != "binary":
        raise UnsupportedModel(f"only binary models are scored here, not {dump.get('objective')!r}")
    if dump.get("average_output", False):
        raise UnsupportedModel("models that average their trees (random forest mode) are not supported")
    sigmoid = 1.0
    for option in objective[1:]:
        name, _, value = option.partition(":")
        if name == "sigmoid":
            sigmoid = float(value)
    builder = _TreesBuilder()
    for tree in dump["tree_info"]:
        builder.add_tree(tree["tree_structure"])
    return ScoringForest(int(dump["max_feature_idx"]) + 1, sigmoid, builder.finish())


def probabilities(forest: ScoringForest, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
    """``Booster.predict(matrix)`` of the compiled booster: the positive class's probability per row (float64).
    ``matrix`` is rows x features, any float dtype; ``num_threads`` > 0 caps the threads (0 = one per core)."""
    if matrix.ndim != 2 or matrix.shape[1] != forest.num_features:
        raise ValueError(f"expected a matrix of {forest.num_features} feature columns, got shape {matrix.shape}")
    values = np.ascontiguousarray(matrix, dtype=np.float64)
    out = np.empty(len(values), dtype=np.float64)
    in_row_ranges(
        lambda first, end: _predict(values, out, first, end, forest.sigmoid, *forest.arrays),
        len(values),
        BLOCK_ROWS,
        num_threads,
    )
    return out


class _TreesBuilder:
    """Accumulates trees from ``Booster.dump_model()`` into the flat arrays ``_predict`` reads. Within a tree, an
    internal node is its pre-order index and a child that is a leaf is ``~leaf_index``."""

    def __init__(self) -> None:
        self.node_start = [0]
        self.nodes = SplitNodes()
        self.node_left: list[int] = []
        self.node_right: list[int] = []
        self.leaf_start = [0]
        self.leaf_value: list[float] = []
        self.tree_constant: list[float] = []

    def add_tree(self, root: dict[str, Any]) -> None:
        leaves: dict[int, float] = {}
        if "leaf_index" not in root and "split_index" not in root:  # a single-leaf tree adds its value to every row
            self.tree_constant.append(float(root["leaf_value"]))
        else:
            self.tree_constant.append(0.0)
            self._walk(root, len(self.nodes), leaves)
        self.node_start.append(len(self.nodes))
        self.leaf_value.extend(leaves[index] for index in range(len(leaves)))
        self.leaf_start.append(len(self.leaf_value))

    def _walk(self, node: dict[str, Any], first_node: int, leaves: dict[int, float]) -> int:
        """Add ``node``'s subtree; returns its child code (pre-order index, or ``~leaf_index`` for a leaf)."""
        if "leaf_index" in node:
            if "leaf_coeff" in node:
                raise UnsupportedModel("linear trees are not supported")
            leaves[int(node["leaf_index"])] = float(node["leaf_value"])
            return ~int(node["leaf_index"])
        at = self.nodes.add(node)
        self.node_left.append(0)
        self.node_right.append(0)
        self.node_left[at] = self._walk(node["left_child"], first_node, leaves)
        self.node_right[at] = self._walk(node["right_child"], first_node, leaves)
        return at - first_node

    def finish(self) -> tuple[np.ndarray, ...]:
        return (
            np.array(self.node_start, dtype=np.int64),
            *self.nodes.arrays(),
            np.column_stack([self.node_left, self.node_right]).astype(np.int64).ravel(),
            np.array(self.leaf_start, dtype=np.int64),
            np.array(self.leaf_value, dtype=np.float64),
            np.array(self.tree_constant, dtype=np.float64),
        )


@numba.njit(cache=True, nogil=True)
def _predict(
    values: np.ndarray,
    out: np.ndarray,
    first_row: int,
    end_row: int,
    sigmoid: float,
    node_start: np.ndarray,
    node_feature: np.ndarray,
    node_threshold: np.ndarray,
    node_categorical: np.ndarray,
    node_missing: np.ndarray,
    node_default_left: np.ndarray,
    node_bits_start: np.ndarray,
    node_bits_len: np.ndarray,
    bits: np.ndarray,
    children: np.ndarray,
    leaf_start: np.ndarray,
    leaf_value: np.ndarray,
    tree_constant: np.ndarray,
) -> None:
    features = values.shape[1]
    trees = len(node_start) - 1
    for low in range(first_row, end_row, BLOCK_ROWS):
        size = min(end_row, low + BLOCK_ROWS) - low
        snapped = np.empty((size, features), dtype=np.float64)
        for r in range(size):
            for f in range(features):
                x = values[low + r, f]
                snapped[r, f] = 0.0 if abs(x) <= ZERO_THRESHOLD else x
        raw = np.zeros(size, dtype=np.float64)
        for t in range(trees):
            first = node_start[t]
            if node_start[t + 1] == first:
                for r in range(size):
                    raw[r] += tree_constant[t]
                continue
            leaves = leaf_start[t]
            for r in range(size):
                node = 0
                while node >= 0:
                    g = first + node
                    if goes_left(
                        snapped[r, node_feature[g]],
                        node_threshold[g],
                        node_categorical[g],
                        node_missing[g],
                        node_default_left[g],
                        bits,
                        node_bits_start[g],
                        node_bits_len[g],
                    ):
                        node = children[2 * g]
                    else:
                        node = children[2 * g + 1]
                raw[r] += leaf_value[leaves + ~node]
        for r in range(size):
            out[low + r] = 1.0 / (1.0 + math.exp(-sigmoid * raw[r]))
