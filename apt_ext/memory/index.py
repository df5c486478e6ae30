"""ClusterIndex: an inverted-file (IVF) index over unit-norm prototypes, in numpy.

Members of each cluster are held contiguously, one row per member (one float32 [capacity, dim]
block per cluster, grown by doubling), so a route scores every member of a probed cluster with one
matrix-vector product, and reading one member's vector (the routing of candidates found by other
channels) touches one contiguous row, not ``dim`` cache lines; there is no Python loop over nodes.
Clusters come from spherical k-means (Lloyd on a sample, then one assignment pass over all
vectors); the index is a single exact cluster until it holds ``2 * cluster_size`` vectors, is
rebuilt whenever it has doubled since the last build, and a cluster that grows past four times the
build's cluster size is split in two (2-means). The build's cluster size is ``cluster_size``, or
``sqrt(n / n_probe)`` when that is larger (from about 130k vectors at the defaults 128 and 8):
a search scores every centroid and ``n_probe`` clusters, and that size balances the two (at 1M
vectors 2,828 centroids instead of 7,812, whose 12 MB scan per query no longer fits the cache).
A ring of the ``hot_window`` most recently added vectors is scanned by every search as well.
"""
from __future__ import annotations

import math
from itertools import accumulate

import numpy as np


def spherical_kmeans(x: np.ndarray, n_clusters: int, iters: int, rng: np.random.Generator,
                     sample: int | None = None) -> np.ndarray:
    """Centroids float32 [n_clusters, dim] (unit norm) of unit-norm rows ``x`` [n, dim]."""
    n = x.shape[0]
    n_clusters = max(1, min(n_clusters, n))
    train = x if sample is None or n <= sample else x[rng.choice(n, sample, replace=False)]
    cent = train[rng.choice(train.shape[0], n_clusters, replace=False)].copy()
    for _ in range(iters):
        assign = _assign(train, cent)
        sums = np.zeros_like(cent)
        np.add.at(sums, assign, train)
        counts = np.bincount(assign, minlength=n_clusters)
        empty = counts == 0
        if empty.any():  # re-seed empty clusters with random training points
            sums[empty] = train[rng.choice(train.shape[0], int(empty.sum()), replace=False)]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        cent = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
    return cent


def _assign(x: np.ndarray, cent: np.ndarray, chunk: int = 16384) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], chunk):
        out[start:start + chunk] = np.argmax(x[start:start + chunk] @ cent.T, axis=1)
    return out


