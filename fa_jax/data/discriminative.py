"""Synthetic discriminative data for margin studies (spec ``hold_me_tight.md`` Sec. 2.4, D4, D5).

R^D (D = side^2 * channels, samples are images ``(side, side, channels)`` flattened in (H, W, C) order) is split
into orthonormal blocks: S (dim s, discriminative), N (dim n_noise, noisy and non-discriminative), E (the rest,
zero variance). With balanced labels y in {0, 1} and s_y = 2 y - 1 in {-1, +1}:

    x = (eps/2) s_y u  +  sigma P_N xi  +  (eps2/2) s_y w  +  sigma_w zeta w,     xi ~ N(0, I_D), zeta ~ N(0, 1)

u = S 1 / sqrt(s) (a unit vector of S); w = the last direction of E (the "tiny feature", noise-free when
sigma_w = 0). The Bayes boundary (eps2 = sigma_w = 0) is the hyperplane u.x = 0: margin exactly eps/2 along u and
+inf along any subspace orthogonal to u (D4).

Bases (``basis``): ``"dct"`` (default): the orthonormal 2-D DCT basis images of :func:`fa_jax.subspaces.
dct_basis_images`, ordered by frequency radius sqrt(k1^2 + k2^2) (ties row-major, channels innermost): S takes the
lowest s frequencies, N the next n_noise, E the highest ones (an MNIST-like spectrum: empty high frequencies, so DCT
block margins rise along the diagonal). ``"pixel"``: the standard basis in flattened order.

Kinds (``kind``, static):
* ``"blocks"`` (default): the N/E block generator above (spec 2.4 "synthetic generator"; an fa-jax extension of the
  paper's setting: E is an empty, zero-variance block).
* ``"nads"``: the Neural-Anisotropy-Directions generator (spec 2.4; official ``LTS4/neural-anisotropy-directions``
  ``directional_bias.py``, ``DirectionalLinearDataset``): x = +-(eps/2) v + (I - v v^T) n, n ~ N(0, sigma^2 I_D),
  D = 1024 (32 x 32), eps = 1, sigma = 3 there. Here N is everything but u and w (``n_noise`` is set to D - s - 1 by
  :meth:`Discriminative.validate`), E = {w}, E \\ {w} is empty, so with ``sigma_w = sigma`` and ``eps2 = 0`` the
  covariance sigma^2 P_N + sigma_w^2 w w^T = sigma^2 (I - u u^T) is exactly the NADs one (v = u; the official code
  gives label 0 the + sign, here label 1: a relabelling). ``sigma_w < sigma`` / ``eps2 > 0`` turn w into the
  tiny-feature direction of D5 inside the NADs data (``sigma_w = 0``: w noise-free).

Shape fields (side, channels, s, n_noise, n_train, n_test, basis) are static; eps, sigma, eps2, sigma_w and the seed
are traced (data are drawn inside the compiled program).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..config import param, require, traced
from ..subspaces import dct_basis_images

__all__ = ["BASES", "KINDS", "Discriminative", "directions", "sample"]

BASES = ("dct", "pixel")
KINDS = ("blocks", "nads")


@dataclasses.dataclass(frozen=True)
class Discriminative:
    side: int = 16
    channels: int = 1
    s: int = 1
    n_noise: int = param(128, follows="side * side * channels // 2")  # noisy directions |N| (blocks): half of D
    basis: str = "dct"
    n_train: int = 10_000
    n_test: int = 300
    eps: float = traced(1.0)
    sigma: float = traced(1.0)
    eps2: float = traced(0.0)  # tiny feature strength along w
    sigma_w: float = traced(0.0)  # noise along w
    seed: int = traced(0)
    kind: str = "blocks"  # "blocks" (N/E blocks) or "nads" (module docstring)

    @property
    def dim(self) -> int:
        return self.side * self.side * self.channels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.side, self.side, self.channels)

    def validate(self) -> Discriminative:
        require(isinstance(self.side, int) and self.side >= 2, "data.side", "an integer >= 2", self.side)
        require(isinstance(self.channels, int) and self.channels >= 1, "data.channels", "an integer >= 1",
                self.channels)
        require(isinstance(self.s, int) and self.s >= 1, "data.s", "an integer >= 1", self.s)
        require(self.kind in KINDS, "data.kind", f"one of {KINDS}", self.kind)
        if self.kind == "nads":  # N = all of u-perp but w (module docstring)
            require(self.dim - self.s - 1 >= 1, "data.side", "large enough for u, w and a noisy direction", self.side)
            self = dataclasses.replace(self, n_noise=self.dim - self.s - 1)
        nmax = self.dim - self.s - (1 if self.kind == "nads" else 2)
        require(isinstance(self.n_noise, int) and 0 <= self.n_noise <= nmax, "data.n_noise",
                f"an integer in [0, D - s - 2 = {nmax}] (E needs w and one more direction)", self.n_noise)
        require(self.basis in BASES, "data.basis", f"one of {BASES}", self.basis)
        for f in ("n_train", "n_test"):
            v = getattr(self, f)
            require(isinstance(v, int) and v >= 2, f"data.{f}", "an integer >= 2", v)
        for f in ("eps", "sigma", "eps2", "sigma_w"):
            v = float(getattr(self, f))
            require(math.isfinite(v) and v >= 0, f"data.{f}", "a finite number >= 0", v)
        return self


@functools.lru_cache(maxsize=16)
def _directions(side: int, channels: int, s: int, n_noise: int, basis: str) -> dict:
    d = side * side * channels
    if basis == "dct":
        imgs = dct_basis_images((side, side, channels)).reshape(d, d)  # columns in (k1, k2, c) order
        k = np.arange(side)
        rad = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
        rad = np.repeat(rad.reshape(-1), channels)
        cols = imgs[:, np.argsort(rad, kind="stable")]
    else:
        cols = np.eye(d)
    out = {"S": cols[:, :s], "N": cols[:, s:s + n_noise], "E": cols[:, s + n_noise:]}
    out["u"] = out["S"].sum(1) / math.sqrt(s)
    out["w"] = out["E"][:, -1]
    out["E_rest"] = out["E"][:, :-1]  # E without w
    for v in out.values():
        v.setflags(write=False)
    return out


def directions(cfg: Discriminative) -> dict[str, np.ndarray]:
    """Float64 numpy: ``S (D, s)``, ``N (D, n_noise)``, ``E (D, D - s - n_noise)``, ``E_rest`` (E without w),
    ``u (D,)``, ``w (D,)``; columns orthonormal, flattened (H, W, C) order."""
    n_noise = cfg.dim - cfg.s - 1 if getattr(cfg, "kind", "blocks") == "nads" else cfg.n_noise
    return _directions(cfg.side, cfg.channels, cfg.s, n_noise, cfg.basis)


def sample(key, cfg: Discriminative, n: int, dtype=None):
    """``(x (n, side, side, channels), y (n,) int32)``: balanced labels (n // 2 of class 1 after a random
    permutation), the module docstring's generator. ``cfg``'s traced fields may be tracers."""
    dtype = dtype or jnp.result_type(float)
    dr = directions(cfg)
    k_y, k_n, k_w = jax.random.split(key, 3)
    y = jax.random.permutation(k_y, (jnp.arange(n) < n // 2).astype(jnp.int32))
    sy = (2 * y - 1).astype(dtype)
    u = jnp.asarray(dr["u"], dtype)
    w = jnp.asarray(dr["w"], dtype)
    nb = jnp.asarray(dr["N"], dtype)
    # P_N xi for xi ~ N(0, I_D) equals N z with z ~ N(0, I_{n_noise}) in distribution (N orthonormal)
    z = jax.random.normal(k_n, (n, nb.shape[1]), dtype)
    x = (cfg.eps / 2) * sy[:, None] * u + cfg.sigma * (z @ nb.T)
    x = x + ((cfg.eps2 / 2) * sy + cfg.sigma_w * jax.random.normal(k_w, (n,), dtype))[:, None] * w
    return x.reshape((n, *cfg.image_shape)), y
