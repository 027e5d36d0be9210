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
    "deepfool_subspace",
    "format_median",
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

    def one(item):
        out = deepfool_batch(logit_fn, x, lambda v: project_with(item, v), **kw)
        if not keep_perturbation:
            out.pop("perturbation")
        return out

    return jax.vmap(one)(bank)


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
