"""The multi-cluster distribution D({mu_j}, J+, J-) of arXiv 2410.10322 (Def. 3.1).

k pairwise-orthogonal centres mu_j in R^d with ||mu_j|| = sqrt(d) (QR of a d x k Gaussian, columns scaled by
sqrt(d)); clusters 0..n_pos-1 form J+ and the rest J-. A sample is j ~ Unif([k]), y = +1 iff j in J+,
x = mu_j + sigma * xi with xi ~ N(0, I_d). The cluster index j is kept as the fine-grained label; with g
super-classes (``groups``) the fine label is j // (k/g), each super-class lying inside one binary class.

Cluster buckets. The arrays have a static number of cluster slots, ``bucket`` (K >= k; default k): the cluster
count k and the super-class count g are traced numbers (:meth:`ClusterData.traced_now`), so runs of different k
(or g) in one bucket share one compiled program. Slots j >= k are padding: sign 0 (in neither J+ nor J-), never
sampled, masked out of every metric (``live``). Column j of the Gaussian is drawn from ``fold_in(key, j)`` and QR's
first k columns depend only on the first k columns of its input, so a padded run's centres, samples and labels
equal the unpadded run's (to float rounding: the QR of a wider matrix reassociates).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ..config import param, require, traced
from ..linalg import qr


@dataclasses.dataclass(frozen=True)
class ClusterData:
    d: int = 3072
    k: int = 10  # clusters (traced: see traced_now; the static shape is ``bucket``)
    n_pos: int = traced(5, follows="k // 2")  # |J+|; the split is a traced +/-1 vector over clusters
    n_train: int = 1000
    n_test: int = 1000
    sigma: float = traced(1.0)
    groups: int | None = None  # g super-classes for fine-grained labels (None: g = k); traced like k
    bucket: int | None = None  # static cluster slots K >= k (None: k; validate() pins it)

    def traced_now(self) -> dict:
        """k and g are traced numbers once the bucket is set (``validate()`` sets it): runs of one bucket share a
        program (fa_jax.config._roles). Without a bucket (an unvalidated config) k is the static shape."""
        if self.bucket is None:
            return {}
        return {"k": self.k, "groups": self.k if self.groups is None else self.groups}

    @property
    def padded(self) -> int:
        """K: the static number of cluster slots (and of a multi-class net's outputs)."""
        return int(self.k if self.bucket is None else self.bucket)

    @property
    def n_classes(self) -> int:
        """Static number of a multi-class net's outputs: one per cluster slot (outputs q >= :attr:`classes` are
        padding, masked by :func:`class_live`)."""
        return self.padded

    @property
    def classes(self):
        """The number of fine-grained classes g (k without super-classes); a traced number inside a program."""
        return self.k if self.groups is None else self.groups

    def validate(self) -> ClusterData:
        require(isinstance(self.d, int) and self.d >= 1, "data.d", "an integer >= 1", self.d)
        require(isinstance(self.k, int) and self.k >= 2, "data.k", "an integer >= 2", self.k)
        require(self.k <= self.d, "data.k", f"k <= d = {self.d} (orthogonal centres need k <= d)", self.k)
        require(1 <= int(self.n_pos) <= self.k - 1, "data.n_pos",
                f"1 <= n_pos <= k-1 = {self.k - 1} (J+ and J- must both be non-empty)", self.n_pos)
        require(self.n_train >= 1, "data.n_train", "an integer >= 1", self.n_train)
        require(self.n_test >= 1, "data.n_test", "an integer >= 1", self.n_test)
        require(math.isfinite(float(self.sigma)) and float(self.sigma) >= 0, "data.sigma",
                "a finite number >= 0", self.sigma)
        if self.groups is not None:
            g = self.groups
            require(isinstance(g, int) and 2 <= g <= self.k and self.k % g == 0, "data.groups",
                    f"a divisor g of k = {self.k} with 2 <= g <= k", g)
            s = self.k // g
            require(int(self.n_pos) % s == 0, "data.groups",
                    f"g such that k/g divides n_pos = {self.n_pos} (each super-class inside one binary class)", g)
        if self.bucket is not None:
            require(isinstance(self.bucket, int) and not isinstance(self.bucket, bool)
                    and self.k <= self.bucket <= self.d, "data.bucket",
                    f"an integer with k = {self.k} <= bucket <= d = {self.d}", self.bucket)
        # The bucket is the static shape; pin it so a traced k never decides a shape.
        return self if self.bucket is not None else dataclasses.replace(self, bucket=self.k)


def make_centres(key: jax.Array, d: int, k: int, dtype=None) -> jax.Array:
    """Centres ``(k, d)``: orthonormal columns of QR(G), G ~ N(0,1)^{d x k}, scaled by sqrt(d).

    Column j of G is drawn from ``fold_in(key, j)``: the first k' <= k centres do not depend on k (a cluster
    bucket pads k without changing them). Computed in float64 when x64 is enabled (then cast to ``dtype``), else
    float32.
    """
    work = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
    g = jax.vmap(lambda j: jax.random.normal(jax.random.fold_in(key, j), (d,), dtype=work))(jnp.arange(k)).T
    q, r = qr(g)
    # Fix the sign ambiguity of QR so the centres are a deterministic function of G.
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    mu = (q * jnp.sqrt(jnp.asarray(d, work))).T
    return mu.astype(dtype or jnp.float32)


def cluster_live(slots: int, k) -> jax.Array:
    """``(slots,)`` True for the k real clusters, False for padding slots (k may be traced)."""
    return jnp.arange(slots) < k


def cluster_signs(slots: int, n_pos, k=None) -> jax.Array:
    """``(slots,)`` label of each cluster: +1 for the first n_pos (J+), -1 for the rest of the k real clusters
    (J-), 0 for padding slots j >= k (k: all slots real). n_pos and k may be traced."""
    s = jnp.where(jnp.arange(slots) < n_pos, 1.0, -1.0)
    return s if k is None else jnp.where(cluster_live(slots, k), s, 0.0)


def superclass_of(slots: int, groups, k=None) -> jax.Array:
    """``(slots,)`` super-class index of each cluster: contiguous blocks of k/g clusters (groups None: g = k, each
    cluster its own class; k None: ``slots``). groups and k may be traced; padding slots get indices >= g."""
    k = slots if k is None else k
    s = 1 if groups is None else k // groups
    return jnp.arange(slots) // s


def sample_clusters(key, centres, signs, n: int, sigma, k=None):
    """Draw n samples: ``x (samples, d)``, ``y (samples,)`` in {+1,-1}, ``cluster (samples,)`` int; the cluster is
    uniform over the first k slots of ``centres (slots, d)`` (k may be traced; None: every slot)."""
    slots, d = centres.shape
    kj, kx = jax.random.split(key)
    j = jax.random.randint(kj, (n,), 0, slots if k is None else k)
    xi = jax.random.normal(kx, (n, d), dtype=centres.dtype)
    x = centres[j] + sigma * xi
    return {"x": x, "y": signs[j].astype(centres.dtype), "cluster": j}


def make_cluster_data(key: jax.Array, cfg: ClusterData) -> dict:
    """Centres, split, and independent train/test draws; everything a pure function of ``key``.

    Returns ``{"centres": (slots,d), "signs": (slots,), "live": (slots,), "superclass": (slots,), "train": {...},
    "test": {...}}`` (slots = ``cfg.padded``); each split holds ``x (samples,d)``, ``y (samples,)``,
    ``cluster (samples,)``, ``label (samples,)`` (the fine-grained/super-class label).
    """
    kc, ktr, kte = jax.random.split(key, 3)
    slots = cfg.padded
    centres = make_centres(kc, cfg.d, slots)
    signs = cluster_signs(slots, cfg.n_pos, cfg.k)
    sup = superclass_of(slots, cfg.classes, cfg.k)
    out = {"centres": centres, "signs": signs, "live": cluster_live(slots, cfg.k), "superclass": sup}
    for name, kk, n in (("train", ktr, cfg.n_train), ("test", kte, cfg.n_test)):
        s = sample_clusters(kk, centres, signs, n, cfg.sigma, cfg.k)
        s["label"] = sup[s["cluster"]]
        out[name] = s
    return out
