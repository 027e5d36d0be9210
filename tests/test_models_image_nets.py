"""Image nets (MLP, small conv net): shapes, a float64 numpy forward reference, finite-difference gradients,
vmapped-over-seeds init, and the binary read-outs of a 10-class net (F_sum, F_max) against hand sums."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax.data.images import class_signs
from fa_jax.models import image_nets as M
from fa_jax.models.image_nets import ImageNet, binary_logit

# jitted: one compile per call site instead of one per primitive (eager flax is slow on a busy 2-core CPU)
init_image_net = jax.jit(M.init_image_net, static_argnums=(1, 2))
apply_image_net = jax.jit(M.apply_image_net, static_argnums=2)
penultimate = jax.jit(M.penultimate, static_argnums=2)
both = jax.jit(lambda p, x, cfg: (M.apply_image_net(p, x, cfg), M.penultimate(p, x, cfg)), static_argnums=2)
_init_scaled = jax.jit(lambda seed, cfg, shape, scale: M.init_image_net(
    seed, dataclasses.replace(cfg, init_scale=scale), shape), static_argnums=(1, 2))


def init_traced_scale(seed, cfg, image_shape):
    """``init_image_net(seed, cfg, image_shape)`` with ``cfg.init_scale`` traced (a traced field of the engine):
    one program serves every scale."""
    return _init_scaled(seed, dataclasses.replace(cfg, init_scale=1.0), image_shape, cfg.init_scale)


# the float64 tests share one tiny conv net (compiled once); 7x7 is odd: VALID pooling drops a row and column
CONV = ImageNet(arch="conv", head="multiclass", channels=(2, 3), dense=4).validate()
CONV_LAX = ImageNet(arch="conv", head="multiclass", channels=(2, 3), dense=4, conv_impl="lax").validate()
CONV_SHAPE = (7, 7, 2)


def as64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def as32(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float32), tree)


# ----------------------------------------------------------------------------- independent numpy references
def np_conv3x3_same(x, k, b):
    """Cross-correlation, stride 1, zero padding 1 (SAME for 3x3): x (n,H,W,Ci), k (3,3,Ci,Co) -> (n,H,W,Co)."""
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, k.shape[3]))
    for i in range(h):
        for j in range(w):
            patch = xp[:, i:i + 3, j:j + 3, :]  # (n, 3, 3, Ci)
            out[:, i, j, :] = np.einsum("nabc,abco->no", patch, k)
    return out + b


def np_maxpool2(x):
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2  # VALID: an odd last row / column is dropped
    return x[:, :2 * h2, :2 * w2, :].reshape(n, h2, 2, w2, 2, c).max(axis=(2, 4))


def np_conv_net(p, x):
    h = x
    i = 0
    while f"conv_{i}" in p:
        h = np_maxpool2(np.maximum(np_conv3x3_same(h, p[f"conv_{i}"]["kernel"], p[f"conv_{i}"]["bias"]), 0))
        i += 1
    feat = np.maximum(h.reshape(h.shape[0], -1) @ p["fc"]["kernel"] + p["fc"]["bias"], 0)
    return feat @ p["head"]["kernel"] + p["head"]["bias"], feat


def np_mlp(p, x):
    h = x.reshape(x.shape[0], -1)
    i = 0
    while f"dense_{i}" in p:
        h = np.maximum(h @ p[f"dense_{i}"]["kernel"] + p[f"dense_{i}"]["bias"], 0)
        i += 1
    return h @ p["head"]["kernel"] + p["head"]["bias"], h


def randomise_biases(params, seed=7):
    """Flax inits biases at 0; random biases make the references exercise every term."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    rng = np.random.default_rng(seed)
    out = [rng.normal(0, 0.3, a.shape).astype(a.dtype) if path[-1].key == "bias" else a for path, a in leaves]
    return jax.tree_util.tree_unflatten(tree, out)


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("arch,head,n_out,width", [("mlp", "binary", 1, 32), ("mlp", "multiclass", 10, 32),
                                                   ("conv", "binary", 1, 12), ("conv", "multiclass", 10, 12)])
def test_shapes(arch, head, n_out, width):
    cfg = ImageNet(arch=arch, head=head, hidden=(20, 32), channels=(3, 5), dense=12).validate()
    p = jax.eval_shape(lambda: M.init_image_net(0, cfg, (28, 28, 1)))
    x = jax.ShapeDtypeStruct((4, 28, 28, 1), jnp.float32)
    assert jax.eval_shape(lambda pp, xx: M.apply_image_net(pp, xx, cfg), p, x).shape == (4, n_out)
    assert jax.eval_shape(lambda pp, xx: M.penultimate(pp, xx, cfg), p, x).shape == (4, width)
    assert p["head"]["kernel"].shape == (width, n_out)
    if arch == "conv":
        assert p["fc"]["kernel"].shape == (7 * 7 * 5, 12)  # 28 -> 14 -> 7 after two 2x2 pools


