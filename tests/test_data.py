"""fa_jax.data.clusters: orthogonal centres, labels from a (traced) split, independent splits, determinism,
super-class labels. References are float64 numpy."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax.config import with_values
from fa_jax.data import clusters as C
from fa_jax.data.clusters import ClusterData, cluster_signs, superclass_of

# jit-compiled wrappers (static shapes/configs): one compile each instead of many eager op dispatches
make_centres = jax.jit(C.make_centres, static_argnums=(1, 2, 3))
make_cluster_data = jax.jit(C.make_cluster_data, static_argnums=1)
sample_clusters = jax.jit(C.sample_clusters, static_argnums=3)


def _orthogonality(mu: np.ndarray) -> float:
    mu = np.asarray(mu, np.float64)
    d = mu.shape[1]
    gram = mu @ mu.T
    off = gram - np.diag(np.diag(gram))
    return float(np.max(np.abs(off)) / d)


@pytest.mark.parametrize("d,k", [(64, 4), (300, 10), (50, 50)])
def test_centres_orthogonal_x64(x64, d, k):
    mu = make_centres(jax.random.PRNGKey(3), d, k, dtype=jnp.float64)
    assert mu.dtype == jnp.float64 and mu.shape == (k, d)
    assert _orthogonality(mu) <= 1e-6
    np.testing.assert_allclose(np.linalg.norm(np.asarray(mu), axis=1), np.sqrt(d), rtol=1e-12)


@pytest.mark.parametrize("d,k", [(64, 4), (300, 10), (512, 64)])
def test_centres_orthogonal_float32(d, k):
    mu = make_centres(jax.random.PRNGKey(4), d, k)
    assert mu.dtype == jnp.float32 and mu.shape == (k, d)
    assert _orthogonality(mu) <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(np.asarray(mu, np.float64), axis=1), np.sqrt(d), rtol=1e-5)


def test_centres_x64_cast_to_float32_still_orthogonal(x64):
    """Spec Sec. 6: centres generated in float64, then cast: the cast keeps <= 1e-6 at d = 3072."""
    mu = make_centres(jax.random.PRNGKey(0), 3072, 10, None)
    assert mu.dtype == jnp.float32
    assert _orthogonality(mu) <= 1e-6


def test_centres_span_is_gaussian_column_span(x64):
    """The centres are (up to scale) an orthonormal basis of the span of the Gaussian matrix G(key)."""
    d, k = 40, 5
    key = jax.random.PRNGKey(11)
    mu = np.asarray(make_centres(key, d, k, dtype=jnp.float64))
    # column j of G from fold_in(key, j) (a cluster bucket's first k columns do not depend on it)
    g = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, j), (d,), dtype=jnp.float64))
                  for j in range(k)], 1)
    q = mu.T / np.sqrt(d)
    np.testing.assert_allclose(q @ (q.T @ g), g, atol=1e-10)  # G lies in span(mu)
    # Sign convention: the QR sign fix makes <mu_j, g_j> > 0.
    assert np.all(np.einsum("dk,kd->k", g, mu) > 0)


def test_centres_deterministic_and_key_dependent():
    a = make_centres(jax.random.PRNGKey(1), 32, 4)
    b = make_centres(jax.random.PRNGKey(1), 32, 4)
    c = make_centres(jax.random.PRNGKey(2), 32, 4)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.max(np.abs(np.asarray(a) - np.asarray(c))) > 0.1


def test_cluster_signs_traced_n_pos():
    f = jax.jit(lambda n: cluster_signs(6, n))
    for n in range(1, 6):
        expect = np.array([1.0 if j < n else -1.0 for j in range(6)])
        np.testing.assert_array_equal(np.asarray(f(jnp.int32(n))), expect)
    many = jax.vmap(lambda n: cluster_signs(4, n))(jnp.arange(1, 4))
    np.testing.assert_array_equal(np.asarray(many), [[1, -1, -1, -1], [1, 1, -1, -1], [1, 1, 1, -1]])


CFG = ClusterData(d=48, k=6, n_pos=2, n_train=300, n_test=200, sigma=1.0)


@jax.jit
def _gen(key, sigma, n_pos):
    return C.make_cluster_data(key, with_values(CFG, {"sigma": sigma, "n_pos": n_pos}))


def gen(key, sigma=1.0, n_pos=2):
    """make_cluster_data for CFG with a traced noise level and split (ONE compile shared by the tests below: every
    call passes the same argument structure and types, so none re-traces)."""
    return _gen(key, float(sigma), int(n_pos))


@pytest.mark.parametrize("n_pos", [1, 3, 5])
def test_labels_match_cluster_signs_with_traced_split(n_pos):
    data = gen(jax.random.PRNGKey(5), 1.0, jnp.int32(n_pos))
    for split in ("train", "test"):
        c = np.asarray(data[split]["cluster"])
        y = np.asarray(data[split]["y"])
        np.testing.assert_array_equal(y, np.where(c < n_pos, 1.0, -1.0))
        assert set(np.unique(c)) == set(range(CFG.k))  # every cluster drawn (n >= 200, k = 6)
        np.testing.assert_array_equal(np.asarray(data[split]["label"]), c)  # no groups: fine label = cluster
    np.testing.assert_array_equal(np.asarray(data["signs"]), np.where(np.arange(CFG.k) < n_pos, 1.0, -1.0))


def test_eager_equals_jit():
    key = jax.random.PRNGKey(14)
    a = C.make_cluster_data(key, CFG)
    b = gen(key, 1.0, 2)
    for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(la), np.asarray(lb), rtol=1e-5, atol=1e-5)


def test_samples_are_centre_plus_sigma_noise():
    key = jax.random.PRNGKey(6)
    d0 = gen(key, 0.0)
    mu = np.asarray(d0["centres"])
    for split in ("train", "test"):
        np.testing.assert_array_equal(np.asarray(d0[split]["x"]), mu[np.asarray(d0[split]["cluster"])])
    d1 = gen(key, 0.5)
    xi = (np.asarray(d1["train"]["x"], np.float64) - mu[np.asarray(d1["train"]["cluster"])]) / 0.5
    # xi ~ N(0, I): 300 x 48 = 14400 entries; mean within 5 SE, variance within 5%.
    assert abs(xi.mean()) < 5 / np.sqrt(xi.size)
    assert abs(xi.var() - 1.0) < 0.05
    # the noise is independent of the centre: projections on each unit centre are N(0, 1) too
    proj = xi @ (mu.T / np.sqrt(CFG.d))
    assert abs(proj.std() - 1.0) < 0.1
    # the noise scales linearly with the traced sigma (same draw)
    x2 = np.asarray(gen(key, 2.0)["train"]["x"], np.float64)
    np.testing.assert_allclose((x2 - mu[np.asarray(d1["train"]["cluster"])]) / 2.0, xi, rtol=1e-4, atol=1e-4)


def test_train_test_independent_same_centres():
    data = gen(jax.random.PRNGKey(8))
    tr, te = np.asarray(data["train"]["x"]), np.asarray(data["test"]["x"])
    assert tr.shape == (CFG.n_train, CFG.d) and te.shape == (CFG.n_test, CFG.d)
    assert not np.allclose(tr[: CFG.n_test], te)
    assert np.all(np.linalg.norm(tr[:, None, :] - te[None, :, :], axis=-1) > 1e-3)  # no shared sample
    # both splits come from the same centres: nearest centre == cluster index (sigma=1 << sqrt(2d))
    mu = np.asarray(data["centres"])
    for x, c in ((tr, data["train"]["cluster"]), (te, data["test"]["cluster"])):
        np.testing.assert_array_equal(np.argmax(x @ mu.T, axis=1), np.asarray(c))


def test_same_key_identical_different_key_differs():
    a = gen(jax.random.PRNGKey(9))
    b = gen(jax.random.PRNGKey(9))
    c = gen(jax.random.PRNGKey(10))
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(leaf_a), np.asarray(leaf_b))
    assert not np.allclose(np.asarray(a["centres"]), np.asarray(c["centres"]))
    assert not np.allclose(np.asarray(a["train"]["x"]), np.asarray(c["train"]["x"]))


def test_split_does_not_change_inputs():
    """The split is only a relabelling: x and the cluster draw depend on the key, not on n_pos."""
    key = jax.random.PRNGKey(12)
    a = gen(key, 1.0, 1)
    b = gen(key, 1.0, 4)
    np.testing.assert_array_equal(np.asarray(a["train"]["x"]), np.asarray(b["train"]["x"]))
    np.testing.assert_array_equal(np.asarray(a["train"]["cluster"]), np.asarray(b["train"]["cluster"]))


def test_superclass_mapping():
    np.testing.assert_array_equal(np.asarray(superclass_of(6, None)), np.arange(6))
    np.testing.assert_array_equal(np.asarray(superclass_of(6, 3)), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(np.asarray(superclass_of(12, 4)), np.repeat(np.arange(4), 3))
    np.testing.assert_array_equal(np.asarray(superclass_of(6, 6)), np.arange(6))


def test_groups_labels_in_data():
    cfg = ClusterData(d=48, k=6, n_pos=4, n_train=200, n_test=100, groups=3).validate()
    assert cfg.classes == 3 and cfg.n_classes == cfg.bucket == 6
    data = make_cluster_data(jax.random.PRNGKey(13), cfg)
    for split in ("train", "test"):
        c = np.asarray(data[split]["cluster"])
        lab = np.asarray(data[split]["label"])
        y = np.asarray(data[split]["y"])
        np.testing.assert_array_equal(lab, c // 2)
        # each super-class lies inside one binary class
        for g in range(3):
            assert len(np.unique(y[lab == g])) == 1


def test_sample_clusters_shapes_and_uniform_clusters():
    mu = make_centres(jax.random.PRNGKey(0), 16, 4)
    s = sample_clusters(jax.random.PRNGKey(1), mu, cluster_signs(4, 2), 4000, 1.0)
    assert s["x"].shape == (4000, 16) and s["y"].shape == (4000,) and s["cluster"].shape == (4000,)
    counts = np.bincount(np.asarray(s["cluster"]), minlength=4)
    assert np.all(np.abs(counts - 1000) < 5 * np.sqrt(4000 * 0.25 * 0.75))


# ----------------------------------------------------------------------------- cluster buckets
def test_cluster_bucket_pads_without_changing_the_data():
    """k and g traced inside 8 static slots: the padded draw equals the unpadded one (4 slots) on the real clusters
    (centres to float32 QR reassociation; cluster indices, signs and labels exactly); padding slots have sign 0,
    are never sampled and are marked not live."""
    plain = ClusterData(d=48, k=4, n_pos=2, n_train=300, n_test=200, groups=2).validate()
    padded = with_values(plain, {"bucket": 8})
    assert plain.bucket == 4 and padded.validate().bucket == 8

    @jax.jit
    def draw(k, g):  # k and g as tracers, the way the sweep engine passes them
        return C.make_cluster_data(jax.random.PRNGKey(5), with_values(padded, {"k": k, "groups": g}))

    a = make_cluster_data(jax.random.PRNGKey(5), plain)
    b = draw(jnp.int32(4), jnp.int32(2))
    np.testing.assert_allclose(np.asarray(b["centres"])[:4], np.asarray(a["centres"]), rtol=0, atol=2e-5)
    np.testing.assert_array_equal(np.asarray(b["signs"]), [1, 1, -1, -1, 0, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(b["live"]), [True] * 4 + [False] * 4)
    for split in ("train", "test"):
        for key in ("cluster", "y", "label"):
            np.testing.assert_array_equal(np.asarray(b[split][key]), np.asarray(a[split][key]), err_msg=key)
        np.testing.assert_allclose(np.asarray(b[split]["x"]), np.asarray(a[split]["x"]), rtol=0, atol=2e-5)
    # another k in the same program: 8 real clusters, all sampled, 4 super-classes of 2
    c = draw(jnp.int32(8), jnp.int32(4))
    assert set(np.unique(np.asarray(c["train"]["cluster"]))) == set(range(8))
    np.testing.assert_array_equal(np.asarray(c["superclass"]), np.arange(8) // 2)
    assert _orthogonality(np.asarray(c["centres"])) < 1e-5


@pytest.mark.parametrize("bucket", [3, 49, True, 4.0])
def test_cluster_bucket_validation(bucket):
    with pytest.raises(ValueError, match=r"data\.bucket"):
        ClusterData(d=48, k=4, n_pos=2, bucket=bucket).validate()