class ClusterIndex:
    """Inner-product IVF index over float32 unit vectors with int64 ids.

    ``add`` upserts, ``remove`` deletes, ``search`` returns the top-k ids by cosine to the query
    among the clusters whose centroids score highest against the routing direction.
    """

    def __init__(self, dim: int, cluster_size: int = 128, n_probe: int = 24, hot_window: int = 256,
                 kmeans_iters: int = 8, seed: int = 0) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.cluster_size = cluster_size
        self.n_probe = n_probe
        self.hot_window = hot_window
        self.kmeans_iters = kmeans_iters
        self._rng = np.random.default_rng(seed)
        self._reset()
        self._hot_ids = np.full(hot_window, -1, dtype=np.int64)
        self._hot_vecs = np.zeros((hot_window, dim), dtype=np.float32)
        self._hot_pos = 0
        self.n_at_build = 0
        self.build_cluster_size = cluster_size  # members per cluster aimed at by the last build

    def _reset(self) -> None:
        self.centroids = np.zeros((0, self.dim), dtype=np.float32)
        self._sums: list[np.ndarray] = []
        self._vecs: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self._count: list[int] = []
        self._where: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, node_id: int) -> bool:
        return int(node_id) in self._where

    @property
    def n_clusters(self) -> int:
        return len(self._count)

    def vector(self, node_id: int) -> np.ndarray:
        """float32 [dim] view of the stored vector of ``node_id`` (KeyError when absent)."""
        c, s = self._where[int(node_id)]
        return self._vecs[c][s]

    def vectors(self, ids: list[int]) -> np.ndarray:
        """float32 [len(ids), dim] copies of the stored vectors of ``ids`` (KeyError when absent)."""
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        vecs, where = self._vecs, self._where
        for row, node_id in enumerate(ids):
            c, s = where[int(node_id)]
            out[row] = vecs[c][s]
        return out

    # -- mutation ---------------------------------------------------------------------------
    def _new_cluster(self, centroid: np.ndarray, capacity: int = 16) -> int:
        self.centroids = np.vstack([self.centroids, centroid[None].astype(np.float32)])
        self._sums.append(np.zeros(self.dim, dtype=np.float64))
        self._vecs.append(np.empty((capacity, self.dim), dtype=np.float32))
        self._ids.append(np.empty(capacity, dtype=np.int64))
        self._count.append(0)
        return len(self._count) - 1

    def _append(self, c: int, node_id: int, vec: np.ndarray) -> None:
        n = self._count[c]
        if n == self._vecs[c].shape[0]:
            cap = 2 * n
            grown = np.empty((cap, self.dim), dtype=np.float32)
            grown[:n] = self._vecs[c][:n]
            self._vecs[c] = grown
            ids = np.empty(cap, dtype=np.int64)
            ids[:n] = self._ids[c][:n]
            self._ids[c] = ids
        self._vecs[c][n] = vec
        self._ids[c][n] = node_id
        self._count[c] = n + 1
        self._where[node_id] = (c, n)
        self._sums[c] += vec

    def _refresh_centroid(self, c: int) -> None:
        norm = np.linalg.norm(self._sums[c])
        if norm > 1e-9:
            self.centroids[c] = self._sums[c] / norm

    def add(self, ids: np.ndarray | list[int], vecs: np.ndarray) -> None:
        """Insert or replace ``ids`` (int [n]) with unit rows ``vecs`` (float32 [n, dim])."""
        vecs = np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1, self.dim)
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if len(ids) != vecs.shape[0]:
            raise ValueError(f"ids ({len(ids)}) and vecs ({vecs.shape[0]}) differ in length")
        self.remove([i for i in ids if i in self._where])
        if self.n_clusters == 0:
            self._new_cluster(vecs[0])
        assign = _assign(vecs, self.centroids)
        for node_id, vec, c in zip(ids, vecs, assign):
            self._append(int(c), node_id, vec)
            if self.hot_window:
                self._hot_ids[self._hot_pos % self.hot_window] = node_id
                self._hot_vecs[self._hot_pos % self.hot_window] = vec
                self._hot_pos += 1
        for c in set(int(c) for c in assign):
            self._refresh_centroid(c)
        n = len(self._where)
        if n >= 2 * self.cluster_size and n >= 2 * max(self.n_at_build, 1):
            self.rebuild()
        else:
            for c in [c for c in set(int(c) for c in assign) if self._count[c] > 4 * self.build_cluster_size]:
                self._split(c)

    def remove(self, ids: list[int]) -> None:
        """Delete ``ids`` (unknown ids are ignored)."""
        for node_id in ids:
            node_id = int(node_id)
            where = self._where.pop(node_id, None)
            if where is None:
                continue
            c, s = where
            last = self._count[c] - 1
            self._sums[c] -= self._vecs[c][s]
            if s != last:
                self._vecs[c][s] = self._vecs[c][last]
                moved = int(self._ids[c][last])
                self._ids[c][s] = moved
                self._where[moved] = (c, s)
            self._count[c] = last
            self._refresh_centroid(c)
            self._hot_ids[self._hot_ids == node_id] = -1

    def _split(self, c: int) -> None:
        n = self._count[c]
        members = self._vecs[c][:n].copy()
        member_ids = self._ids[c][:n].copy()
        two = spherical_kmeans(members, 2, self.kmeans_iters, self._rng)
        if two.shape[0] < 2:
            return
        side = _assign(members, two)
        if side.min() == side.max():
            return
        for node_id in member_ids:
            del self._where[int(node_id)]
        self._count[c] = 0
        self._sums[c][:] = 0
        other = self._new_cluster(two[1], capacity=max(16, int((side == 1).sum())))
        self.centroids[c] = two[0]
        for node_id, vec, s in zip(member_ids, members, side):
            self._append(other if s else c, int(node_id), vec)
        self._refresh_centroid(c)
        self._refresh_centroid(other)

    def rebuild(self) -> None:
        """Re-cluster every vector with spherical k-means (see :meth:`build`)."""
        n = len(self._where)
        if n == 0:
            self._reset()
            return
        ids = np.concatenate([self._ids[c][:self._count[c]] for c in range(self.n_clusters)])
        vecs = np.concatenate([self._vecs[c][:self._count[c]] for c in range(self.n_clusters)])
        self.build(ids, vecs)

    def build(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Replace the contents with ``ids`` (int [n]) and unit rows ``vecs`` (float32 [n, dim]), in
        ``n / max(cluster_size, sqrt(n / n_probe))`` clusters (one below ``2 * cluster_size``)."""
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        n = vecs.shape[0]
        self._reset()
        if n == 0:
            return
        self.build_cluster_size = max(self.cluster_size, math.isqrt(n // max(1, self.n_probe)))
        n_clusters = max(1, n // self.build_cluster_size) if n >= 2 * self.cluster_size else 1
        cent = spherical_kmeans(vecs, n_clusters, self.kmeans_iters, self._rng,
                                sample=max(64 * n_clusters, 8192))
        assign = _assign(vecs, cent)
        order = np.argsort(assign, kind="stable")
        bounds = np.searchsorted(assign[order], np.arange(cent.shape[0] + 1))
        kept = []
        for c in range(cent.shape[0]):
            rows = order[bounds[c]:bounds[c + 1]]
            if rows.size == 0:
                continue
            kept.append(c)
            members = vecs[rows]
            block = np.empty((max(16, rows.size), self.dim), dtype=np.float32)
            block[:rows.size] = members
            block_ids = np.empty(block.shape[0], dtype=np.int64)
            block_ids[:rows.size] = ids[rows]
            self._vecs.append(block)
            self._ids.append(block_ids)
            self._count.append(int(rows.size))
            self._sums.append(members.sum(axis=0, dtype=np.float64))
        self.centroids = np.ascontiguousarray(cent[kept], dtype=np.float32)  # one allocation, not C vstacks
        for k in range(len(kept)):
            self._refresh_centroid(k)
        self._where = {int(i): (c, s) for c in range(self.n_clusters)
                       for s, i in enumerate(self._ids[c][:self._count[c]].tolist())}
        self.n_at_build = n

    # -- search -----------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int, direction: np.ndarray | None = None,
               n_probe: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        """Top-``k`` (ids int64 [<=k], cosines float32 [<=k], vectors scanned).

        ``query``: float32 [dim] unit vector that scores members; ``direction``: float32 [dim]
        that picks the ``n_probe`` clusters to scan (defaults to ``query``).
        """
        if not self._where or k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), 0
        query = np.asarray(query, dtype=np.float32)
        direction = query if direction is None else direction
        n_probe = self.n_probe if n_probe is None else n_probe
        if self.n_clusters <= n_probe:
            probe = list(range(self.n_clusters))
        else:
            cscore = self.centroids @ direction
            probe = np.argpartition(cscore, self.n_clusters - n_probe)[self.n_clusters - n_probe:].tolist()
        counts = [self._count[c] for c in probe]
        hot = np.flatnonzero(self._hot_ids >= 0) if self.hot_window else None
        n_hot = 0 if hot is None else hot.size
        offsets = list(accumulate(counts, initial=0))
        scanned = offsets[-1]
        total = scanned + n_hot
        sims = np.empty(total, dtype=np.float32)
        for c, n, off in zip(probe, counts, offsets):
            if n:  # one matrix-vector product per probed cluster, written in place
                np.dot(self._vecs[c][:n], query, out=sims[off:off + n])
        if n_hot:  # a full window (the usual case) is scanned in place, without a gathered copy
            sims[scanned:] = (self._hot_vecs if n_hot == self.hot_window else self._hot_vecs[hot]) @ query
        # a hot node can also sit in a probed cluster: 2k candidates hold >= k distinct ids
        take = min(2 * k if n_hot else k, total)
        top = np.argpartition(sims, total - take)[total - take:] if take < total else np.arange(total)
        top = top[np.argsort(-sims[top], kind="stable")]
        ids = np.concatenate([self._ids[c][:n] for c, n in zip(probe, counts)]
                             + ([self._hot_ids[hot]] if n_hot else []))[top]
        if n_hot:  # keep the first (best) position of each id, in rank order (<= 2k of them)
            seen: set[int] = set()
            keep = []
            for pos, node_id in enumerate(ids.tolist()):
                if node_id not in seen:
                    seen.add(node_id)
                    keep.append(pos)
            top, ids = top[keep[:k]], ids[keep[:k]]
        return ids, sims[top], total
