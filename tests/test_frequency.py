"""fa_jax.frequency vs float64 references built from the DCT-II definition and the spec's tables (Sec. 2.3)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax import frequency as F


def _dct_reference(n):
    """C[i, k] by the definition, scalar loops in float64 (independent of the library's vectorised build)."""
    c = np.empty((n, n))
    for i in range(n):
        for k in range(n):
            a = math.sqrt(1.0 / n) if k == 0 else math.sqrt(2.0 / n)
            c[i, k] = a * math.cos(math.pi * (2 * i + 1) * k / (2 * n))
    return c


def test_dct_matrix_definition_and_orthonormality():
    for n in (1, 2, 3, 7, 8, 32):
        c = F.dct_matrix(n)
        np.testing.assert_allclose(c, _dct_reference(n), rtol=0, atol=1e-14)
        # exact symmetry C[n-1-i, k] = (-1)^k C[i, k] and exact zeros where cos hits pi/2 (integer reduction)
        np.testing.assert_array_equal(c[::-1], c * (-1.0) ** np.arange(n))
        zeros = (2 * np.arange(n)[:, None] + 1) * np.arange(n)[None, :] % (2 * n) == n
        assert np.all(c[zeros] == 0.0)
        np.testing.assert_allclose(c.T @ c, np.eye(n), rtol=0, atol=1e-14)
        np.testing.assert_allclose(c @ c.T, np.eye(n), rtol=0, atol=1e-14)
    # spec Sec. 2.1: the 3-D basis vectors
    c3 = F.dct_matrix(3)
    np.testing.assert_allclose(c3[:, 0], np.ones(3) / math.sqrt(3), atol=1e-15)
    np.testing.assert_allclose(c3[:, 1], np.array([1, 0, -1]) / math.sqrt(2), atol=1e-15)
    assert c3[1, 1] == 0.0
    np.testing.assert_allclose(c3[:, 2], np.array([1, -2, 1]) / math.sqrt(6), atol=1e-15)
    with pytest.raises(ValueError, match="n"):
        F.dct_matrix(0)


def test_dct_1d_vs_reference_both_methods_any_axis(x64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 5))
    combos = [(axis, method) for axis in (0, 1, -1) for method in ("matrix", "fft")]

    @jax.jit
    def run(x):  # one compiled program for all combinations
        fwd = [F.dct(x, axis=a, method=m) for a, m in combos]
        return fwd, [F.idct(y, axis=a, method=m) for y, (a, m) in zip(fwd, combos)]

    fwd, back = run(x)
    for (axis, _), got, rt in zip(combos, fwd, back):
        n = x.shape[axis]
        ref = np.moveaxis(np.tensordot(x, _dct_reference(n), axes=([axis], [0])), -1, axis)  # C.T x along axis
        np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=1e-13)
        np.testing.assert_allclose(np.asarray(rt), x, rtol=0, atol=1e-13)


def test_dct_vs_scipy_optional(x64):
    sfft = pytest.importorskip("scipy.fft")
    x = np.random.default_rng(1).standard_normal((3, 8, 8))
    np.testing.assert_allclose(np.asarray(F.dct(x)), sfft.dct(x, type=2, norm="ortho", axis=-1), atol=1e-13)
    np.testing.assert_allclose(np.asarray(F.dct2(x)), sfft.dctn(x, type=2, norm="ortho", axes=(-2, -1)),
                               atol=1e-13)


