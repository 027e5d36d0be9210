""""Natural signals" in R^d: a power-law spectrum over DCT frequencies with zero-variance high frequencies.

Spec ``../shared/specs/sgd_vs_adaptive.md`` Sec. 2.1 (the paper's 3-D linear problem) and S2 (its d-dimensional
generalisation). Axes: ``samples`` (n), ``position`` (i, the spatial / pixel basis) and ``frequency`` (k).

Model. With ``C`` the orthonormal d x d DCT-II matrix (:func:`fa_jax.frequency.dct_matrix`, columns = basis vectors):

    xt_k ~ N(0, st_k^2) independent,   x = C xt   (spatial),   y = <wt*, xt> = <w*, x>,  w* = C wt*   (no label noise)

    st_k = sigma0 * (k + 1)^(-alpha)   for the d - n_irr lowest frequencies,   st_k = 0 for the top n_irr,
    n_irr = round(frac_irrelevant * d),
    wt*_k = w_scale * (k + 1)^alpha  ("equal_power": every relevant frequency carries the label variance
            (sigma0 w_scale)^2)  or  wt*_k = w_scale ("flat");   wt*_k = 0 on irrelevant frequencies.

With d = 3, alpha = 1, sigma0 = 0.1, frac_irrelevant = 1/3, w_scale = 5 this is exactly the paper's problem:
st = (0.1, 0.05, 0), wt* = (5, 10, 0) (:meth:`NaturalSignal.paper_3d`; the constants ``PAPER_*`` below).

Image-like K-class data (:class:`ImageSignal`, the deep-network half, spec Sec. 2.2 / S6): N x N single-channel
images whose 2-D DCT coefficients (``dct2``, Xt = C.T X C) follow a radial power law with the top fraction of
frequencies exactly zero, for both the class means and the within-class noise:

    st_ij = sigma0 (1 + r_ij)^(-alpha),  r_ij = sqrt(i^2 + j^2)   on relevant (i, j);  st_ij = 0 on irrelevant,
    irrelevant = the round(frac_irrelevant N^2) coefficients of largest radius (ties: larger flat index i N + j),
    mut_c = separation st * z_c / sqrt(n_rel),  z_c ~ N(0, I) per class c (the class means),
    X = idct2(mut_c + st * z),  z ~ N(0, I)  for a sample of class c  (labels balanced, c = sample index mod K).

In whitened DCT coordinates two class means are ~ separation * sqrt(2) apart (``separation`` sets the Bayes error);
the irrelevant frequencies carry neither signal nor noise, so a gradient step of SGD never changes a first-layer
weight along them, while a per-pixel adaptive step can.

Precision: in float32 the round-off of ``C xt`` leaks ~1e-8 variance into the irrelevant frequencies; run the
linear problem in float64 (the sampler follows ``jax_enable_x64`` unless ``dtype`` is given).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..config import require, traced
from ..frequency import dct_matrix

__all__ = [
    "PAPER_BATCH",
    "PAPER_EPS_ADV",
    "PAPER_EVAL_BATCH",
    "PAPER_LR",
    "PAPER_SIGMA_TILDE",
    "PAPER_STEPS",
    "PAPER_W0_TILDE",
    "PAPER_W_STAR_TILDE",
    "ImageSignal",
    "NaturalSignal",
    "basis",
    "image_class_means_tilde",
    "image_relevant_mask",
    "image_spectrum",
    "n_irrelevant",
    "paper_w0",
    "population_gradient",
    "population_std_risk",
    "relevant_mask",
    "sample",
    "sample_images",
    "sample_tilde",
    "spectrum",
    "target",
    "target_tilde",
]

# The paper's 3-D problem (spec Sec. 2.1) [code: averyma/freq-robust notebook/train_linear_model.ipynb].
PAPER_SIGMA_TILDE = (0.1, 0.05, 0.0)  # st_k per DCT frequency; k = 2 (highest) is irrelevant
PAPER_W_STAR_TILDE = (5.0, 10.0, 0.0)  # wt*
PAPER_W0_TILDE = (0.01, -0.01, 0.02)  # wt(0); w(0) = C wt(0)
PAPER_LR = 0.01
PAPER_STEPS = 200_001  # iterations (the notebook's range)
PAPER_BATCH = 5000  # fresh samples per step
PAPER_EVAL_BATCH = 100  # fresh samples for the logged loss
PAPER_EPS_ADV = math.sqrt(2.0)  # l2 budget of the plotted adversarial risk

TARGETS = ("equal_power", "flat")


@dataclasses.dataclass(frozen=True)
class NaturalSignal:
    """Config of the natural-signal regression data (see the module docstring for the equations).

    ``d`` and ``target`` are static; the spectrum and target numbers are traced (one program for a sweep over
    ``frac_irrelevant``, ``alpha``, ...).
    """

    d: int = 64
    alpha: float = traced(1.0)  # power-law exponent of st_k = sigma0 (k+1)^-alpha
    sigma0: float = traced(0.1)  # st_0 (DC standard deviation)
    frac_irrelevant: float = traced(0.25)  # fraction of top frequencies with zero variance, in [0, 1)
    w_scale: float = traced(5.0)  # wt*_0
    target: str = "equal_power"  # "equal_power": wt*_k = w_scale (k+1)^alpha; "flat": wt*_k = w_scale

    @classmethod
    def paper_3d(cls) -> NaturalSignal:
        """The paper's 3-D problem: st = (0.1, 0.05, 0), wt* = (5, 10, 0)."""
        return cls(d=3, alpha=1.0, sigma0=0.1, frac_irrelevant=1.0 / 3.0, w_scale=5.0, target="equal_power")

    def validate(self) -> NaturalSignal:
        require(isinstance(self.d, int) and self.d >= 1, "data.d", "an integer >= 1", self.d)
        require(_finite(self.alpha) and float(self.alpha) >= 0, "data.alpha", "a finite number >= 0", self.alpha)
        require(_finite(self.sigma0) and float(self.sigma0) > 0, "data.sigma0", "a finite number > 0", self.sigma0)
        p = self.frac_irrelevant
        require(_finite(p) and 0.0 <= float(p) < 1.0, "data.frac_irrelevant", "a fraction in [0, 1)", p)
        require(round(float(p) * self.d) <= self.d - 1, "data.frac_irrelevant",
                f"a fraction leaving >= 1 relevant frequency: round(p*d) <= d-1 = {self.d - 1}", p)
        require(_finite(self.w_scale), "data.w_scale", "a finite number", self.w_scale)
        require(self.target in TARGETS, "data.target", f"one of {TARGETS}", self.target)
        return self


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _dtype(dtype):
    return dtype or jnp.result_type(float)


