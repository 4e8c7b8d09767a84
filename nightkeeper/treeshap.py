"""Exact path-dependent TreeSHAP for a LightGBM booster, equal to ``booster.predict(X, pred_contrib=True)`` to
~1e-14 and ~20x faster (see ``benchmarks/reason_codes_engines.py``).

Why this exists: LightGBM's own ``pred_contrib`` runs the classic TreeSHAP recursion, O(leaves x depth^2) per tree
and row; the libraries that do better (woodelf-explainer, fasttreeshap) cannot read LightGBM categorical splits,
which our models have (measured in the benchmark). The idea is FastTreeSHAP v2's / WOODELF's, implemented for
LightGBM's exact decision rules:

For one leaf with value ``v`` whose root path splits on the distinct features ``j = 1..d``, let ``z_j`` be the
product of the training-count fractions ``count(child on the path) / count(node)`` over the path's nodes on
feature ``j``, and ``o_j`` (0 or 1) whether the row goes the path's way at all of them. The leaf's path-dependent
value of a coalition ``S`` is ``v * prod_{j in S} o_j * prod_{j not in S} z_j``, so its Shapley value for ``i`` is

    phi_i = v * (o_i - z_i) * sum_{S subset of the others} |S|! (d-|S|-1)! / d! * prod_{S} o_j * prod_{rest} z_j

which depends on the row only through the bit pattern ``o`` (d bits). So each leaf's phi for all ``2^d`` patterns is
tabulated once per model (``d`` <= ``TABLE_MAX_DEPTH``; deeper leaves are computed per row from the formula), and
explaining a row is: evaluate every split once, form each leaf's pattern (top-down, one edge of the tree at a time),
add the leaf's table row. A tree's contributions summed over its leaves are exactly TreeSHAP's (the same Shapley
values, summed in another order).

Splits are evaluated exactly as LightGBM's ``Tree::Decision`` does: inputs with ``|x| <= 1e-35`` read as 0 (as
LightGBM's dense-row reader drops them); numerical ``x <= threshold`` with missing-type None (NaN read as 0), Zero
(0 takes the default side) or NaN (NaN takes the default side); categorical: NaN, negative values and categories
not in the split's set go right, ``int(x)`` in the set goes left.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numba
import numpy as np

# Leaves whose path has at most this many distinct features get a table of 2^d x d float64 values (<= 360 KiB);
# deeper ones (rare with 31 leaves and our ~20 features) are computed per row.
TABLE_MAX_DEPTH = 12
# LightGBM's kZeroThreshold (a float32 constant widened to double).
ZERO_THRESHOLD = float(np.float32(1e-35))
MISSING_NONE, MISSING_ZERO, MISSING_NAN = 0, 1, 2
MISSING_CODES = {"None": MISSING_NONE, "Zero": MISSING_ZERO, "NaN": MISSING_NAN}
# rows explained together per tree pass: a tree's tables are brought into cache once per block, so large blocks
# (2048 rows: ~1.6 MiB of block arrays per thread) cost ~40% less than 256-row ones (measured on the champion)
BLOCK_ROWS = 2048


class UnsupportedModel(ValueError):
    """The booster has a structure this engine does not reproduce (e.g. linear trees, several outputs per row)."""


@dataclass(frozen=True)
class CompiledForest:
    """A booster's trees as flat arrays for the kernel, plus the per-leaf tables. Build with ``compile_forest``."""

    num_features: int
    expected_value: float
    arrays: tuple[np.ndarray, ...]


def compile_forest(booster: lgb.Booster) -> CompiledForest:
    """Flatten ``booster`` (a single-output GBDT) for ``contributions``. Raises ``UnsupportedModel`` for models whose
    ``pred_contrib`` is not one column per feature plus the base value (multiclass) or whose leaves are not
    constants (linear trees)."""
    dump = booster.dump_model()
    if dump.get("num_tree_per_iteration", 1) != 1:
        raise UnsupportedModel("only single-output models (binary, regression) are supported")
    num_features = int(dump["max_feature_idx"]) + 1
    builder = _ForestBuilder()
    expected_value = 0.0
    for tree in dump["tree_info"]:
        expected_value += builder.add_tree(tree["tree_structure"])
    return CompiledForest(num_features, expected_value, builder.finish())


