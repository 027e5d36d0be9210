"""Margins along subspaces: subspace-constrained DeepFool, censoring, censored medians (spec ``hold_me_tight.md``
Sec. 2.1-2.2, 6).

Margin of x along S (orthonormal columns, projector P):

    delta_S(x) = min_{r in S} ||r||_2  s.t.  argmax f(x + r) != argmax f(x)        (+inf if no such r exists)

Estimator (one sample; :func:`deepfool_subspace`): candidates = the top-K_c classes of the clean logits (c0 the
first); r_tot = 0; repeat while argmax f(x0 + (1 + o) r_tot) = c0 and fewer than ``max_iter`` iterations: at
x = x0 + r_tot, for every candidate k != c0, w_k = grad f_k(x) - grad f_c0(x), a_k = f_k(x) - f_c0(x),
l_k = |a_k| / ||P w_k||; with k* = argmin l_k the step is r = max(l_k*, floor) P w_k* / ||P w_k*||. The margin is
||(1 + o) r_tot||.

Censoring (fa-jax's rule, not the official code's): ``flipped`` is True only when the label changed. A run that
hits ``max_iter`` without a flip keeps its value as a *lower bound* (flipped False); a run where every candidate has
P w_k = 0, or whose iterate / logits become non-finite, returns +inf, flipped False. Never report a censored value as
a margin: :func:`censored_median` returns the median of the lower bounds together with the flag ``lower_bound``.

The loop is a ``lax.while_loop`` in which a finished sample is frozen (its state is no longer updated): under
``vmap`` it runs until the last lane finishes (at most ``max_iter`` iterations), and every lane's result is the
one it would get alone (tested: batched == one-sample).

Refined margins (issue 16 Sec. 1). DeepFool's answer is an *upper bound*: where the logit is flat at x0 and steep
near the boundary, the first linear step jumps far past it (measured 1.15-1.55x on adversarially trained nets).

* :func:`deepfool_refined` (+ ``_batch``, ``_bank``): after DeepFool flips the label at x0 + p (p = (1+o) r_tot),
  find the FIRST boundary crossing on the segment {x0 + t p, t in [0, 1]}: a fixed-step scan t_k = k / n_segment,
  then bisection between the last unflipped and the first flipped t until hi - lo <= rtol * lo. The margin is
  hi ||p|| (a point that is flipped: a realised perturbation inside S, so still an upper bound of delta_S, exact along
  the final direction r_tot up to rtol), with its bracket ``[margin_lo, margin_hi]``; the raw DeepFool value is kept
  as ``deepfool_upper``.
* :func:`line_margin` (+ ``_batch``, ``_bank``): the exact margin along a 1-D subspace span(d),
  min_{s in R} |s| s.t. argmax f(x0 + s d/||d||) != c0, by a two-sided scan of radii 0 < r_1 < ... < r_n = R
  (geometric from ``min_ratio * R``, or fixed-step) on both signs, then bisection of each side's first flipped
  bracket to ``rtol``; the margin is the smaller side. Exact up to rtol, except that a flipped region thinner than
  the grid between r_k and r_{k+1} is missed (the answer is then the next crossing: still a realised flip).
  Censoring: no flip on either side within R -> ``margin = R``, flipped False (a lower bound, ``margin_hi = inf``);
  d = 0 -> +inf, flipped False (as P w = 0 in DeepFool).

Every bracket satisfies margin_lo <= margin = margin_hi and, when flipped, margin_hi - margin_lo <= rtol *
margin_lo (unless ``max_bisect`` ran out). Only forward passes are added (no gradients), all batched, jit- and
vmap-compatible; a finished lane is frozen, so batched == one-sample.

Shapes: a sample ``x0`` has any shape (e.g. an image ``(H, W, C)``); ``logit_fn(x) -> (classes,)`` maps ONE sample
to its logits (at least 2 classes; :func:`two_class` wraps a scalar score); ``project(v) -> v`` is the orthogonal
projector onto S (same shape as a sample).
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "censored_median",
    "deepfool_bank",
    "deepfool_batch",
    "deepfool_refined",
    "deepfool_refined_bank",
    "deepfool_refined_batch",
    "deepfool_subspace",
    "format_median",
    "line_margin",
    "line_margin_bank",
    "line_margin_batch",
    "two_class",
]


def two_class(score_fn: Callable) -> Callable:
    """A binary score F(x) (scalar or shape (1,)) as the logits ``(0, F(x))``: class 1 iff F > 0, and
    w = grad F, a = F exactly (the binary closed form of spec 2.1)."""

    def logits(x):
        f = jnp.reshape(score_fn(x), ())
        return jnp.stack([jnp.zeros_like(f), f])

    return logits


def _sum_all(v):
    return jnp.sum(v.reshape(v.shape[0], -1), axis=1)


def deepfool_subspace(logit_fn: Callable, x0, project: Callable, *, n_candidates: int = 10, overshoot=0.02,
                      max_iter: int = 100, floor=1e-4):
    """Subspace DeepFool on ONE sample (module docstring).

    Args: ``logit_fn(x) -> (classes,)``; ``x0`` one sample; ``project(v) -> P v``; ``n_candidates`` K_c and
    ``max_iter`` static; ``overshoot`` o and the step ``floor`` may be traced.
    Returns ``{"margin": ||(1+o) r_tot|| (+inf if P w = 0 or non-finite), "flipped": bool, "iters": int32,
    "label": c0, "perturbation": (1+o) r_tot (sample shape)}``.
    """
    x0 = jnp.asarray(x0)
    f0 = logit_fn(x0)
    kc = int(min(n_candidates, f0.shape[-1]))
    if kc < 2:
        raise ValueError(f"invalid logits of shape {f0.shape}: allowed at least 2 classes (wrap scores in two_class)")
    _, cand = lax.top_k(f0, kc)  # fixed for the whole run; cand[0] = c0
    c0 = cand[0]
    dt = x0.dtype
    o = jnp.asarray(overshoot, dt)

    def cand_logits(x):
        return logit_fn(x)[cand]

    jac_fn = jax.jacrev(cand_logits)

    def step_of(r):
        x = x0 + r
        fk = cand_logits(x)
        jac = jac_fn(x)  # (kc, *sample)
        w = jac[1:] - jac[0]
        a = fk[1:] - fk[0]
        pw = jax.vmap(project)(w)
        nrm = jnp.sqrt(_sum_all(pw * pw))
        # P w = 0: that candidate's boundary cannot be reached inside S (distance +inf, never a NaN)
        ell = jnp.where(nrm > 0, jnp.abs(a) / jnp.where(nrm > 0, nrm, 1.0), jnp.inf)
        ell = jnp.where(jnp.isnan(ell), jnp.inf, ell)
        k = jnp.argmin(ell)
        ok = jnp.isfinite(ell[k])
        n_k = jnp.where(ok, nrm[k], 1.0)
        step = jnp.maximum(ell[k], jnp.asarray(floor, dt)) * pw[k] / n_k
        return jnp.where(ok, step, 0.0), ok

    def cond(state):
        _, it, done, _, _ = state
        return (~done) & (it < max_iter)

    def body(state):
        r, it, done, flipped, bad = state
        step, ok = step_of(r)
        r_new = r + step
        f_chk = logit_fn(x0 + (1 + o) * r_new)
        finite = ok & jnp.all(jnp.isfinite(r_new)) & jnp.all(jnp.isfinite(f_chk))
        changed = finite & (jnp.argmax(f_chk) != c0)
        live = ~done  # frozen once finished: a lane's result does not depend on its vmapped neighbours
        r = jnp.where(live & finite, r_new, r)
        bad = bad | (live & ~finite)
        flipped = flipped | (live & changed)
        done = done | (live & (changed | ~finite))
        return r, it + live.astype(jnp.int32), done, flipped, bad

    init = (jnp.zeros_like(x0), jnp.asarray(0, jnp.int32), jnp.asarray(False), jnp.asarray(False),
            jnp.asarray(False))
    r, it, _, flipped, bad = lax.while_loop(cond, body, init)
    pert = (1 + o) * r
    margin = jnp.sqrt(jnp.sum(pert * pert))
    return {"margin": jnp.where(bad, jnp.inf, margin), "flipped": flipped & ~bad, "iters": it, "label": c0,
            "perturbation": pert}


def deepfool_batch(logit_fn: Callable, x, project: Callable, **kw):
    """:func:`deepfool_subspace` vmapped over ``samples``: ``x (samples, *sample)`` -> dict of ``(samples, ...)``."""
    return jax.vmap(lambda xi: deepfool_subspace(logit_fn, xi, project, **kw))(x)


def deepfool_bank(logit_fn: Callable, x, bank, project_with: Callable, *, keep_perturbation: bool = False, **kw):
    """Margins of every sample along every subspace of a bank: vmapped over ``subspaces`` and ``samples``.

    ``bank``: a pytree whose leaves have a leading ``subspaces`` axis; ``project_with(item, v)`` projects a sample
    v onto the subspace ``item`` (one slice of the bank), e.g. :func:`fa_jax.subspaces.project`.
    Returns ``{"margin", "flipped", "iters", "label"}`` of shape ``(subspaces, samples)`` (+ ``"perturbation"``
    ``(subspaces, samples, *sample)`` if ``keep_perturbation``).
    """

    return _over_bank(deepfool_batch, logit_fn, x, bank, project_with, keep_perturbation, **kw)


def _over_bank(batch_fn: Callable, logit_fn: Callable, x, bank, project_with: Callable, keep_perturbation: bool,
               **kw):
    """``batch_fn`` (a ``*_batch`` margin over samples) vmapped over the ``subspaces`` axis of ``bank``."""

    def one(item):
        out = batch_fn(logit_fn, x, lambda v: project_with(item, v), **kw)
        if not keep_perturbation:
            out.pop("perturbation")
        return out

    return jax.vmap(one)(bank)


# ----------------------------------------------------------------------------- refinement: scan + bisection
def _flipped_at(logit_fn, c0):
    """x -> True iff the logits at x are finite and their argmax differs from c0 (non-finite = not flipped)."""

    def f(x):
        fx = logit_fn(x)
        return jnp.all(jnp.isfinite(fx)) & (jnp.argmax(fx) != c0)

    return f


def _first_crossing(flip_t: Callable, grid, known_last: jax.Array, rtol, max_bisect: int, grid_batch: int | None):
    """First flipped point of ``flip_t(t) -> bool`` on the increasing ``grid (n,)`` (t = 0 is unflipped by
    definition), then bisection of (grid[k-1], grid[k]] until hi - lo <= rtol * lo or ``max_bisect`` steps.

    ``known_last``: treat grid[-1] as flipped (DeepFool's own check). Returns ``(found, lo, hi, n_bisect)``;
    if nothing flipped: ``found`` False, lo = grid[-1], hi = +inf. The grid is evaluated ``grid_batch`` points at
    a time (``lax.map``; None: all at once), which bounds the memory of a vmapped bank.
    """
    mask = lax.map(flip_t, grid, batch_size=grid_batch)
    mask = mask.at[-1].set(mask[-1] | known_last)
    found = jnp.any(mask)
    k = jnp.argmax(mask)  # first True (0 if none)
    zero = jnp.zeros((), grid.dtype)
    lo0 = jnp.where(k > 0, grid[jnp.maximum(k - 1, 0)], zero)
    hi0 = grid[k]
    rtol = jnp.asarray(rtol, grid.dtype)

    def live(lo, hi, it):
        return found & (hi - lo > rtol * lo) & (it < max_bisect)

    def body(state):
        lo, hi, it = state
        go = live(lo, hi, it)  # frozen once converged: independent of vmapped neighbours
        mid = 0.5 * (lo + hi)
        fm = flip_t(mid)
        lo = jnp.where(go & ~fm, mid, lo)
        hi = jnp.where(go & fm, mid, hi)
        return lo, hi, it + go.astype(jnp.int32)

    lo, hi, it = lax.while_loop(lambda st: live(*st), body, (lo0, hi0, jnp.asarray(0, jnp.int32)))
    inf = jnp.asarray(jnp.inf, grid.dtype)
    return found, jnp.where(found, lo, grid[-1]), jnp.where(found, hi, inf), it


def deepfool_refined(logit_fn: Callable, x0, project: Callable, *, n_candidates: int = 10, overshoot=0.02,
                     max_iter: int = 100, floor=1e-4, rtol=1e-3, n_segment: int = 16, max_bisect: int = 64,
                     grid_batch: int | None = 8):
    """Subspace DeepFool on ONE sample, refined to the first boundary crossing along its final direction (module
    docstring, "Refined margins").

    Args: as :func:`deepfool_subspace`, plus ``rtol`` (relative bracket width, may be traced), ``n_segment``
    (static: scan points on the segment x0 -> x0 + p), ``max_bisect`` (static cap on bisection steps) and
    ``grid_batch`` (static: scan points evaluated at once; None = all).
    Returns ``{"margin": refined margin = margin_hi if flipped, else DeepFool's censored value (lower bound / +inf),
    "margin_lo", "margin_hi": the bracket (margin_hi = +inf if not flipped), "deepfool_upper": the raw DeepFool
    ||(1+o) r_tot|| (an upper bound when flipped), "flipped", "iters" (DeepFool), "bisect_iters", "label",
    "perturbation": margin_hi * p / ||p|| if flipped, else DeepFool's (1+o) r_tot}``.
    """
    x0 = jnp.asarray(x0)
    df = deepfool_subspace(logit_fn, x0, project, n_candidates=n_candidates, overshoot=overshoot,
                           max_iter=max_iter, floor=floor)
    p, ok = df["perturbation"], df["flipped"]
    dt = x0.dtype
    length = jnp.sqrt(jnp.sum(p * p))
    flip = _flipped_at(logit_fn, df["label"])
    grid = jnp.arange(1, n_segment + 1, dtype=dt) / n_segment
    # only a flipped run is refined; the others scan a dummy segment and keep DeepFool's answer
    p_eff = jnp.where(ok, p, jnp.zeros_like(p))
    found, lo, hi, nb = _first_crossing(lambda t: ok & flip(x0 + t * p_eff), grid, ok, rtol, max_bisect,
                                          grid_batch)
    good = ok & found
    raw = df["margin"]
    inf = jnp.asarray(jnp.inf, raw.dtype)
    m_hi = jnp.where(good, hi * length, inf)
    return {"margin": jnp.where(good, m_hi, raw), "margin_lo": jnp.where(good, lo * length, raw),
            "margin_hi": m_hi, "deepfool_upper": raw, "flipped": good, "iters": df["iters"],
            "bisect_iters": jnp.where(good, nb, 0), "label": df["label"],
            "perturbation": jnp.where(good, hi * p, p)}


def deepfool_refined_batch(logit_fn: Callable, x, project: Callable, **kw):
    """:func:`deepfool_refined` vmapped over ``samples``: ``x (samples, *sample)`` -> dict of ``(samples, ...)``."""
    return jax.vmap(lambda xi: deepfool_refined(logit_fn, xi, project, **kw))(x)


def deepfool_refined_bank(logit_fn: Callable, x, bank, project_with: Callable, *, keep_perturbation: bool = False,
                          **kw):
    """:func:`deepfool_bank` with the refinement: same arguments (+ ``rtol``, ``n_segment``, ``max_bisect``);
    returns the keys of :func:`deepfool_refined` with shape ``(subspaces, samples)`` (``"perturbation"`` only if
    ``keep_perturbation``)."""

    return _over_bank(deepfool_refined_batch, logit_fn, x, bank, project_with, keep_perturbation, **kw)


def line_margin(logit_fn: Callable, x0, direction, *, max_radius=10.0, rtol=1e-3, n_scan: int = 64,
                scan: str = "geometric", min_ratio=1e-4, max_bisect: int = 64, grid_batch: int | None = 8):
    """Exact margin of ONE sample along the 1-D subspace span(``direction``) (module docstring): two-sided scan out
    to ``max_radius`` R, then bisection to ``rtol``.

    Args: ``direction`` (sample shape; normalised here, any sign); ``max_radius``, ``rtol``, ``min_ratio`` may be
    traced; ``n_scan`` (radii per side), ``scan`` ("geometric": r_k = R (min_ratio)^{(n-k)/(n-1)}, k = 1..n;
    "linear": r_k = R k / n), ``max_bisect`` and ``grid_batch`` (as :func:`deepfool_refined`) static.
    Returns ``{"margin": min over sides (flipped) or R (censored lower bound) or +inf (d = 0), "margin_lo",
    "margin_hi" (bracket; +inf if not flipped), "flipped", "sign": +1 / -1 side of the nearest crossing (0 if
    none), "margin_plus", "margin_minus": each side's margin_hi (+inf if none within R), "bisect_iters" (max over
    sides), "label": c0, "perturbation": sign * margin * d / ||d|| (zeros if not flipped)}``.
    """
    x0 = jnp.asarray(x0)
    dt = x0.dtype
    d = jnp.asarray(direction, dt).reshape(x0.shape)
    nrm = jnp.sqrt(jnp.sum(d * d))
    nz = nrm > 0
    u = d / jnp.where(nz, nrm, 1.0)
    c0 = jnp.argmax(logit_fn(x0))
    flip = _flipped_at(logit_fn, c0)
    big_r = jnp.asarray(max_radius, dt)
    if scan == "geometric":
        expo = jnp.arange(n_scan - 1, -1, -1, dtype=dt) / max(n_scan - 1, 1)
        grid = big_r * jnp.asarray(min_ratio, dt) ** expo
    elif scan == "linear":
        grid = big_r * jnp.arange(1, n_scan + 1, dtype=dt) / n_scan
    else:
        raise ValueError(f"invalid scan {scan!r}: allowed 'geometric' or 'linear'")
    signs = jnp.asarray([1.0, -1.0], dt)

    def side(sg):
        return _first_crossing(lambda t: nz & flip(x0 + (sg * t) * u), grid, jnp.asarray(False), rtol,
                               max_bisect, grid_batch)

    found, lo, hi, nb = jax.vmap(side)(signs)  # (2,) each
    k = jnp.argmin(hi)
    ok = jnp.any(found)
    inf = jnp.asarray(jnp.inf, dt)
    m_hi = jnp.where(ok, hi[k], inf)
    m_lo = jnp.where(ok, jnp.min(lo), big_r)
    margin = jnp.where(ok, m_hi, big_r)
    sign = jnp.where(ok, signs[k], 0.0)
    return {"margin": jnp.where(nz, margin, inf), "margin_lo": jnp.where(nz, m_lo, inf), "margin_hi": m_hi,
            "flipped": ok, "sign": sign, "margin_plus": hi[0], "margin_minus": hi[1], "bisect_iters": jnp.max(nb),
            "label": c0, "perturbation": jnp.where(ok, sign * m_hi, 0.0) * u}


def line_margin_batch(logit_fn: Callable, x, direction, **kw):
    """:func:`line_margin` vmapped over ``samples`` (one direction shared by all samples):
    ``x (samples, *sample)`` -> dict of ``(samples, ...)``."""
    return jax.vmap(lambda xi: line_margin(logit_fn, xi, direction, **kw))(x)


def line_margin_bank(logit_fn: Callable, x, directions, *, keep_perturbation: bool = False, **kw):
    """:func:`line_margin` over ``directions (subspaces, *sample)`` x ``samples``: dict of ``(subspaces, samples)``
    (``"perturbation"`` only if ``keep_perturbation``). A column of a basis bank as a sample-shaped direction:
    ``bases[i, :, 0].reshape(sample_shape)``."""

    def one(d):
        out = line_margin_batch(logit_fn, x, d, **kw)
        if not keep_perturbation:
            out.pop("perturbation")
        return out

    return jax.vmap(one)(directions)


def censored_median(margins, flipped, axis: int = -1) -> dict:
    """Median of right-censored margins along ``axis`` (numpy, host side).

    A censored entry (``flipped`` False) is only a lower bound of its true margin. ``median`` is the median with
    censored entries at their bounds: a lower bound of the true median. ``median_upper`` puts them at +inf: an
    upper bound. The median is exact only when both agree; otherwise ``lower_bound`` is True and it must be shown
    as ">= median" (in particular whenever the failure rate is >= 50 %, spec P12).
    Returns ``{"median", "median_upper", "lower_bound", "fail_rate", "n"}`` (arrays over the other axes).
    """
    m = np.asarray(margins, np.float64)
    ok = np.asarray(flipped, bool)
    lo = np.median(m, axis=axis)
    up = np.median(np.where(ok, m, np.inf), axis=axis)
    with np.errstate(invalid="ignore"):
        exact = (lo == up) & np.isfinite(up)
    return {"median": lo, "median_upper": up, "lower_bound": ~exact, "fail_rate": 1.0 - ok.mean(axis=axis),
            "n": m.shape[axis]}


def format_median(median: float, lower_bound: bool, fmt: str = ".3g") -> str:
    """``"0.512"`` or ``">= 3.1"`` (censored)."""
    return (">= " if lower_bound else "") + format(float(median), fmt)
