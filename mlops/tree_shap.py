"""Path-dependent TreeSHAP of one tree, vectorised over rows (Lundberg et al., 2018).

A tree is its node arrays (children, split feature, leaf values, cover) and, per split,
where each row goes (``go_left``), so any split rule (thresholds, category sets, missing
values) is decided by the caller: ``explain`` builds them from HistGradientBoosting's and
scikit-learn's fitted trees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

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

    def recurse(
        node: int,
        feats: list[int],
        zs: list[float],
        os: list[np.ndarray],
        ws: list[np.ndarray],
        pz: float,
        po: np.ndarray,
        pf: int,
    ) -> None:
        feats, zs, os, ws = _extend(feats, zs, os, ws, pz, po, pf, n)
        ud = len(feats) - 1
        if tree.left[node] < 0:
            for i in range(1, ud + 1):
                total = _unwound_sum(ws, zs[i], os[i], ud)
                phi[:, feats[i]] += total * (os[i] - zs[i]) * tree.value[node]
            return
        f = int(tree.feature[node])
        iz, io = 1.0, ones
        if f in feats[1:]:
            k = feats.index(f, 1)
            iz, io = zs[k], os[k]
            feats, zs, os, ws = _unwind(feats, zs, os, ws, k, ud)
        gl = tree.go_left[node]
        lc, rc = int(tree.left[node]), int(tree.right[node])
        cover = float(tree.cover[node])
        recurse(lc, feats, zs, os, ws, iz * tree.cover[lc] / cover, io * gl, f)
        recurse(rc, feats, zs, os, ws, iz * tree.cover[rc] / cover, io * ~gl, f)

    with np.errstate(divide="ignore", invalid="ignore"):
        recurse(0, [], [], [], [], 1.0, ones, -1)
    leaves = tree.left < 0
    expected = float((tree.cover[leaves] * tree.value[leaves]).sum() / tree.cover[0])
    return phi, expected


def _extend(
    feats: list[int],
    zs: list[float],
    os: list[np.ndarray],
    ws: list[np.ndarray],
    pz: float,
    po: np.ndarray,
    pf: int,
    n: int,
) -> tuple[list[int], list[float], list[np.ndarray], list[np.ndarray]]:
    import numpy as np

    ud = len(feats)
    feats, zs, os = [*feats, pf], [*zs, pz], [*os, po]
    ws = [*ws, np.ones(n) if ud == 0 else np.zeros(n)]
    for i in range(ud - 1, -1, -1):
        ws[i + 1] = ws[i + 1] + po * ws[i] * ((i + 1) / (ud + 1))
        ws[i] = pz * ws[i] * ((ud - i) / (ud + 1))
    return feats, zs, os, ws


def _unwind(
    feats: list[int],
    zs: list[float],
    os: list[np.ndarray],
    ws: list[np.ndarray],
    k: int,
    ud: int,
) -> tuple[list[int], list[float], list[np.ndarray], list[np.ndarray]]:
    import numpy as np

    o, z = os[k] > 0, zs[k]
    nop = ws[ud]
    ws = list(ws)
    for i in range(ud - 1, -1, -1):
        w1 = nop * ((ud + 1) / (i + 1))
        w0 = ws[i] * ((ud + 1) / (z * (ud - i))) if z else np.zeros_like(nop)
        nop = ws[i] - w1 * (z * (ud - i) / (ud + 1))
        ws[i] = np.where(o, w1, w0)
    return (
        feats[:k] + feats[k + 1 :],
        zs[:k] + zs[k + 1 :],
        os[:k] + os[k + 1 :],
        ws[:ud],
    )


def _unwound_sum(ws: list[np.ndarray], z: float, o: np.ndarray, ud: int) -> np.ndarray:
    import numpy as np

    hot = o > 0
    nop = ws[ud]
    total = np.zeros_like(nop)
    for i in range(ud - 1, -1, -1):
        w1 = nop * ((ud + 1) / (i + 1))
        w0 = ws[i] / z / ((ud - i) / (ud + 1)) if z else np.zeros_like(nop)
        total += np.where(hot, w1, w0)
        nop = ws[i] - w1 * (z * (ud - i) / (ud + 1))
    return total
