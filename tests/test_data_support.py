"""Support data generator (spec sgd_support.md 2.1): shapes, targets, mirrored noise, centring, errors."""
import jax
import numpy as np
import pytest

from fa_jax.data.support import SupportData, make_support_data


def test_shapes_targets_and_mirrored_noise(x64):
    cfg = SupportData(d=6, s=2, n=50, n_test=7, noise=0.1).validate()
    data = make_support_data(jax.random.PRNGKey(0), cfg)
    x, y = np.asarray(data["train"]["x"]), np.asarray(data["train"]["y"])
    assert x.shape == (100, 6) and y.shape == (100,) and data["test"]["x"].shape == (7, 6)
    np.testing.assert_array_equal(x[:50], x[50:])  # duplicated inputs
    f = x[:50, :2].sum(1)
    eps = y[:50] - f
    np.testing.assert_allclose(y[50:], f - eps, atol=1e-12)  # mirrored labels f +- eps
    assert 0.05 < np.std(eps) < 0.2
    np.testing.assert_allclose(x[:, 2:].mean(0), 0.0, atol=1e-12)  # irrelevant columns centred
    np.testing.assert_array_equal(np.asarray(data["w_star"]), [1, 1, 0, 0, 0, 0])


@pytest.mark.parametrize("target", ["sine", "staircase"])
def test_nonlinear_targets(x64, target):
    cfg = SupportData(d=6, s=3, n=20, noise=0.0, target=target, mirrored=False).validate()
    data = make_support_data(jax.random.PRNGKey(1), cfg)
    x, y = np.asarray(data["train"]["x"]), np.asarray(data["train"]["y"])
    ref = np.sin(x[:, :3].sum(1)) if target == "sine" else x[:, 0] + x[:, 1] ** 2 + x[:, 2] ** 3
    np.testing.assert_allclose(y, ref, rtol=1e-12)


def test_decorrelate(x64):
    cfg = SupportData(d=8, s=3, n=40, decorrelate=True).validate()
    x = np.asarray(make_support_data(jax.random.PRNGKey(2), cfg)["train"]["x"])[:40]
    np.testing.assert_allclose(x[:, :3].T @ x[:, 3:], 0.0, atol=1e-10)
    np.testing.assert_allclose(x[:, 3:].mean(0), 0.0, atol=1e-12)


@pytest.mark.parametrize("kw, param", [({"s": 16}, "data.s"), ({"target": "cubic"}, "data.target"),
                                       ({"noise": -1.0}, "data.noise"), ({"n": 1}, "data.n")])
def test_bad_config(kw, param):
    with pytest.raises(ValueError, match=param):
        SupportData(**kw).validate()