def test_cifar_shaped_input_and_init_scale():
    cfg = ImageNet(arch="conv", head="multiclass", channels=(4,), dense=8).validate()
    p = jax.eval_shape(lambda: M.init_image_net(3, cfg, (32, 32, 3)))
    out = jax.eval_shape(lambda pp: M.apply_image_net(pp, jnp.zeros((2, 32, 32, 3)), cfg), p)
    assert out.shape == (2, 10) and p["fc"]["kernel"].shape == (16 * 16 * 4, 8)
    # init_scale multiplies the kernels only (a traced field: the same program serves both scales)
    scaled = jax.jit(lambda sc: M.init_image_net(3, ImageNet(arch="conv", head="multiclass", channels=(4,), dense=8,
                                                                 init_scale=sc), (6, 6, 3)))
    p1, p2 = scaled(1.0), scaled(0.5)
    for path, a in jax.tree_util.tree_flatten_with_path(p1)[0]:
        b = p2
        for k in path:
            b = b[k.key]
        if path[-1].key == "kernel":
            np.testing.assert_allclose(np.asarray(b), 0.5 * np.asarray(a), rtol=1e-6)
        else:
            assert np.all(np.asarray(a) == 0) and np.all(np.asarray(b) == 0)


# ----------------------------------------------------------------------------- numerics (float64)
@pytest.mark.parametrize("arch", ["mlp", "conv", "conv_lax"])
def test_forward_matches_numpy_reference(x64, arch):
    cfg = {"conv": CONV, "conv_lax": CONV_LAX}.get(arch) or ImageNet(arch="mlp", head="multiclass",
                                                                      hidden=(6, 5)).validate()
    p = as64(randomise_biases(init_image_net(1, cfg, CONV_SHAPE)))
    x = np.random.default_rng(0).normal(size=(3, *CONV_SHAPE))
    ref_out, ref_feat = (np_mlp if arch == "mlp" else np_conv_net)(p, x)
    out, feat = both(p, x, cfg)
    np.testing.assert_allclose(np.asarray(out), ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(feat), ref_feat, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cfg", [CONV, CONV_LAX], ids=["patches", "lax"])
def test_conv_gradient_matches_finite_differences(x64, cfg):
    """Directional derivatives of a scalar loss, w.r.t. parameters and inputs, vs central differences."""
    p = as64(randomise_biases(init_image_net(2, cfg, CONV_SHAPE)))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, *CONV_SHAPE))
    w = rng.normal(size=(2, 10))

    @jax.jit
    def loss(params, xx):
        return jnp.sum(jnp.tanh(M.apply_image_net(params, xx, cfg)) * w)

    gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(p, x)
    h = 1e-6
    for trial in range(3):
        vp = jax.tree.map(lambda a: rng.normal(size=a.shape), p)
        vx = rng.normal(size=x.shape)
        plus = loss(jax.tree.map(lambda a, v: a + h * v, p, vp), x + h * vx)
        minus = loss(jax.tree.map(lambda a, v: a - h * v, p, vp), x - h * vx)
        fd = (float(plus) - float(minus)) / (2 * h)
        ad = sum(float(np.vdot(np.asarray(g), v)) for g, v in zip(jax.tree.leaves(gp), jax.tree.leaves(vp)))
        ad += float(np.vdot(np.asarray(gx), vx))
        assert fd == pytest.approx(ad, rel=1e-6, abs=1e-8), trial


