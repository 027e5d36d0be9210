"""Gaussian-mixture classification data (spec ``agop_collapse.md`` 4: "Gaussian mixtures of controlled SNR").

K classes in R^d, ``n_per_class`` samples each, sorted by class (labels 0,0,..,1,1,..). Class means
mu_c = separation * r_c * q_c with q_1..q_K orthonormal (QR of a d x K Gaussian; needs K <= d) and radii
r_c = 1 + mean_spread * (2c/(K-1) - 1) (linear from 1 - spread to 1 + spread). With mean_spread = 0 the centred
means already form a simplex ETF (||mu_c - mu_c'|| = separation * sqrt(2)); mean_spread > 0 makes the class-mean
geometry non-ETF (NC2 > 0 at the input), so a method's NC2 has room to fall. ``mean_cosine`` = rho in [0, 1)
replaces the orthonormal directions q_c by unit directions u_c on a chain, u_0 = q_0, u_c = rho u_{c-1} +
sqrt(1 - rho^2) q_c, so that cos(u_c, u_c') = rho^|c - c'| (an AR(1) correlation: neighbouring classes are similar):
mu_c = separation * r_c * u_c. Why a chain and not one common cosine: equal pairwise cosines with equal radii centre
to a simplex ETF again (the common part is the global mean), so NC2 would not move; the chain keeps the centred
Gram non-ETF (population NC2 0.105 at rho = 0.7, K = 10, no spread: :func:`population_nc2`). rho = 0 (the default)
leaves the orthonormal draw bit for bit. Within-class noise x = mu_c + within_std * Q diag(sqrt(lambda)) xi,
xi ~ N(0, I_d), Q a random rotation and lambda_j proportional to (j+1)^(-cov_decay), normalised to mean 1
(cov_decay = 0: isotropic; the within-class covariance is within_std^2 Q diag(lambda) Q^T, shared by the classes).
Targets: +-1 one-hot, y = 2 e_c - 1 (the paper's encoding), ``(samples, K)``.

The population class-mean Gram is mu mu^T = separation^2 D C D, D = diag(r), C_cc' = rho^|c - c'|
(:func:`population_mean_gram`). The population NC1 tr Sigma_W / tr Sigma_B is within_std^2 d / tr Sigma_B with
tr Sigma_B = (1/K) tr(P mu mu^T P), P = I - 11^T/K the centring; for rho = 0 this is
separation^2 mean_c(r_c^2) (K-1)/K (orthonormal q_c: sum_c ||mu_c - mu_G||^2 = sum ||mu_c||^2 - K ||mu_G||^2):
:func:`population_nc1`. The population NC2 (spec 2.5) of the centred means: :func:`population_nc2`.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..config import require, traced
from ..linalg import qr_q

__all__ = ["GaussianMixture", "mean_directions", "pm_one_hot", "population_mean_gram", "population_nc1",
           "population_nc2", "sample_mixture"]


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
    k: int = 4  # classes
    d: int = 32  # dimension
    n_per_class: int = 50
    separation: float = traced(3.0)  # ||mu_c||
    within_std: float = traced(1.0)  # per-coordinate noise std (before the anisotropy profile)
    cov_decay: float = traced(0.0)  # within-class spectrum lambda_j ~ (j+1)^-cov_decay
    mean_spread: float = traced(0.0)  # class-mean radii 1 -+ mean_spread (0: ETF means)
    mean_cosine: float = traced(0.0)  # rho: cos(u_c, u_c') = rho^|c - c'| (0: orthonormal directions)
    seed: int = traced(0)

    @property
    def n(self) -> int:
        return self.k * self.n_per_class

    def validate(self) -> GaussianMixture:
        require(isinstance(self.k, int) and self.k >= 2, "data.k", "an integer >= 2", self.k)
        require(isinstance(self.d, int) and self.d >= self.k, "data.d", f"an integer >= k = {self.k}", self.d)
        require(isinstance(self.n_per_class, int) and self.n_per_class >= 2, "data.n_per_class", "an integer >= 2",
                self.n_per_class)
        for name in ("separation", "within_std"):
            v = float(getattr(self, name))
            require(math.isfinite(v) and v > 0, f"data.{name}", "a finite number > 0", v)
        require(math.isfinite(float(self.cov_decay)) and float(self.cov_decay) >= 0, "data.cov_decay",
                "a finite number >= 0", self.cov_decay)
        require(0 <= float(self.mean_spread) < 1, "data.mean_spread", "0 <= mean_spread < 1", self.mean_spread)
        require(0 <= float(self.mean_cosine) < 1, "data.mean_cosine", "0 <= mean_cosine < 1", self.mean_cosine)
        return self


def pm_one_hot(labels: jax.Array, k: int, dtype=None) -> jax.Array:
    """+-1 one-hot targets y = 2 e_c - 1, ``(samples, K)``."""
    dtype = dtype or jnp.result_type(float)
    return 2.0 * (labels[:, None] == jnp.arange(k)[None, :]).astype(dtype) - 1.0


def sample_mixture(cfg: GaussianMixture, key: jax.Array | None = None, dtype=None):
    """``(x (samples, d), labels (samples,), y (samples, K))``, class-sorted; key default PRNGKey(cfg.seed)."""
    dtype = dtype or jnp.result_type(float)
    key = jax.random.PRNGKey(cfg.seed) if key is None else key
    k_mu, k_rot, k_xi = jax.random.split(key, 3)
    q = qr_q(jax.random.normal(k_mu, (cfg.d, cfg.k), dtype))
    radii = 1.0 + cfg.mean_spread * (2.0 * jnp.arange(cfg.k, dtype=dtype) / (cfg.k - 1) - 1.0)
    mu = cfg.separation * radii[:, None] * mean_directions(q.T, cfg.mean_cosine)  # (K, d)
    rot = qr_q(jax.random.normal(k_rot, (cfg.d, cfg.d), dtype))
    lam = (jnp.arange(cfg.d, dtype=dtype) + 1.0) ** (-cfg.cov_decay)
    lam = lam / jnp.mean(lam)
    labels = jnp.repeat(jnp.arange(cfg.k), cfg.n_per_class)
    xi = jax.random.normal(k_xi, (cfg.n, cfg.d), dtype)
    x = mu[labels] + cfg.within_std * (xi * jnp.sqrt(lam)) @ rot.T
    return x, labels, pm_one_hot(labels, cfg.k, dtype)


def mean_directions(q: jax.Array, rho) -> jax.Array:
    """Unit class-mean directions ``u (K, d)`` from orthonormal rows ``q (K, d)``: u = L q with L the Cholesky
    factor of the AR(1) correlation C_cc' = rho^|c - c'| (L_cj = rho^(c-j), times sqrt(1 - rho^2) for j >= 1, j <= c;
    i.e. u_0 = q_0, u_c = rho u_{c-1} + sqrt(1 - rho^2) q_c). ``rho`` may be traced; rho = 0 returns ``q`` itself
    (selected, not multiplied: the default draw stays bit for bit)."""
    k = q.shape[0]
    i = jnp.arange(k)
    lag = (i[:, None] - i[None, :]).astype(q.dtype)
    scale = jnp.where(i == 0, 1.0, jnp.sqrt(1.0 - rho ** 2)).astype(q.dtype)
    chol = jnp.where(lag >= 0, jnp.power(rho, jnp.maximum(lag, 0.0)), 0.0) * scale[None, :]
    return jnp.where(rho == 0, q, chol @ q)


def population_mean_gram(cfg: GaussianMixture) -> np.ndarray:
    """The class means' Gram mu mu^T = separation^2 D C D ``(K, K)``, D = diag(r_c), C_cc' = rho^|c - c'|; float64."""
    r = 1.0 + float(cfg.mean_spread) * (2.0 * np.arange(cfg.k) / (cfg.k - 1) - 1.0)
    lag = np.abs(np.subtract.outer(np.arange(cfg.k), np.arange(cfg.k)))
    return float(cfg.separation) ** 2 * np.outer(r, r) * float(cfg.mean_cosine) ** lag