def contributions_of(forest: CompiledForest, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
    """``pred_contrib`` of the compiled booster on ``matrix`` (rows x features, any float dtype): an
    ``(rows, features + 1)`` float64 array of per-feature contributions with the base value as last column.
    ``num_threads`` > 0 caps the threads used (0 = one per core)."""
    if matrix.ndim != 2 or matrix.shape[1] != forest.num_features:
        raise ValueError(f"expected a matrix of {forest.num_features} feature columns, got shape {matrix.shape}")
    values = np.ascontiguousarray(matrix, dtype=np.float64)
    out = np.zeros((len(values), forest.num_features + 1), dtype=np.float64)
    in_row_ranges(
        lambda first, end: _explain(values, out, first, end, *forest.arrays), len(values), BLOCK_ROWS, num_threads
    )
    out[:, -1] = forest.expected_value
    return out


def in_row_ranges(kernel: Callable[[int, int], None], rows: int, block_rows: int, num_threads: int) -> None:
    """Call ``kernel(first_row, end_row)`` on contiguous ranges of ``rows`` rows, one per thread: one thread per core
    (``num_threads`` > 0 caps them), at most one per ``block_rows`` rows. For numba kernels that release the GIL
    (``nogil=True``): plain threads, where a numba parallel kernel would cost ~30 s more of JIT compiling on a cold
    cache."""
    threads = max(1, min(num_threads or os.cpu_count() or 1, -(-rows // block_rows)))
    if threads == 1:
        kernel(0, rows)
        return
    bounds = [rows * part // threads for part in range(threads + 1)]
    with ThreadPoolExecutor(threads, thread_name_prefix="nightkeeper-kernel") as pool:
        list(pool.map(kernel, bounds[:-1], bounds[1:]))


class SplitNodes:
    """A forest's split nodes from ``Booster.dump_model()`` as flat lists, in the order added: what ``goes_left``
    reads per node (feature, threshold, categorical, missing type, default side, and a categorical split's bitset as
    a range of ``bits``). Shared by this engine and ``nightkeeper.forest_scoring``."""

    def __init__(self) -> None:
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.categorical: list[bool] = []
        self.missing: list[int] = []
        self.default_left: list[bool] = []
        self.bits_start: list[int] = []
        self.bits_len: list[int] = []
        self.bits: list[int] = []

    def __len__(self) -> int:
        return len(self.feature)

    def add(self, node: dict[str, Any]) -> int:
        """Append a split node of ``dump_model``'s tree structure and return its index. Raises UnsupportedModel for a
        decision type LightGBM's ``Tree::Decision`` does not have."""
        self.feature.append(int(node["split_feature"]))
        self.missing.append(MISSING_CODES[node["missing_type"]])
        self.default_left.append(bool(node["default_left"]))
        if node["decision_type"] == "==":
            categories = [int(c) for c in str(node["threshold"]).split("||")]
            words = [0] * (max(categories) // 32 + 1)
            for category in categories:
                words[category // 32] |= 1 << (category % 32)
            self.categorical.append(True)
            self.threshold.append(0.0)
            self.bits_start.append(len(self.bits))
            self.bits_len.append(len(words))
            self.bits.extend(words)
        elif node["decision_type"] == "<=":
            self.categorical.append(False)
            self.threshold.append(float(node["threshold"]))
            self.bits_start.append(0)
            self.bits_len.append(0)
        else:
            raise UnsupportedModel(f"unknown decision type {node['decision_type']!r}")
        return len(self.feature) - 1

    def arrays(self) -> tuple[np.ndarray, ...]:
        """feature, threshold, categorical, missing, default_left, bits_start, bits_len, bits: the kernels' order."""
        return (
            np.array(self.feature, dtype=np.int64),
            np.array(self.threshold, dtype=np.float64),
            np.array(self.categorical, dtype=np.bool_),
            np.array(self.missing, dtype=np.int64),
            np.array(self.default_left, dtype=np.bool_),
            np.array(self.bits_start, dtype=np.int64),
            np.array(self.bits_len, dtype=np.int64),
            np.array(self.bits, dtype=np.uint32),
        )


class _ForestBuilder:
    """Accumulates trees from ``Booster.dump_model()`` into the flat arrays ``_explain`` reads."""

    def __init__(self) -> None:
        self.node_start = [0]
        self.nodes = SplitNodes()
        self.leaf_start = [0]
        self.leaf_value: list[float] = []
        self.leaf_depth: list[int] = []
        self.slot_start = [0]
        self.slot_feature: list[int] = []
        self.slot_zero: list[float] = []
        self.edge_start = [0]
        self.edge_node: list[int] = []
        self.edge_left: list[bool] = []
        self.edge_slot: list[int] = []
        self.edge_child: list[int] = []

    def add_tree(self, root: dict[str, Any]) -> float:
        """Add one tree; returns its expected value (LightGBM's ``Tree::ExpectedValue``)."""
        if "leaf_index" not in root and "split_index" not in root:  # a single-leaf tree only shifts the base value
            self.node_start.append(len(self.nodes))
            self.leaf_start.append(len(self.leaf_value))
            self.edge_start.append(len(self.edge_node))
            return float(root["leaf_value"])
        first_node = len(self.nodes)
        leaves: list[tuple[int, float, int, list[tuple[int, bool, int, float]]]] = []
        self._walk(root, first_node, [], leaves)
        self.node_start.append(len(self.nodes))
        total = float(root["internal_count"])
        expected = 0.0
        for _, value, count, path in sorted(leaves, key=lambda leaf: leaf[0]):  # LightGBM sums in leaf order
            expected += (count / total) * value
            self._add_leaf(value, path)
        self.leaf_start.append(len(self.leaf_value))
        self.edge_start.append(len(self.edge_node))
        return expected

    def _walk(
        self,
        node: dict[str, Any],
        first_node: int,
        path: list[tuple[int, bool, int, float]],
        leaves: list[tuple[int, float, int, list[tuple[int, bool, int, float]]]],
    ) -> None:
        if "leaf_index" in node:
            if "leaf_coeff" in node:
                raise UnsupportedModel("linear trees are not supported")
            leaves.append((int(node["leaf_index"]), float(node["leaf_value"]), int(node["leaf_count"]), path))
            return
        index = self.nodes.add(node) - first_node
        feature = int(node["split_feature"])
        count = float(node["internal_count"])
        # the slots of a path's features are numbered by first appearance from the root, so a node's prefix numbers
        # them as every leaf below it does: the kernel builds leaf patterns top-down, one edge at a time
        seen = list(dict.fromkeys(step[2] for step in path))
        slot = seen.index(feature) if feature in seen else len(seen)
        for child, left in ((node["left_child"], True), (node["right_child"], False)):
            child_count = child["internal_count"] if "internal_count" in child else child["leaf_count"]
            self.edge_node.append(index)
            self.edge_left.append(left)
            self.edge_slot.append(slot)
            # an internal child is numbered when visited, next; a leaf child by ~leaf_index
            self.edge_child.append(~int(child["leaf_index"]) if "leaf_index" in child else len(self.nodes) - first_node)
            self._walk(child, first_node, [*path, (index, left, feature, child_count / count)], leaves)

    def _add_leaf(self, value: float, path: list[tuple[int, bool, int, float]]) -> None:
        slots: dict[int, int] = {}
        zeros: list[float] = []
        for _, _, feature, fraction in path:
            if feature not in slots:
                slots[feature] = len(zeros)
                zeros.append(1.0)
            zeros[slots[feature]] *= fraction
        self.slot_feature.extend(slots)
        self.slot_zero.extend(zeros)
        self.slot_start.append(len(self.slot_feature))
        self.leaf_value.append(value)
        self.leaf_depth.append(len(zeros))

    def finish(self) -> tuple[np.ndarray, ...]:
        depth = np.array(self.leaf_depth, dtype=np.int64)
        max_depth = int(depth.max()) if len(depth) else 0
        tabled = depth <= TABLE_MAX_DEPTH
        sizes = np.where(tabled, (1 << np.minimum(depth, TABLE_MAX_DEPTH)) * depth, 0)
        table_start = np.where(tabled, np.concatenate([[0], np.cumsum(sizes)[:-1]]), -1).astype(np.int64)
        slot_start = np.array(self.slot_start, dtype=np.int64)
        slot_zero = np.array(self.slot_zero, dtype=np.float64)
        leaf_value = np.array(self.leaf_value, dtype=np.float64)
        table = np.empty(int(sizes.sum()), dtype=np.float64)
        _fill_tables(table, table_start, depth, slot_start, slot_zero, leaf_value)
        return (
            np.array(self.node_start, dtype=np.int64),
            *self.nodes.arrays(),
            np.array(self.leaf_start, dtype=np.int64),
            leaf_value,
            depth,
            slot_start,
            np.array(self.slot_feature, dtype=np.int64),
            slot_zero,
            np.array(self.edge_start, dtype=np.int64),
            np.array(self.edge_node, dtype=np.int64),
            np.array(self.edge_left, dtype=np.bool_),
            np.array(self.edge_slot, dtype=np.int64),
            np.array(self.edge_child, dtype=np.int64),
            table_start,
            table,
            np.array([max_depth], dtype=np.int64),
        )


@numba.njit(cache=True)
def _leaf_phi(value: float, zero: np.ndarray, pattern: int, d: int, out: np.ndarray, weights: np.ndarray) -> None:
    """The leaf's Shapley values ``out[:d]`` for one pattern of followed features (module docstring), by TreeSHAP's
    EXTEND over the leaf's ``d`` features then UNWOUND-SUM per feature (Lundberg et al., Algorithm 2): O(d^2)."""
    weights[0] = 1.0  # the root's dummy element (zero fraction 1, one fraction 1)
    for depth in range(1, d + 1):
        follows = (pattern >> (depth - 1)) & 1
        weights[depth] = 0.0
        for i in range(depth - 1, -1, -1):
            weights[i + 1] += follows * weights[i] * (i + 1) / (depth + 1)
            weights[i] = zero[depth - 1] * weights[i] * (depth - i) / (depth + 1)
    for k in range(d):
        one = (pattern >> k) & 1
        next_one = weights[d]
        total = 0.0
        for j in range(d - 1, -1, -1):
            if one != 0:
                share = next_one * (d + 1) / (j + 1)
                total += share
                next_one = weights[j] - share * zero[k] * (d - j) / (d + 1)
            else:
                total += (weights[j] / zero[k]) * (d + 1) / (d - j)
        out[k] = total * (one - zero[k]) * value


@numba.njit(cache=True)
def _fill_tables(
    table: np.ndarray,
    table_start: np.ndarray,
    depth: np.ndarray,
    slot_start: np.ndarray,
    slot_zero: np.ndarray,
    leaf_value: np.ndarray,
) -> None:
    for leaf in range(len(depth)):
        start = table_start[leaf]
        if start < 0:
            continue
        d = depth[leaf]
        zero = slot_zero[slot_start[leaf] : slot_start[leaf] + d]
        weights = np.empty(d + 1, dtype=np.float64)
        for pattern in range(1 << d):
            base = start + pattern * d
            _leaf_phi(leaf_value[leaf], zero, pattern, d, table[base : base + d], weights)


@numba.njit(cache=True, inline="always")
def goes_left(
    x: float,
    threshold: float,
    categorical: bool,
    missing: int,
    default_left: bool,
    bits: np.ndarray,
    bits_start: int,
    bits_len: int,
) -> bool:
    """LightGBM's Tree::Decision on one (already zero-snapped) value."""
    if categorical:
        if not (x > -1.0 and x < 2147483648.0):  # NaN, negative or beyond int: right, as LightGBM
            return False
        category = int(x)
        word = category >> 5
        if word >= bits_len:
            return False
        return ((bits[bits_start + word] >> np.uint32(category & 31)) & np.uint32(1)) == 1
    if np.isnan(x):
        if missing == 2:
            return default_left
        x = 0.0
    if missing == 1 and x == 0.0:
        return default_left
    return x <= threshold


@numba.njit(cache=True, nogil=True)
def _explain(
    values: np.ndarray,
    out: np.ndarray,
    first_row: int,
    end_row: int,
    node_start: np.ndarray,
    node_feature: np.ndarray,
    node_threshold: np.ndarray,
    node_categorical: np.ndarray,
    node_missing: np.ndarray,
    node_default_left: np.ndarray,
    node_bits_start: np.ndarray,
    node_bits_len: np.ndarray,
    bits: np.ndarray,
    leaf_start: np.ndarray,
    leaf_value: np.ndarray,
    depth: np.ndarray,
    slot_start: np.ndarray,
    slot_feature: np.ndarray,
    slot_zero: np.ndarray,
    edge_start: np.ndarray,
    edge_node: np.ndarray,
    edge_left: np.ndarray,
    edge_slot: np.ndarray,
    edge_child: np.ndarray,
    table_start: np.ndarray,
    table: np.ndarray,
    max_depth_of: np.ndarray,
) -> None:
    features = values.shape[1]
    trees = len(node_start) - 1
    max_nodes = 1
    max_ids = 1
    for t in range(trees):
        max_nodes = max(max_nodes, node_start[t + 1] - node_start[t])
        max_ids = max(max_ids, node_start[t + 1] - node_start[t] + leaf_start[t + 1] - leaf_start[t])
    max_depth = max_depth_of[0]
    for low in range(first_row, end_row, BLOCK_ROWS):
        size = min(end_row, low + BLOCK_ROWS) - low
        snapped = np.empty((features, size), dtype=np.float64)  # feature-major: one split reads a contiguous row
        for r in range(size):
            for f in range(features):
                x = values[low + r, f]
                snapped[f, r] = 0.0 if abs(x) <= ZERO_THRESHOLD else x
        phi = np.zeros((features, size), dtype=np.float64)  # feature-major too: a leaf's adds stream over rows
        left = np.empty((max_nodes, size), dtype=np.bool_)
        # per node (internal nodes by index, then leaves), the bits of the path's features the row follows so far
        patterns = np.empty((max_ids, size), dtype=np.int64)
        leaf_out = np.empty(max(max_depth, 1), dtype=np.float64)
        weights = np.empty(max_depth + 1, dtype=np.float64)
        for t in range(trees):
            first = node_start[t]
            for n in range(node_start[t + 1] - first):
                g = first + n
                column = snapped[node_feature[g]]
                decided = left[n]
                for r in range(size):
                    decided[r] = goes_left(
                        column[r],
                        node_threshold[g],
                        node_categorical[g],
                        node_missing[g],
                        node_default_left[g],
                        bits,
                        node_bits_start[g],
                        node_bits_len[g],
                    )
            nodes = node_start[t + 1] - first
            patterns[0, :] = -1
            for e in range(edge_start[t], edge_start[t + 1]):
                child = edge_child[e]
                source = patterns[edge_node[e]]
                target = patterns[child if child >= 0 else nodes + ~child]
                decided = left[edge_node[e]]
                way = edge_left[e]
                keep = ~(np.int64(1) << edge_slot[e])
                for r in range(size):  # branch-free: clear the feature's bit where the row left the path
                    target[r] = source[r] & (keep | -np.int64(decided[r] == way))
            for leaf in range(leaf_start[t], leaf_start[t + 1]):
                d = depth[leaf]
                slots = slot_start[leaf]
                start = table_start[leaf]
                pattern = patterns[nodes + leaf - leaf_start[t]]
                mask = (np.int64(1) << d) - 1
                for r in range(size):
                    pattern[r] &= mask
                if start >= 0:
                    for s in range(d):
                        row = phi[slot_feature[slots + s]]
                        for r in range(size):
                            row[r] += table[start + pattern[r] * d + s]
                else:
                    for r in range(size):
                        _leaf_phi(leaf_value[leaf], slot_zero[slots : slots + d], pattern[r], d, leaf_out, weights)
                        for s in range(d):
                            phi[slot_feature[slots + s], r] += leaf_out[s]
        for r in range(size):
            for f in range(features):
                out[low + r, f] = phi[f, r]