def test_conv_impls_share_parameters_init_and_gradients_inside_a_scan(x64):
    """"patches" and "lax" (nn.Conv) are the same net: identical parameter trees and init for a seed, and equal
    parameter gradients when taken inside a ``lax.scan`` (the trainer's setting, where XLA:CPU's conv is slow)."""
    p_patch, p_lax = init_image_net(4, CONV, CONV_SHAPE), init_image_net(4, CONV_LAX, CONV_SHAPE)
    assert jax.tree.structure(p_patch) == jax.tree.structure(p_lax)
    for a, b in zip(jax.tree.leaves(p_patch), jax.tree.leaves(p_lax), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    p = as64(randomise_biases(p_patch))
    x = np.random.default_rng(5).normal(size=(3, *CONV_SHAPE))

    def descend(cfg):
        def body(q, _):
            g = jax.grad(lambda q: jnp.sum(jnp.sin(M.apply_image_net(q, x, cfg))))(q)
            return jax.tree.map(lambda a, b: a - 0.1 * b, q, g), None
        return jax.jit(lambda q: jax.lax.scan(body, q, None, length=3)[0])(p)

    for a, b in zip(jax.tree.leaves(descend(CONV)), jax.tree.leaves(descend(CONV_LAX)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-12)


def _descend_vmapped(cfg, x):
    """Two runs (stacked parameters) of 3 gradient steps inside a scan: the engine's shape of a training loop."""
    def body(q, _):
        g = jax.grad(lambda q: jnp.sum(jnp.sin(M.apply_image_net(q, x, cfg))))(q)
        return jax.tree.map(lambda a, b: a - 0.1 * b, q, g), None
    return jax.jit(jax.vmap(lambda q: jax.lax.scan(body, q, None, length=3)[0]))


AUTO = ImageNet(arch="conv", head="multiclass", channels=(2, 3), dense=4, conv_impl="auto").validate()


def test_auto_conv_is_the_patch_program_on_cpu():
    """conv_impl="auto" on CPU: the same parameters and init as "patches", and bitwise the same training (float32,
    vmapped over runs, gradients inside a scan): the CPU lowering holds only the patch branch."""
    p_auto, p_patch = init_image_net(4, AUTO, CONV_SHAPE), init_image_net(4, CONV, CONV_SHAPE)
    assert jax.tree.structure(p_auto) == jax.tree.structure(p_patch)
    for a, b in zip(jax.tree.leaves(p_auto), jax.tree.leaves(p_patch), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    p = jax.tree.map(lambda a: np.stack([a, 1.5 * a + np.float32(0.01)]), as32(randomise_biases(p_patch)))
    x = jnp.asarray(np.random.default_rng(5).normal(size=(3, *CONV_SHAPE)), jnp.float32)
    if jax.default_backend() == "cpu":
        out_auto, out_patch = _descend_vmapped(AUTO, x)(p), _descend_vmapped(CONV, x)(p)
        for a, b in zip(jax.tree.leaves(out_auto), jax.tree.leaves(out_patch), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_auto_conv_lowers_to_the_library_convolution_off_cpu():
    """Cross-platform lowering (no GPU needed): the CUDA and TPU programs of "auto" hold the library convolution
    (forward and gradient) and no patch matmul on the images; the CPU program holds no convolution."""
    p = jax.tree.map(lambda a: np.stack([a, a]), init_image_net(4, AUTO, CONV_SHAPE))
    x = jnp.zeros((3, *CONV_SHAPE), jnp.float32)
    traced = _descend_vmapped(AUTO, x).trace(p)
    text = {plat: traced.lower(lowering_platforms=(plat,)).as_text() for plat in ("cpu", "cuda", "tpu")}
    assert "stablehlo.convolution" not in text["cpu"]
    n_dots = {plat: t.count("stablehlo.dot_general") for plat, t in text.items()}
    for plat in ("cuda", "tpu"):
        assert text[plat].count("stablehlo.convolution") >= 3  # forward, and the gradients of the 2nd conv layer
        assert n_dots[plat] < n_dots["cpu"]  # the patch matmuls are gone; the dense layers' remain
    both = traced.lower(lowering_platforms=("cpu", "cuda")).as_text()  # one program for both: a branch per platform
    assert "stablehlo.case" in both and "stablehlo.convolution" in both


def test_bad_conv_impl_is_rejected():
    with pytest.raises(ValueError, match="model.conv_impl"):
        ImageNet(arch="conv", conv_impl="winograd").validate()


# ----------------------------------------------------------------------------- seeds under vmap
def test_vmapped_init_equals_per_seed_init():
    cfg = ImageNet(arch="conv", head="binary", channels=(2,), dense=4).validate()
    seeds = np.arange(3) + 5
    batched = jax.jit(jax.vmap(lambda s: M.init_image_net(s, cfg, (8, 8, 1))))(seeds)
    for i, s in enumerate([5, 6, 7]):
        single = init_image_net(s, cfg, (8, 8, 1))  # its own (un-vmapped) program, one seed at a time
        for b, a in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
            np.testing.assert_array_equal(np.asarray(b)[i], np.asarray(a))
    k0 = np.asarray(batched["head"]["kernel"])
    assert not np.allclose(k0[0], k0[1])  # different seeds, different nets


# ----------------------------------------------------------------------------- binary read-outs
def test_fsum_and_fmax_readouts_equal_hand_sums():
    logits = np.random.default_rng(3).normal(size=(6, 10))
    signs = class_signs("odd_even", 10)  # +1 for odd digits
    odd, even = [1, 3, 5, 7, 9], [0, 2, 4, 6, 8]
    fsum = np.asarray(binary_logit(jnp.asarray(logits, jnp.float32), signs, "sum"))
    hand = logits[:, odd].sum(1) - logits[:, even].sum(1)
    np.testing.assert_allclose(fsum, hand, rtol=1e-5, atol=1e-5)
    fmax = np.asarray(binary_logit(jnp.asarray(logits, jnp.float32), signs, "max"))
    np.testing.assert_allclose(fmax, logits[:, odd].max(1) - logits[:, even].max(1), rtol=1e-5, atol=1e-5)
    cifar = class_signs("0-4_vs_5-9", 10)
    np.testing.assert_allclose(np.asarray(binary_logit(jnp.asarray(logits, jnp.float32), cifar, "sum")),
                               logits[:, :5].sum(1) - logits[:, 5:].sum(1), rtol=1e-5, atol=1e-5)
    b = np.asarray(binary_logit(jnp.asarray(logits[:, :1], jnp.float32), np.ones(1), "binary"))
    np.testing.assert_allclose(b, logits[:, 0], rtol=1e-6)


@pytest.mark.parametrize("field,value,match", [
    ("arch", "resnet", "model.arch"), ("head", "ten", "model.head"), ("hidden", (0,), "model.hidden"),
    ("channels", (), "model.channels"), ("dense", 0, "model.dense"), ("init_scale", -1.0, "model.init_scale"),
    ("n_classes", 1, "model.n_classes"),
])
def test_bad_config_errors(field, value, match):
    with pytest.raises(ValueError, match=match):
        ImageNet(**{field: value}).validate()


# ----------------------------------------------------------------------------- PyTorch's default init
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_torch_init_is_uniform_with_pytorch_bounds_and_variance(scale):
    """init="torch": every kernel U(+-scale/sqrt(fan_in)) (variance scale^2 / (3 fan_in)), every bias
    U(+-1/sqrt(fan_in)) (PyTorch's nn.Linear / nn.Conv2d reset_parameters), fan_in = kh kw C_in for a conv; the
    references are written from that formula in float64, not from the code."""
    cfg = ImageNet(arch="conv", head="multiclass", n_classes=10, channels=(40,), dense=300, init="torch",
                   init_scale=scale).validate()
    p = as64(init_traced_scale(0, cfg, (8, 8, 3)))  # both scales: one program
    fans = {"conv_0": 3 * 3 * 3, "fc": 4 * 4 * 40, "head": 300}
    for layer, fan in fans.items():
        for leaf, mult in (("kernel", scale), ("bias", 1.0)):
            a = p[layer][leaf].ravel()
            bound = mult / np.sqrt(fan)
            assert np.all(np.abs(a) <= bound), (layer, leaf)
            if a.size >= 100:  # P[max |a| <= 0.95 bound] = 0.95^n
                assert np.abs(a).max() > 0.95 * bound, (layer, leaf)
            if a.size >= 1000:  # sample variance vs bound^2 / 3 (rel. sd of the estimate ~ sqrt(0.8 / n))
                assert a.var() == pytest.approx(bound ** 2 / 3, rel=6 * np.sqrt(0.8 / a.size)), (layer, leaf)
                assert abs(a.mean()) < 6 * bound / np.sqrt(3 * a.size)
    # the default (flax) init is unchanged: zero biases
    q = as64(init_image_net(0, ImageNet(arch="conv", head="multiclass", channels=(40,), dense=300).validate(),
                            (8, 8, 3)))
    assert not np.any(q["fc"]["bias"]) and np.std(q["fc"]["kernel"]) > 0


def test_torch_init_mlp_variance_matches_one_over_three_fan_in():
    cfg = ImageNet(arch="mlp", head="multiclass", n_classes=10, hidden=(512,), init="torch").validate()
    p = as64(init_image_net(1, cfg, (16, 16, 1)))
    k = p["dense_0"]["kernel"]
    assert k.var() == pytest.approx(1 / (3 * 256), rel=0.02)  # n = 131k entries: rel. sd 0.25 %
    assert np.abs(k).max() <= 1 / 16 and np.abs(p["dense_0"]["bias"]).max() <= 1 / 16
    with pytest.raises(ValueError, match="invalid model.init"):
        ImageNet(init="kaiming").validate()