def _centred_gram(cfg: GaussianMixture) -> np.ndarray:
    p = np.eye(cfg.k) - 1.0 / cfg.k
    return p @ population_mean_gram(cfg) @ p


def population_nc1(cfg: GaussianMixture) -> float:
    """tr Sigma_W / tr Sigma_B of the population: within_std^2 d / tr Sigma_B, tr Sigma_B = (1/K) tr(P mu mu^T P)
    (= separation^2 mean(r_c^2) (K-1)/K for orthonormal directions, mean_cosine = 0)."""
    tr_sb = float(np.trace(_centred_gram(cfg))) / cfg.k
    return float(cfg.within_std) ** 2 * cfg.d / tr_sb


def population_nc2(cfg: GaussianMixture) -> float:
    """NC2 of the population class means (spec 2.5): mean over the K^2 entries of (G - E)^2, G the Gram of the
    normalised centred means (mu_c - mu_G)/||mu_c - mu_G||, E = K/(K-1) I - 1/(K-1) 11^T the simplex ETF's. 0 for
    orthonormal equal-radius means; float64."""
    g = _centred_gram(cfg)
    norm = np.sqrt(np.diag(g))
    e = cfg.k / (cfg.k - 1.0) * np.eye(cfg.k) - 1.0 / (cfg.k - 1.0)
    return float(np.mean((g / np.outer(norm, norm) - e) ** 2))