def test_dct2_separable_layouts_and_nonsquare(x64):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 7))  # (N, C, H, W), H != W
    xh = np.moveaxis(x, 1, -1)  # NHWC
    ch, cw = _dct_reference(5), _dct_reference(7)
    ref = np.einsum("ih,ncij,jw->nchw", ch, x, cw)  # C_H.T X C_W per image and channel

    @jax.jit
    def run(x, xh):
        out = {m: (F.dct2(x, "CHW", m), F.dct2(x, "HW", m), F.dct2(xh, "HWC", m)) for m in ("matrix", "fft")}
        out["round_trip"] = F.idct2(F.dct2(xh, "HWC"), "HWC")
        out["separable"] = F.dct(F.dct(x, -1), -2)
        return out

    out = run(x, xh)
    for m in ("matrix", "fft"):
        chw, hw, hwc = out[m]
        np.testing.assert_allclose(np.asarray(chw), ref, atol=1e-13)
        np.testing.assert_allclose(np.asarray(hw), ref, atol=1e-13)
        np.testing.assert_allclose(np.asarray(hwc), np.moveaxis(ref, 1, -1), atol=1e-13)
    np.testing.assert_allclose(np.asarray(out["round_trip"]), xh, atol=1e-13)
    # separability: the 2-D transform is the 1-D transform along W then along H
    np.testing.assert_allclose(np.asarray(out["separable"]), ref, atol=1e-13)
    # Parseval
    np.testing.assert_allclose(np.sum(np.asarray(out["matrix"][0]) ** 2), np.sum(x ** 2), rtol=1e-13)


def test_dct_float32_accuracy_and_jit_vmap():
    x = np.random.default_rng(3).standard_normal((4, 16, 16)).astype(np.float32)
    f = jax.jit(jax.vmap(F.dct2))
    got = np.asarray(f(x))
    ref = np.einsum("ih,nij,jw->nhw", _dct_reference(16), x.astype(np.float64), _dct_reference(16))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-5)
    np.testing.assert_allclose(np.asarray(F.dct2(x, method="fft")), ref, atol=2e-5)


def test_phi_freq_spec_table():
    """Spec Sec. 2.3 reference on 32 x 32: cut-off radius (2 dp) and kept counts, exactly."""
    table = {90: (34.98, 921), 70: (29.53, 713), 50: (24.98, 510), 30: (19.10, 304), 10: (10.82, 102)}
    for keep, (r, kept) in table.items():
        assert round(float(F.lowpass_radius((32, 32), keep)), 2) == r
        m = np.asarray(F.lowpass_mask((32, 32), keep))
        assert m.sum() == kept
        np.testing.assert_array_equal(m, F.radius_grid(32) < float(F.lowpass_radius((32, 32), keep)))
    # traced threshold: one program for all thresholds (vmapped), same counts
    counts = jax.jit(jax.vmap(lambda k: F.lowpass_mask((32, 32), k).sum()))(jnp.array([90.0, 70, 50, 30, 10]))
    np.testing.assert_array_equal(np.asarray(counts), [921, 713, 510, 304, 102])
    # edge cases: nothing removed / everything removed
    assert int(F.lowpass_mask((8, 8), 100).sum()) == 64 and int(F.lowpass_mask((8, 8), 0).sum()) == 0


def test_lowpass_scan_rule_literal_loop():
    """The table lookup equals the literal downward scan on other (also non-square) planes."""
    for h, w in ((8, 8), (28, 28), (6, 10)):
        rad = F.radius_grid(h, w)
        r_max = math.sqrt(h * h + w * w)
        for keep in (5.0, 33.3, 50.0, 87.5):
            for m in range(F.SCAN_STEPS + 1):
                r = r_max - m * (r_max / F.SCAN_STEPS)
                if (rad < r).sum() / (h * w) < keep / 100:
                    break
            assert float(F.lowpass_radius((h, w), keep)) == pytest.approx(r, rel=1e-6)
            np.testing.assert_array_equal(np.asarray(F.lowpass_mask((h, w), keep)), rad < r)