def basis(d: int) -> np.ndarray:
    """``C (position, frequency)``: the orthonormal DCT-II matrix, float64 numpy (x = C xt, xt = C.T x)."""
    return dct_matrix(d)


def n_irrelevant(cfg: NaturalSignal):
    """n_irr = round(frac_irrelevant * d) (half to even); traced when the fraction is."""
    return jnp.round(jnp.asarray(cfg.frac_irrelevant) * cfg.d)


def relevant_mask(cfg: NaturalSignal):
    """``(frequency,)`` bool: k < d - n_irr (non-zero variance)."""
    return jnp.arange(cfg.d) < cfg.d - n_irrelevant(cfg)


def spectrum(cfg: NaturalSignal, dtype=None):
    """``(frequency,)`` standard deviations st_k = sigma0 (k+1)^-alpha on relevant k, exactly 0 otherwise."""
    dt = _dtype(dtype)
    k1 = jnp.arange(1, cfg.d + 1, dtype=dt)
    s = jnp.asarray(cfg.sigma0, dt) * k1 ** (-jnp.asarray(cfg.alpha, dt))
    return jnp.where(relevant_mask(cfg), s, jnp.zeros((), dt))


def target_tilde(cfg: NaturalSignal, dtype=None):
    """``(frequency,)`` wt*: w_scale (k+1)^alpha ("equal_power") or w_scale ("flat") on relevant k, 0 otherwise."""
    dt = _dtype(dtype)
    if cfg.target == "flat":
        w = jnp.full((cfg.d,), jnp.asarray(cfg.w_scale, dt))
    else:
        w = jnp.asarray(cfg.w_scale, dt) * jnp.arange(1, cfg.d + 1, dtype=dt) ** jnp.asarray(cfg.alpha, dt)
    return jnp.where(relevant_mask(cfg), w, jnp.zeros((), dt))


