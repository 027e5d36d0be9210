"""fa_jax.linalg: each decomposition equals numpy's float64 one per matrix, and stays unbatched under vmap."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax import linalg as L


@pytest.fixture
def mats(x64):
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 6, 4))


def test_qr_svd_eigh_chol_match_numpy_per_matrix(mats):
    q = np.asarray(jax.vmap(L.qr_q)(jnp.asarray(mats)))
    s = np.asarray(jax.vmap(L.singular_values)(jnp.asarray(mats)))
    spd = np.einsum("rij,rik->rjk", mats, mats) + np.eye(4)
    w, v = (np.asarray(a) for a in jax.vmap(L.eigh)(jnp.asarray(spd)))
    y = np.ones((3, 4, 2))
    sol = np.asarray(jax.vmap(L.chol_solve)(jnp.asarray(spd), jnp.asarray(y)))
    for i in range(3):
        qn, _ = np.linalg.qr(mats[i])
        # Q is unique up to column signs
        np.testing.assert_allclose(np.abs(np.sum(q[i] * qn, 0)), 1.0, atol=1e-12)
        np.testing.assert_allclose(s[i], np.linalg.svd(mats[i], compute_uv=False), rtol=1e-12)
        np.testing.assert_allclose(w[i], np.linalg.eigvalsh(spd[i]), rtol=1e-12)
        np.testing.assert_allclose(spd[i] @ v[i], v[i] * w[i], atol=1e-10)
        np.testing.assert_allclose(sol[i], np.linalg.solve(spd[i], y[i]), rtol=1e-10)
    u, sv, vh = (np.asarray(a) for a in jax.vmap(L.svd)(jnp.asarray(mats)))
    np.testing.assert_allclose(np.einsum("rik,rk,rkj->rij", u, sv, vh), mats, atol=1e-12)


def test_vmapped_program_holds_no_batched_lapack_call(mats):
    # sequential_vmap turns the batch into a loop: the compiled call sees one matrix at a time
    text = jax.jit(jax.vmap(L.qr_q)).lower(jnp.asarray(mats)).as_text()
    assert "while" in text or "scan" in text


def test_only_cpu_lowers_to_a_loop_accelerators_keep_the_batched_solver():
    # the rule picks per platform when the program is lowered: cuSOLVER's batched kernels are safe and fast
    x = jnp.ones((3, 6, 4))
    cpu = jax.jit(jax.vmap(L.qr_q)).trace(x).lower(lowering_platforms=("cpu",)).as_text()
    gpu = jax.jit(jax.vmap(L.qr_q)).trace(x).lower(lowering_platforms=("cuda",)).as_text()
    assert "while" in cpu and "lapack_" in cpu
    assert "while" not in gpu and "cusolver" in gpu


def test_unbatched_arguments_and_nested_vmap(mats):
    # chol_solve with a batched matrix and a shared right-hand side; and a vmap of a vmap (runs x chunks)
    spd = np.einsum("rij,rik->rjk", mats, mats) + np.eye(4)
    y = np.arange(8.0).reshape(4, 2)
    sol = np.asarray(jax.vmap(L.chol_solve, in_axes=(0, None))(jnp.asarray(spd), jnp.asarray(y)))
    for i in range(3):
        np.testing.assert_allclose(sol[i], np.linalg.solve(spd[i], y), rtol=1e-10)
    nested = np.asarray(jax.jit(jax.vmap(jax.vmap(L.singular_values)))(jnp.stack([mats, 2 * mats])))
    for i in range(3):
        np.testing.assert_allclose(nested[1, i], 2 * np.linalg.svd(mats[i], compute_uv=False), rtol=1e-12)