def test_phi_freq_projects(x64):
    x = np.random.default_rng(4).standard_normal((2, 3, 16, 16))  # NCHW

    @jax.jit
    def run(x):
        y = F.phi_freq(x, 70.0, "CHW")
        return y, F.dct2(y), F.dct2(x), F.phi_freq(y, 70.0, "CHW"), F.phi_freq(jnp.moveaxis(x, 1, -1), 70.0, "HWC")

    y, yt, xt, yy, yh = (np.asarray(a) for a in run(x))
    m = np.asarray(F.lowpass_mask((16, 16), 30.0))
    np.testing.assert_allclose(yt[..., ~m], 0.0, atol=1e-13)
    np.testing.assert_allclose(yt[..., m], xt[..., m], atol=1e-13)
    np.testing.assert_allclose(yy, y, atol=1e-13)  # idempotent
    np.testing.assert_allclose(yh, np.moveaxis(y, 1, -1), atol=1e-13)  # NHWC gives the same result


def test_phi_nrg_vs_numpy_reference(x64):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 8, 8))  # NCHW
    run = jax.jit(lambda x, removed: (F.energy_mask(x, 100.0 - removed, "CHW"), F.dct2(F.phi_nrg(x, removed, "CHW"),
                                                                                      "CHW"), F.dct2(x, "CHW")))
    for removed in (10.0, 50.0, 70.0):  # traced: one program
        keep = 100.0 - removed
        mag = np.abs(np.einsum("ih,ncij,jw->nchw", _dct_reference(8), x, _dct_reference(8))).mean(axis=1)
        q = np.quantile(mag.reshape(3, -1), 1 - keep / 100, axis=-1)
        ref = mag >= q[:, None, None]
        got, yt, xt = (np.asarray(a) for a in run(x, removed))
        np.testing.assert_array_equal(got, ref)
        assert np.all(np.abs(got.reshape(3, -1).sum(-1) - keep / 100 * 64) <= 1)
        np.testing.assert_allclose(yt * ~ref[:, None], 0.0, atol=1e-13)  # same mask on every channel
        np.testing.assert_allclose(yt * ref[:, None], xt * ref[:, None], atol=1e-13)
    assert not np.array_equal(ref[0], ref[1])  # per-image masks


def test_radial_bands():
    b = F.radial_bands((32, 32), 8, "rank")
    np.testing.assert_array_equal(np.bincount(b.ravel()), np.full(8, 128))
    rad = F.radius_grid(32)
    assert b[0, 0] == 0 and b[-1, -1] == 7
    for k in range(7):  # bands are ordered by radius
        assert rad[b == k].max() <= rad[b == k + 1].min()
    sizes = np.bincount(F.radial_bands((32, 32), 10, "rank").ravel())
    assert sizes.sum() == 1024 and sizes.max() - sizes.min() <= 1
    br = F.radial_bands((32, 32), 10, "radius")
    for r in np.unique(np.round(rad, 9)):  # whole shells: equal radii never split
        assert np.unique(br[np.isclose(rad, r, atol=1e-9)]).size == 1
    sizes = np.bincount(br.ravel())
    assert sizes.size == 10 and sizes.sum() == 1024 and sizes[0] == 102
    with pytest.raises(ValueError, match="n_bands"):
        F.radial_bands((4, 4), 0)
    with pytest.raises(ValueError, match="rule"):
        F.radial_bands((4, 4), 2, "bogus")


def test_band_noise_support_and_equal_energy(x64):
    n_bands, draws = 4, 400
    bands = F.radial_bands((8, 8), n_bands)

    @jax.jit
    def run(key):  # traced band index: one program for every band (same key: disjoint coefficients)
        z = jax.vmap(lambda b: F.band_noise(key, (draws, 2, 8, 8), b, n_bands, 0.01, "CHW"))(jnp.arange(n_bands))
        y = F.add_band_noise(key, jnp.ones((draws, 8, 8, 2)), 2, n_bands, 0.01, "HWC")
        return z, F.dct2(z, "CHW"), F.dct2(y - 1.0, "HWC")

    z, zt, yt = (np.asarray(a) for a in run(jax.random.PRNGKey(0)))
    expected = 0.01 * 64 / n_bands  # var * |band| per image and channel
    for k in range(n_bands):
        np.testing.assert_allclose(zt[k][..., bands != k], 0.0, atol=1e-13)  # zero outside its band
        # draws*2*16 squared N(0, var) terms: relative sd sqrt(2 / 12800) ~ 1.25%
        assert np.sum(z[k] ** 2) / (draws * 2) == pytest.approx(expected, rel=0.05)
    np.testing.assert_allclose(yt[:, bands != 2, :], 0.0, atol=1e-13)  # NHWC, no clamping of x + noise
    assert np.abs(yt[:, bands == 2, :]).min() > 0