def _c(d, dt):
    return jnp.asarray(basis(d), dt)


def target(cfg: NaturalSignal, dtype=None):
    """``(position,)`` spatial target w* = C wt*."""
    dt = _dtype(dtype)
    return jnp.matmul(_c(cfg.d, dt), target_tilde(cfg, dt), precision=jax.lax.Precision.HIGHEST)


def paper_w0(dtype=None):
    """``(position,)`` the paper's spatial init w(0) = C wt(0), wt(0) = (0.01, -0.01, 0.02)."""
    dt = _dtype(dtype)
    return jnp.matmul(_c(3, dt), jnp.asarray(PAPER_W0_TILDE, dt), precision=jax.lax.Precision.HIGHEST)


def sample_tilde(key, cfg: NaturalSignal, n: int, dtype=None):
    """Draw ``(xt (samples, frequency), y (samples,))``: xt = st * z, z ~ N(0, I_d), y = <wt*, xt>.

    Irrelevant frequencies of ``xt`` are exactly 0. Pure in ``key``: draw a fresh batch per step with
    ``jax.random.fold_in(run_key, t)``.
    """
    dt = _dtype(dtype)
    z = jax.random.normal(key, (n, cfg.d), dt)
    xt = z * spectrum(cfg, dt)
    y = jnp.matmul(xt, target_tilde(cfg, dt), precision=jax.lax.Precision.HIGHEST)
    return xt, y


def sample(key, cfg: NaturalSignal, n: int, dtype=None):
    """Draw ``(x (samples, position), y (samples,))`` with x = C xt per sample (``x = xt @ C.T``).

    Same ``key`` -> the same batch as :func:`sample_tilde`, mapped to the spatial basis.
    """
    dt = _dtype(dtype)
    xt, y = sample_tilde(key, cfg, n, dt)
    x = jnp.matmul(xt, _c(cfg.d, dt).T, precision=jax.lax.Precision.HIGHEST)
    return x, y


def population_gradient(w, cfg: NaturalSignal):
    """Exact gradient of L(w) = 1/2 E[(<w, x> - y)^2] in the spatial basis: C diag(st^2) (C.T w - wt*).

    ``w``: ``(..., position)``; same shape out (the spec's ``exact=True`` option).
    """
    w = jnp.asarray(w)
    c = _c(cfg.d, w.dtype)
    hi = jax.lax.Precision.HIGHEST
    e = jnp.matmul(w, c, precision=hi) - target_tilde(cfg, w.dtype)  # (..., frequency): et = C.T w - wt*
    return jnp.matmul(e * spectrum(cfg, w.dtype) ** 2, c.T, precision=hi)


def population_std_risk(w, cfg: NaturalSignal):
    """Standard risk R_s(w) = 1/2 sum_k st_k^2 et_k^2, et = C.T w - wt*; ``w (..., position)`` -> ``(...)``."""
    w = jnp.asarray(w)
    e = jnp.matmul(w, _c(cfg.d, w.dtype), precision=jax.lax.Precision.HIGHEST) - target_tilde(cfg, w.dtype)
    return 0.5 * jnp.sum((spectrum(cfg, w.dtype) * e) ** 2, axis=-1)


