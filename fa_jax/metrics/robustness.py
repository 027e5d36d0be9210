"""Robustness metrics: binary read-outs, exact directional flip radius, l2 and l-inf PGD, robust accuracy, r50.

All attacks are written against a *margin function* ``margin(delta) -> (samples,)`` = y F(x + delta) of a
perturbation ``delta (samples, p)``; F <= 0 * y (a tie) counts as an error. For nets whose input enters through
one linear layer (every fa-jax two-layer net), :func:`reduce_two_layer` gives an *exact* low-dimensional
coordinate system: with Q (d, p-1) an orthonormal basis containing the row space of W, a perturbation is
delta = Q c + s u (u a unit vector orthogonal to Q), the net sees only W Q c, and ||delta||^2 = |c|^2 + s^2.
PGD on (c, s) is then identical step by step to PGD in R^d (the gradient has no u component and the l2
projection rescales (c, s) jointly), at a cost independent of d.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ..linalg import qr_q
from ..models.two_layer import hidden

_TINY = 1e-30


# ----------------------------------------------------------------------------- read-outs
def binary_readout(out, sup_sign, kind: str):
    """``out (samples, outputs)`` -> ``F (samples,)``.

    kind: ``"binary"`` (the single output), ``"sum"``  F = sum_{+} f_j - sum_{-} f_j, or
    ``"max"``  F = max_{+} f_j - max_{-} f_j; ``sup_sign (outputs,)`` is each output's binary class.
    """
    if kind == "binary":
        return out[..., 0]
    if kind == "sum":
        return out @ sup_sign
    if kind == "max":
        neg = jnp.asarray(-jnp.inf, out.dtype)
        return jnp.max(jnp.where(sup_sign > 0, out, neg), -1) - jnp.max(jnp.where(sup_sign < 0, out, neg), -1)
    raise ValueError(f"invalid readout={kind!r}: allowed 'binary', 'sum', 'max'")


def lse_readout(out, sup_sign):
    """Probability-sum read-out ``out (samples, outputs)`` -> ``F_lse (samples,)``:

        F_lse = log sum_{j in J+} exp(f_j) - log sum_{j in J-} exp(f_j)
              = log( sum_{J+} softmax(f)_j / sum_{J-} softmax(f)_j ),

    the log-odds of the summed class probabilities of the two sides (log Z cancels). ``sup_sign (outputs,)`` is each
    output's binary class (+1 / -1; 0 is ignored). Computed as two masked ``logsumexp`` (stable for large logits);
    its gradient is softmax over each side, finite everywhere. F_lse = 0 counts as an error, as for every read-out.
    """
    neg = jnp.asarray(-jnp.inf, out.dtype)
    pos_side = jax.nn.logsumexp(jnp.where(sup_sign > 0, out, neg), axis=-1)
    neg_side = jax.nn.logsumexp(jnp.where(sup_sign < 0, out, neg), axis=-1)
    return pos_side - neg_side


# ----------------------------------------------------------------------------- reduced coordinates
def reduce_two_layer(params, x, extra=None):
    """Exact attack coordinates for a two-layer net.

    Args: ``params`` with ``w (neurons, d)``; ``x (samples, d)``; optional ``extra (e, d)`` directions to include
    in the basis (e.g. the averaged feature, so cos(delta, v) is exact).
    Returns ``(z0 (samples, neurons), WQ (neurons, p), Q (d, p-1))`` with p = neurons + e + 1: the last coordinate
    is the norm of the component orthogonal to span(Q), which the net does not see.
    """
    w = params["w"]
    cols = w.T if extra is None else jnp.concatenate([w.T, extra.T], axis=1)
    q = qr_q(cols)  # (d, p-1), orthonormal even when W is rank-deficient
    wq = jnp.concatenate([w @ q, jnp.zeros((w.shape[0], 1), w.dtype)], axis=1)
    return hidden(params, x), wq, q


def reduced_ball_start(key, q, n: int, eps=1.0, dtype=jnp.float32):
    """Uniform start in the eps-ball of R^d, expressed in reduced coordinates ``(samples, p)``.

    Draws the full start delta = eps U^{1/d} z/||z|| (z ~ N(0, I_d)) and maps it exactly to (c, s) = (Q^T delta,
    ||delta - Q Q^T delta||), ``q (d, p-1)``; so reduced PGD from this start IS full PGD from delta.
    """
    full = full_ball_start(key, n, q.shape[0], eps, dtype)
    c = full @ q
    s = jnp.sqrt(jnp.maximum(jnp.sum(full**2, axis=1) - jnp.sum(c**2, axis=1), 0.0))
    return jnp.concatenate([c, s[:, None]], axis=1)


def full_ball_start(key, n: int, dim: int, eps, dtype=jnp.float32):
    """Uniform start in the eps-ball of R^dim, full coordinates ``(samples, dim)``."""
    k1, k2 = jax.random.split(key)
    z = jax.random.normal(k1, (n, dim), dtype)
    u = jax.random.uniform(k2, (n, 1), dtype)
    return eps * u ** (1.0 / dim) * z / jnp.maximum(jnp.linalg.norm(z, axis=1, keepdims=True), _TINY)


# ----------------------------------------------------------------------------- PGD
def _unit(g):
    """Row-wise g/||g||, exact for tiny gradients: rescaling by max|g| first keeps ||g||^2 from underflowing
    (a logistic-loss gradient at margin 100 is ~1e-44); a zero row stays zero (no NaN)."""
    s = jnp.max(jnp.abs(g), axis=1, keepdims=True)
    gs = g / jnp.where(s > 0, s, 1.0)
    n = jnp.linalg.norm(gs, axis=1, keepdims=True)
    return gs / jnp.where(n > 0, n, 1.0)


def logit_margin(logits, labels):
    """``(samples,)`` multi-class logit margin f_y - max_{j != y} f_j (<= 0: misclassified; a tie is an error)."""
    fy = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    other = jnp.where(jax.nn.one_hot(labels, logits.shape[1], dtype=bool), -jnp.inf, logits)
    return fy - jnp.max(other, axis=1)


def pgd(margin_fn, loss_fn, delta0, eps, steps: int, alpha):
    """l2 PGD: delta <- Pi_eps(delta + alpha g/||g||), g = grad of the summed per-sample ``loss_fn``.

    ``margin_fn(delta) -> (samples,)`` is y F(x + delta); ``loss_fn(delta) -> (samples,)`` is the objective to
    ascend. Returns ``(robust (samples,) bool, delta_final, first_success (samples, p))``: a point is non-robust if
    ANY iterate (the random start included) has margin <= 0; ``first_success`` is the first such perturbation.
    A zero gradient leaves delta unchanged (no NaN). The loop is :func:`pgd_ball`'s (l2 ball, static).
    """
    return pgd_ball(margin_fn, loss_fn, delta0, eps, steps, alpha, False)


def robust_accuracy_curve(margin_fn, loss_fn, eps_grid, starts, *, steps: int, rel_step: float = 2.5,
                          eps_batch: int = 16, n_eps=None):
    """Robust accuracy ``(eps,)`` under l2 PGD with one run per random start at every eps.

    ``starts (restarts, samples, p)`` are random starts in the UNIT ball (full or reduced coordinates); at radius
    eps the start is eps * starts[r] (the same unit draws serve every eps: common random numbers across the grid).
    Step size alpha = rel_step * eps / steps (Madry et al.'s 2.5 eps / steps). All restarts and ``eps_batch``
    radii run as one vectorised attack (few large steps beat many small ones); ``lax.map`` walks the eps grid in
    such batches, so memory is bounded by eps_batch * restarts * samples * p.

    ``n_eps`` (an integer >= 1, may be traced; None: every radius is distinct): a grid padded to a static length
    by repeating its last radius, ``eps_grid[i] = eps_grid[n_eps - 1]`` for i >= n_eps. Only the batches that hold a distinct
    radius run (a loop bounded by ceil(n_eps / eps_batch), at most the full batches; the last partial batch always
    runs), and each repeated radius gets the last distinct radius's result: the same attack, the same numbers.
    Under ``vmap`` over runs the loop runs as long as the chunk's largest ``n_eps`` needs.
    Returns ``(acc (eps,), robust (eps, samples))``.
    """

    def at_eps(eps):
        def one_start(s):
            return pgd(margin_fn, loss_fn, eps * s, eps, steps, rel_step * eps / steps)[0]

        return jnp.all(jax.vmap(one_start)(starts), axis=0)

    size, batch = eps_grid.shape[0], min(eps_batch, eps_grid.shape[0])
    if n_eps is None:
        robust = lax.map(at_eps, eps_grid, batch_size=batch)
        return jnp.mean(robust, axis=1), robust
    full, rest = divmod(size, batch)  # lax.map's split: full batches in a loop, the remainder vmapped
    blocks = eps_grid[:full * batch].reshape(full, batch)
    samples = starts.shape[1]

    def one_batch(i, out):
        return out.at[i].set(jax.vmap(at_eps)(blocks[i]))

    todo = jnp.minimum((n_eps + batch - 1) // batch, full)  # batches holding a distinct radius
    robust = lax.fori_loop(0, todo, one_batch, jnp.zeros((full, batch, samples), bool))
    robust = robust.reshape(full * batch, samples)
    if rest:
        robust = jnp.concatenate([robust, jax.vmap(at_eps)(eps_grid[full * batch:])])
    robust = robust[jnp.minimum(jnp.arange(size), n_eps - 1)]  # repeated radii: the last distinct one's result
    return jnp.mean(robust, axis=1), robust


def crossing(eps_grid, acc, level: float = 0.5):
    """First eps where ``acc`` falls to ``level``, by linear interpolation.

    Returns ``(r, censored)``: if acc never reaches ``level`` on the grid, r = the last eps and censored = True
    (report as ">= r"); if acc(0) <= level, r = 0.
    """
    below = acc <= level
    i = jnp.argmax(below)  # first index at or below the level
    any_below = jnp.any(below)
    i0 = jnp.maximum(i - 1, 0)
    a0, a1 = acc[i0], acc[i]
    e0, e1 = eps_grid[i0], eps_grid[i]
    frac = jnp.where(a0 > a1, (a0 - level) / jnp.maximum(a0 - a1, _TINY), 0.0)
    r = jnp.where(i == 0, eps_grid[0], e0 + frac * (e1 - e0))
    return jnp.where(any_below, r, eps_grid[-1]), ~any_below


# ----------------------------------------------------------------------------- directional flip radius
def flip_radius(ray_margin, n: int, t_max, grid: int = 128, iters: int = 40):
    """Smallest t in [0, t_max] with ``ray_margin(t) <= 0``, per sample (bracketing then bisection).

    ``ray_margin(t (samples,)) -> (samples,)`` is y F(x + t v). A grid of ``grid`` points brackets the first sign
    change; ``iters`` bisection steps refine it (to 2^-iters of a grid cell). A dip below zero narrower than one
    grid cell (t_max/grid) can be missed. Points that never flip up to t_max return +inf (censored).
    """
    ts = jnp.linspace(0.0, 1.0, grid + 1) * t_max  # (grid+1,)
    margins = jax.vmap(lambda t: ray_margin(jnp.full((n,), t)))(ts)  # (grid+1, samples)
    hit = margins <= 0
    first = jnp.argmax(hit, axis=0)  # (samples,)
    flipped = jnp.any(hit, axis=0)
    hi = ts[first]
    lo = ts[jnp.maximum(first - 1, 0)]

    def bisect(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        ok = ray_margin(mid) <= 0
        return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

    lo, hi = lax.fori_loop(0, iters, bisect, (lo, hi))
    r = jnp.where(first == 0, 0.0, hi)
    return jnp.where(flipped, r, jnp.inf)


# ----------------------------------------------------------------------------- l-inf PGD, l_p robust accuracy
def cube_start(key, n: int, dim: int, eps=1.0, dtype=jnp.float32):
    """Uniform start in the l-inf ball of radius eps (the cube [-eps, eps]^dim), ``(samples, dim)``."""
    return eps * jax.random.uniform(key, (n, dim), dtype, -1.0, 1.0)


def pgd_linf(margin_fn, loss_fn, delta0, eps, steps: int, alpha):
    """l-inf PGD: delta <- clip(delta + alpha sign(g), -eps, eps), g = grad of the summed per-sample ``loss_fn``.

    Same contract as :func:`pgd` (``margin_fn``, ``loss_fn`` of ``delta (samples, p)``): returns ``(robust
    (samples,) bool, delta_final, first_success)``; a point is non-robust if ANY iterate (the start included) has
    margin <= 0. sign(0) = 0: a zero gradient leaves delta unchanged.
    """
    return pgd_ball(margin_fn, loss_fn, delta0, eps, steps, alpha, True)


def pgd_ball(margin_fn, loss_fn, delta0, eps, steps: int, alpha, linf):
    """PGD in the l2 ball (``linf`` false: the steps and projection of :func:`pgd`) or the l-inf ball (``linf``
    true: :func:`pgd_linf`). ``linf`` may be a traced bool, so l2 and l-inf attacks vmap as ONE program (both
    updates are computed, one is kept). Returns ``(robust, delta_final, first_success)`` as :func:`pgd`.
    """

    def project(d):
        if linf is True:
            return jnp.clip(d, -eps, eps)
        nrm = jnp.linalg.norm(d, axis=1, keepdims=True)
        l2 = d * jnp.minimum(1.0, eps / jnp.maximum(nrm, _TINY))
        return l2 if linf is False else jnp.where(linf, jnp.clip(d, -eps, eps), l2)

    def direction(g):  # a Python bool picks one update statically; a traced one computes both and keeps one
        if linf is True:
            return jnp.sign(g)
        return _unit(g) if linf is False else jnp.where(linf, jnp.sign(g), _unit(g))

    def objective(d):
        # The margin is returned as aux: XLA shares its forward pass with the loss's (one forward per step).
        return jnp.sum(loss_fn(d)), margin_fn(d)

    grad = jax.grad(objective, has_aux=True)

    def body(carry, _):
        d, broken, found = carry
        g, m = grad(d)  # margin of the CURRENT iterate, then its gradient step
        hit = m <= 0
        found = jnp.where((hit & ~broken)[:, None], d, found)
        broken = broken | hit
        d = project(d + alpha * direction(g))
        return (d, broken, found), None

    d0 = project(delta0)
    (d, broken, found), _ = lax.scan(body, (d0, jnp.zeros(d0.shape[0], bool), jnp.zeros_like(d0)), None,
                                     length=steps)
    hit = margin_fn(d) <= 0  # the last iterate
    found = jnp.where((hit & ~broken)[:, None], d, found)
    return ~(broken | hit), d, found


def robust_accuracy_lp(margin_fn, loss_fn, eps_grid, linf_grid, starts_l2, starts_linf, *, steps: int,
                       rel_step: float = 2.5):
    """Robust accuracy ``(budgets,)`` under PGD with one run per random start at every budget; budget b is an l2
    ball of radius ``eps_grid[b]`` (``linf_grid[b]`` false) or an l-inf ball (true): l2 and l-inf budgets run as
    ONE vmapped attack (:func:`pgd_ball`). A point is robust only if every start fails.

    ``starts_l2`` / ``starts_linf (restarts, samples, p)``: random starts in the UNIT l2 ball
    (:func:`full_ball_start`) / unit cube (:func:`cube_start`), scaled by eps. Step alpha = rel_step * eps / steps.
    Returns ``(acc (budgets,), robust (budgets, samples))``.
    """

    def at(eps, linf):
        def one_start(s2, si):
            return pgd_ball(margin_fn, loss_fn, eps * jnp.where(linf, si, s2), eps, steps, rel_step * eps / steps,
                            linf)[0]

        return jnp.all(jax.vmap(one_start)(starts_l2, starts_linf), axis=0)

    robust = jax.vmap(at)(jnp.asarray(eps_grid), jnp.asarray(linf_grid, bool))
    return jnp.mean(robust, axis=1), robust