def test_flip_involution_orthogonal_block_mirror(x64):
    rng = np.random.default_rng(6)
    x, v = rng.standard_normal((2, 3, 12, 12))
    xh = rng.standard_normal((2, 12, 12, 3))
    n_, k_, i_ = 12, 4, 1

    @jax.jit
    def run(x, v, xh):
        fx = F.flip_frequency(x)
        xb = F.apply_mask(x, F.block_mask((n_, n_), i_, k_))
        fb = F.flip_frequency(xb)
        return {"fx": fx, "fv": F.flip_frequency(v), "ffx": F.flip_frequency(fx), "dfx": F.dct2(fx),
                "dx": F.dct2(x), "fb": fb, "fb_proj": F.apply_mask(fb, F.block_mask((n_, n_), n_ - k_ - i_, k_)),
                "fh": F.flip_frequency(xh, "HWC"), "fh_ref": F.flip_frequency(jnp.moveaxis(xh, -1, 1))}

    o = {k: np.asarray(a) for k, a in run(x, v, xh).items()}
    np.testing.assert_allclose(o["ffx"], x, atol=1e-13)  # involution
    np.testing.assert_allclose(np.sum(o["fx"] * o["fv"]), np.sum(x * v), rtol=1e-12)  # orthogonal
    np.testing.assert_allclose(o["dfx"], o["dx"][..., ::-1, ::-1], atol=1e-13)
    # a signal in diagonal block i (size K) maps into block N - K - i
    np.testing.assert_allclose(o["fb"], o["fb_proj"], atol=1e-13)
    assert np.abs(o["fb"]).max() > 0.1
    # NHWC layout agrees with HW on the moved axes
    np.testing.assert_allclose(o["fh"], np.moveaxis(o["fh_ref"], 1, -1), atol=1e-13)


def test_spectral_energy(x64):
    x = np.random.default_rng(7).standard_normal((4, 6, 6, 2))  # NHWC
    xt = np.einsum("ih,nijc,jw->nhwc", _dct_reference(6), x, _dct_reference(6))
    np.testing.assert_allclose(np.asarray(F.spectral_energy(x, "HWC")), np.abs(xt).mean(axis=(0, 3)), atol=1e-13)


def test_block_and_square_masks_traced():
    f = jax.jit(lambda s: F.block_mask((28, 28), s, 8))
    for s in (0, 5, 20):
        m = np.asarray(f(s))
        assert m.sum() == 64 and m[s, s] and m[s + 7, s + 7] and not m[s + 8 if s < 20 else s - 1, s]
    lo, hi = np.asarray(F.square_mask((32, 32), 16)), np.asarray(F.square_mask((32, 32), 16, "high"))
    assert lo.sum() == hi.sum() == 256 and lo[0, 0] and hi[-1, -1] and not (lo & hi).any()


def test_validation_errors():
    x = np.zeros((2, 8, 8))
    with pytest.raises(ValueError, match="layout"):
        F.dct2(x, layout="NCHW")
    with pytest.raises(ValueError, match="method"):
        F.dct(x, method="dst")
    with pytest.raises(ValueError, match="removed_percent"):
        F.phi_freq(x, 120.0)
    with pytest.raises(ValueError, match="removed_percent"):
        F.phi_nrg(x, -1.0)
    with pytest.raises(ValueError, match="x.ndim"):
        F.dct2(np.zeros((8, 8)), layout="CHW")
    with pytest.raises(ValueError, match="corner"):
        F.square_mask((8, 8), 2, "middle")