# ----------------------------------------------------------------------------- image-like K-class data
@dataclasses.dataclass(frozen=True)
class ImageSignal:
    """Config of the image-like K-class data (module docstring). ``size`` and ``n_classes`` are static."""

    size: int = 8  # N: images are N x N x 1
    n_classes: int = 4
    alpha: float = traced(1.0)  # radial power law st_ij = sigma0 (1 + r_ij)^-alpha
    sigma0: float = traced(1.0)
    frac_irrelevant: float = traced(0.5)  # fraction of highest-radius DCT coefficients with zero variance
    separation: float = traced(3.0)  # class-mean distance scale in whitened DCT coordinates

    def validate(self) -> ImageSignal:
        require(isinstance(self.size, int) and self.size >= 2, "data.size", "an integer >= 2", self.size)
        require(isinstance(self.n_classes, int) and self.n_classes >= 2, "data.n_classes", "an integer >= 2",
                self.n_classes)
        require(_finite(self.alpha) and float(self.alpha) >= 0, "data.alpha", "a finite number >= 0", self.alpha)
        require(_finite(self.sigma0) and float(self.sigma0) > 0, "data.sigma0", "a finite number > 0", self.sigma0)
        p = self.frac_irrelevant
        n2 = self.size * self.size
        require(_finite(p) and 0.0 <= float(p) < 1.0 and round(float(p) * n2) <= n2 - 1, "data.frac_irrelevant",
                f"a fraction in [0, 1) leaving >= 1 relevant coefficient (round(p N^2) <= {n2 - 1})", p)
        require(_finite(self.separation) and float(self.separation) >= 0, "data.separation", "a finite number >= 0",
                self.separation)
        return self


def _radial_rank(n: int) -> np.ndarray:
    """``(H, W)`` int rank of each DCT coefficient by radius (0 = DC; ties broken by the flat index)."""
    from ..frequency import radius_grid

    order = np.argsort(radius_grid(n).ravel(), kind="stable")
    rank = np.empty(n * n, np.int32)
    rank[order] = np.arange(n * n, dtype=np.int32)
    return rank.reshape(n, n)


def image_relevant_mask(cfg: ImageSignal):
    """``(H, W)`` bool: the N^2 - round(frac_irrelevant N^2) lowest-radius coefficients (traced fraction ok)."""
    n2 = cfg.size * cfg.size
    n_irr = jnp.round(jnp.asarray(cfg.frac_irrelevant) * n2)
    return jnp.asarray(_radial_rank(cfg.size)) < n2 - n_irr


def image_spectrum(cfg: ImageSignal, dtype=None):
    """``(H, W)`` standard deviations st_ij = sigma0 (1 + r_ij)^-alpha on relevant coefficients, exactly 0 else."""
    from ..frequency import radius_grid

    dt = _dtype(dtype)
    r = jnp.asarray(radius_grid(cfg.size), dt)
    s = jnp.asarray(cfg.sigma0, dt) * (1.0 + r) ** (-jnp.asarray(cfg.alpha, dt))
    return jnp.where(image_relevant_mask(cfg), s, jnp.zeros((), dt))


def image_class_means_tilde(key, cfg: ImageSignal, dtype=None, z=None):
    """``(classes, H, W)`` class means in DCT coordinates: separation st * z_c / sqrt(n_rel), z_c ~ N(0, I) drawn
    from ``key`` (or the given ``z (classes, H, W)``)."""
    dt = _dtype(dtype)
    st = image_spectrum(cfg, dt)
    n_rel = jnp.sum(image_relevant_mask(cfg)).astype(dt)
    if z is None:
        z = jax.random.normal(key, (cfg.n_classes, cfg.size, cfg.size), dt)
    return jnp.asarray(cfg.separation, dt) * st * jnp.asarray(z, dt) / jnp.sqrt(n_rel)


def sample_images(key, cfg: ImageSignal, n: int, means_tilde, dtype=None, z=None):
    """Draw ``(x (samples, H, W, 1) spatial, labels (samples,) int32)``; label of sample i is i mod K.

    ``means_tilde (classes, H, W)`` from :func:`image_class_means_tilde` (draw it once per data seed, then train
    and test sets from different keys share it). x = idct2(mut_label + st * z), z ~ N(0, I) drawn from ``key``,
    or the given standard normals ``z (samples, H, W)`` (then ``key`` is unused: one draw can serve several sets).
    """
    from ..frequency import idct2

    dt = _dtype(dtype)
    labels = jnp.arange(n, dtype=jnp.int32) % cfg.n_classes
    if z is None:
        z = jax.random.normal(key, (n, cfg.size, cfg.size), dt)
    xt = jnp.asarray(means_tilde, dt)[labels] + image_spectrum(cfg, dt) * jnp.asarray(z, dt)
    return idct2(xt, "HW")[..., None], labels
