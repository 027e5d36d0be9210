"""The multi-cluster distribution D({mu_j}, J+, J-) of arXiv 2410.10322 (Def. 3.1).

k pairwise-orthogonal centres mu_j in R^d with ||mu_j|| = sqrt(d) (QR of a d x k Gaussian, columns scaled by
sqrt(d)); clusters 0..n_pos-1 form J+ and the rest J-. A sample is j ~ Unif([k]), y = +1 iff j in J+,
x = mu_j + sigma * xi with xi ~ N(0, I_d). The cluster index j is kept as the fine-grained label; with g
super-classes (``groups``) the fine label is j // (k/g), each super-class lying inside one binary class.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ..config import require, traced
from ..linalg import qr


@dataclasses.dataclass(frozen=True)
class ClusterData:
    d: int = 3072
    k: int = 10
    n_pos: int = traced(5, follows="k // 2")  # |J+|; the split is a traced +/-1 vector over clusters
    n_train: int = 1000
    n_test: int = 1000
    sigma: float = traced(1.0)
    groups: int | None = None  # g super-classes for fine-grained labels (None: g = k)

    @property
    def n_classes(self) -> int:
        return self.k if self.groups is None else int(self.groups)

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
        return self


def make_centres(key: jax.Array, d: int, k: int, dtype=None) -> jax.Array:
    """Centres ``(k, d)``: orthonormal columns of QR(G), G ~ N(0,1)^{d x k}, scaled by sqrt(d).

    Computed in float64 when x64 is enabled (then cast to ``dtype``), else float32.
    """
    work = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
    g = jax.random.normal(key, (d, k), dtype=work)
    q, r = qr(g)
    # Fix the sign ambiguity of QR so the centres are a deterministic function of G.
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    mu = (q * jnp.sqrt(jnp.asarray(d, work))).T
    return mu.astype(dtype or jnp.float32)


def cluster_signs(k: int, n_pos) -> jax.Array:
    """``(k,)`` label of each cluster: +1 for the first n_pos (J+), -1 otherwise. n_pos may be traced."""
    return jnp.where(jnp.arange(k) < n_pos, 1.0, -1.0)


def superclass_of(k: int, groups: int | None) -> jax.Array:
    """``(k,)`` super-class index of each cluster (contiguous blocks of k/g clusters)."""
    s = 1 if groups is None else k // groups
    return jnp.arange(k) // s


def sample_clusters(key, centres, signs, n: int, sigma):
    """Draw n samples: ``x (samples, d)``, ``y (samples,)`` in {+1,-1}, ``cluster (samples,)`` int."""
    k, d = centres.shape
    kj, kx = jax.random.split(key)
    j = jax.random.randint(kj, (n,), 0, k)
    xi = jax.random.normal(kx, (n, d), dtype=centres.dtype)
    x = centres[j] + sigma * xi
    return {"x": x, "y": signs[j].astype(centres.dtype), "cluster": j}


def make_cluster_data(key: jax.Array, cfg: ClusterData) -> dict:
    """Centres, split, and independent train/test draws; everything a pure function of ``key``.

    Returns ``{"centres": (k,d), "signs": (k,), "superclass": (k,), "train": {...}, "test": {...}}``;
    each split holds ``x (samples,d)``, ``y (samples,)``, ``cluster (samples,)``, ``label (samples,)``
    (the fine-grained/super-class label).
    """
    kc, ktr, kte = jax.random.split(key, 3)
    centres = make_centres(kc, cfg.d, cfg.k)
    signs = cluster_signs(cfg.k, cfg.n_pos)
    sup = superclass_of(cfg.k, cfg.groups)
    out = {"centres": centres, "signs": signs, "superclass": sup}
    for name, kk, n in (("train", ktr, cfg.n_train), ("test", kte, cfg.n_test)):
        s = sample_clusters(kk, centres, signs, n, cfg.sigma)
        s["label"] = sup[s["cluster"]]
        out[name] = s
    return out
