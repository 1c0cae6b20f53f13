"""Path-dependent TreeSHAP of one tree, vectorised over rows (Lundberg et al., 2018).

A tree is its node arrays (children, split feature, leaf values, cover) and, per split,
where each row goes (``go_left``), so any split rule (thresholds, category sets, missing
values) is decided by the caller: ``explain`` builds them from HistGradientBoosting's and
scikit-learn's fitted trees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Tree:
    """One fitted tree as node arrays, with where each explained row goes at each split."""

    left: np.ndarray  # child ids, -1 at a leaf
    right: np.ndarray
    feature: np.ndarray
    value: np.ndarray  # leaf values (the tree's output)
    cover: np.ndarray  # training rows (or weight) through each node
    go_left: np.ndarray  # (nodes, rows) bool: where each row goes at each split


class _Path(NamedTuple):
    """The unique features on the way to a node.

    Per element: the split feature, its zero and one fractions, and the permutation weight
    (one-fractions and weights are vectors over the rows).
    """

    feats: list[int]
    zs: list[float]
    os: list[np.ndarray]
    ws: list[np.ndarray]


def shap_values(tree: Tree, n_features: int) -> tuple[np.ndarray, float]:
    """Exact path-dependent SHAP values of one tree for every row, and its expected value.

    The recursion of Lundberg et al. (2018, algorithm 2) with both children followed at
    each split: a row's one-fraction is 1 on the branch it takes and 0 on the other, so a
    path's weights are vectors over the rows.
    """
    import numpy as np

    n = tree.go_left.shape[1]
    phi = np.zeros((n, n_features))
    ones = np.ones(n)

    def recurse(node: int, path: _Path, pz: float, po: np.ndarray, pf: int) -> None:
        path = _extend(path, pz, po, pf, n)
        ud = len(path.feats) - 1
        if tree.left[node] < 0:
            for i in range(1, ud + 1):
                total = sum(_unwound(path.ws, path.zs[i], path.os[i]))
                phi[:, path.feats[i]] += total * (path.os[i] - path.zs[i]) * tree.value[node]
            return
        f = int(tree.feature[node])
        iz, io = 1.0, ones
        if f in path.feats[1:]:
            k = path.feats.index(f, 1)
            iz, io = path.zs[k], path.os[k]
            path = _unwind(path, k)
        gl = tree.go_left[node]
        lc, rc = int(tree.left[node]), int(tree.right[node])
        cover = float(tree.cover[node])
        recurse(lc, path, iz * tree.cover[lc] / cover, io * gl, f)
        recurse(rc, path, iz * tree.cover[rc] / cover, io * ~gl, f)

    with np.errstate(divide="ignore", invalid="ignore"):
        recurse(0, _Path([], [], [], []), 1.0, ones, -1)
    leaves = tree.left < 0
    expected = float((tree.cover[leaves] * tree.value[leaves]).sum() / tree.cover[0])
    return phi, expected


def _extend(path: _Path, pz: float, po: np.ndarray, pf: int, n: int) -> _Path:
    """The path one split deeper, on feature ``pf`` with fractions ``pz`` and ``po``."""
    import numpy as np

    ud = len(path.feats)
    ws = [*path.ws, np.ones(n) if ud == 0 else np.zeros(n)]
    for i in range(ud - 1, -1, -1):
        ws[i + 1] = ws[i + 1] + po * ws[i] * ((i + 1) / (ud + 1))
        ws[i] = pz * ws[i] * ((ud - i) / (ud + 1))
    return _Path([*path.feats, pf], [*path.zs, pz], [*path.os, po], ws)


def _unwound(ws: list[np.ndarray], z: float, o: np.ndarray) -> list[np.ndarray]:
    """The weights with the element of fractions ``z`` and ``o`` taken out of the path."""
    import numpy as np

    ud = len(ws) - 1
    hot = o > 0
    nop = ws[ud]
    out = list(ws[:ud])
    for i in range(ud - 1, -1, -1):
        w1 = nop * ((ud + 1) / (i + 1))
        w0 = ws[i] * ((ud + 1) / (z * (ud - i))) if z else np.zeros_like(nop)
        nop = ws[i] - w1 * (z * (ud - i) / (ud + 1))
        out[i] = np.where(hot, w1, w0)
    return out


def _unwind(path: _Path, k: int) -> _Path:
    """The path without its element ``k`` (a feature met again further down)."""
    f, zs, os = path.feats, path.zs, path.os
    ws = _unwound(path.ws, zs[k], os[k])
    return _Path(f[:k] + f[k + 1 :], zs[:k] + zs[k + 1 :], os[:k] + os[k + 1 :], ws)
