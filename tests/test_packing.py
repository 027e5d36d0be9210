"""Width packing (fa_jax.segments, fa_jax.packing, the packed paths of trainer / optim / two_layer): runs of
different widths on one neuron axis equal the same runs trained separately (float64: to 1e-10 relative; their
inits bit for bit), a diverging run freezes alone, slots respect their capacity and never mix runs that differ
outside the packed fields, new widths inside a slot's shape never recompile, and a rerun reloads its chunks."""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fa_jax import sweep as S
from fa_jax.config import ConfigError, traced
from fa_jax.models.two_layer import (
    TwoLayerNet,
    apply_two_layer,
    apply_two_layer_packed,
    init_two_layer,
    init_two_layer_packed,
    packed_sizes,
    readout_matrix,
    readout_matrix_packed,
)
from fa_jax.optim import OptimConfig, clip_by_run_norm, make_optimizer
from fa_jax.packing import Pack, plan_slots, run_packed
from fa_jax.segments import finite_by_run, layout, membership, per_neuron, readout, segment_sum
from fa_jax.trainer import train

D, N, STEPS = 5, 24, 30


@dataclasses.dataclass(frozen=True)
class PRun:
    """A tiny two-layer run on a dataset drawn from ``data_seed``; init from ``seed``."""

    model: TwoLayerNet = dataclasses.field(default_factory=lambda: TwoLayerNet(width=3, init_scale=0.3))
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(name="gd", lr=0.5))
    classes: int = 1  # 1: binary (logistic), c >= 2: multi-class (cross-entropy)
    seed: int = traced(0)
    data_seed: int = traced(0)

    def validate(self) -> PRun:
        return dataclasses.replace(self, model=self.model.validate(), optim=self.optim.validate())


def cfg(width, seed=0, data_seed=0, lr=0.5, clip=math.inf, kind="binary", name="gd", bucket=None, scale=0.3,
        batch=None) -> PRun:
    return PRun(model=TwoLayerNet(kind=kind, width=width, bucket=bucket, init_scale=scale),
                optim=OptimConfig(name=name, lr=lr, clip_norm=clip, batch_size=batch),
                classes=1 if kind == "binary" else 3, seed=seed, data_seed=data_seed).validate()


def data(c: PRun) -> dict:
    x = jax.random.normal(jax.random.PRNGKey(c.data_seed), (N, D))
    if c.classes == 1:
        return {"x": x, "y": jnp.where(x[:, 0] + 0.5 * x[:, 1] > 0, 1.0, -1.0)}
    return {"x": x, "y": jnp.argmax(x[:, : c.classes], axis=1)}


def _loss(out, y, classes):  # out (samples, [runs,] outputs)
    if classes == 1:
        return jax.nn.softplus(-(y if out.ndim == 2 else y[:, None]) * out[..., 0])
    if out.ndim == 2:
        return optax.softmax_cross_entropy_with_integer_labels(out, y)
    return optax.softmax_cross_entropy_with_integer_labels(out, y[:, None])


def run_one(c: PRun, data: dict) -> dict:
    c_out = c.classes if c.classes > 1 else 1
    params = init_two_layer(jax.random.fold_in(jax.random.PRNGKey(c.seed), 2), c.model, D, c_out)
    A = readout_matrix(c.model, c_out)
    loss_fn = lambda p, x, y: _loss(apply_two_layer(p, x, A), y, c.classes)  # noqa: E731
    x, y = data["x"], data["y"]
    p, rec, bad = train(loss_fn, params, x, y, make_optimizer(c.optim), plan=(0, 10, STEPS),
                        record_fn=lambda p: jnp.mean(loss_fn(p, x, y)), **batches(c))
    return {"loss": rec, "diverged_step": bad}


def batches(c: PRun) -> dict:
    """Mini-batches drawn from the DATA seed (shared by a slot's runs), so packed runs see the same batches."""
    return {"key": jax.random.fold_in(jax.random.PRNGKey(c.data_seed), 3), "batch_size": c.optim.batch_size,
            "sampling": c.optim.sampling}


def run_slot(slot, data: dict) -> dict:
    c, seg = slot.run, slot.segments()
    c_out = c.classes if c.classes > 1 else 1
    widths = slot.packed("model.width")
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 2))(slot.packed("seed"))
    scale = slot.packed("model.init_scale") if slot.packs("model.init_scale") else c.model.init_scale
    params = init_two_layer_packed(keys, c.model.kind, widths, scale, seg, D, c_out)
    A = readout_matrix_packed(c.model.kind, widths, seg, c_out)
    loss_fn = lambda p, x, y: _loss(apply_two_layer_packed(p, x, A, seg), y, c.classes)  # noqa: E731
    x, y = data["x"], data["y"]
    p, rec, bad = train(loss_fn, params, x, y, make_optimizer(c.optim, seg), plan=(0, 10, STEPS),
                        record_fn=lambda p: jnp.mean(loss_fn(p, x, y), axis=0), segments=seg, **batches(c))
    return {"loss": rec.T, "diverged_step": bad}


def size(c: PRun) -> int:
    return int(packed_sizes(c.model.kind, c.model.width, c.classes if c.classes > 1 else 1))


PACK = Pack(fields=("model.width", "seed"), size=size, ignore=("model.bucket",))


# ----------------------------------------------------------------------------- layout and per-run pieces
def test_layout_puts_each_run_end_to_end_and_marks_the_rest_unused():
    seg = layout(jnp.asarray([3, 0, 2, 1]), 8)
    assert seg.runs == 4
    assert seg.run_of.tolist() == [0, 0, 0, 2, 2, 3, 4, 4]  # run 1 is an empty place; 4 = no run
    assert seg.local.tolist() == [0, 1, 2, 0, 1, 0, 0, 0]
    v = jnp.arange(8.0)
    assert segment_sum(v, seg).tolist() == [3.0, 0.0, 7.0, 5.0]  # unused neurons dropped
    assert per_neuron(jnp.asarray([10, 11, 12, 13]), seg, fill=-1).tolist() == [10, 10, 10, 12, 12, 13, -1, -1]
    tree = {"w": jnp.ones((8, 2)).at[4, 1].set(jnp.nan), "count": jnp.asarray(3)}
    assert finite_by_run(tree, seg).tolist() == [True, True, False, True]


def test_the_readout_keeps_a_non_finite_run_to_itself():
    """Finite activations: exactly h @ A^T. An inf in run 1's neuron: run 1's outputs are NaN, runs 0 and 2's
    exactly the finite read-out, and the gradient of a loss summed over all runs stays finite on runs 0 and 2's
    neurons (a dense matmul: NaN in both)."""
    seg = layout(jnp.asarray([2, 3, 2]), 8)
    # two outputs per run, random weights on the run's own neurons only
    A = jax.random.normal(jax.random.PRNGKey(0), (6, 8)) * jnp.repeat(membership(seg), 2, axis=0)
    h = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
    np.testing.assert_array_equal(readout(h, A, seg), h @ A.T)
    bad = h.at[2, 3].set(jnp.inf)
    out = readout(bad, A, seg)
    assert np.all(np.isnan(out[:, 2:4]))
    np.testing.assert_array_equal(out[:, [0, 1, 4, 5]], (h @ A.T)[:, [0, 1, 4, 5]])
    assert np.all(np.isnan((bad @ A.T)[:, [0, 1, 4, 5]][2]))  # the dense matmul spreads it (inf * 0)
    others = [0, 1, 5, 6]  # the neurons of runs 0 and 2
    g = jax.grad(lambda h: jnp.sum(jax.nn.softplus(readout(h, A, seg))))(bad)  # run 1's loss is NaN
    assert np.all(np.isfinite(g[:, others]))
    dense = jax.grad(lambda h: jnp.sum(jax.nn.softplus(h @ A.T)))(bad)
    assert not np.all(np.isfinite(dense[:, others]))
    # finite activations, a NaN cotangent of run 1 only (a finite loss with a NaN gradient, e.g. sqrt at 0):
    # run 1's neurons get NaN (it diverges, as alone), the others exactly their gradient
    _, vjp = jax.vjp(lambda h: readout(h, A, seg), h)
    ct = jnp.ones((4, 6)).at[0, 2].set(jnp.nan)
    (dh,) = vjp(ct)
    assert np.all(np.isnan(dh[:, 2:5]))
    np.testing.assert_array_equal(dh[:, others], (jnp.ones((4, 6)).at[:, 2:4].set(0) @ A)[:, others])


@pytest.mark.parametrize("kind,classes", [("binary", 1), ("multiclass", 3)])
def test_packed_init_and_readout_are_each_runs_own_bit_for_bit(kind, classes):
    widths = [2, 5, 1]
    outs = 1 if kind == "binary" else classes
    capacity = int(np.sum(packed_sizes(kind, jnp.asarray(widths), classes))) + 3

    @jax.jit  # one program (eager, every small op compiles on its own)
    def packed(keys, widths):
        seg = layout(packed_sizes(kind, widths, classes), capacity)
        return (init_two_layer_packed(keys, kind, widths, 0.3, seg, D, classes),
                readout_matrix_packed(kind, widths, seg, classes))

    keys = jnp.stack([jax.random.PRNGKey(s) for s in (7, 8, 9)])
    p, A = packed(keys, jnp.asarray(widths))
    sizes = packed_sizes(kind, jnp.asarray(widths), classes)
    start = 0
    for k, m in enumerate(widths):
        net = TwoLayerNet(kind=kind, width=m, init_scale=0.3).validate()
        ref, ref_A = jax.jit(lambda key, net=net: (init_two_layer(key, net, D, classes),
                                                   readout_matrix(net, classes)))(keys[k])
        n = int(sizes[k])
        np.testing.assert_array_equal(p["w"][start:start + n], ref["w"])
        np.testing.assert_array_equal(p["b"][start:start + n], ref["b"])
        np.testing.assert_array_equal(A[k * outs:(k + 1) * outs, start:start + n], ref_A)
        assert not np.any(np.asarray(A[k * outs:(k + 1) * outs, :start]))
        assert not np.any(np.asarray(A[k * outs:(k + 1) * outs, start + n:]))
        start += n
    assert not np.any(np.asarray(p["w"][start:]))  # unused neurons start (and stay) at zero


def test_per_run_clipping_is_optax_global_norm_run_by_run():
    seg = layout(jnp.asarray([2, 3, 1]), 7)
    # run 0 above the limit, run 1 far above, run 2 below it (left unchanged); neuron 6 is unused
    g = {"w": jax.random.normal(jax.random.PRNGKey(0), (7, 4)) * jnp.asarray([1, 1, 9, 9, 9, 0.1, 0])[:, None],
         "b": jnp.arange(7.0) * jnp.asarray([1, 1, 1, 1, 1, 0.01, 1])}
    got = jax.jit(lambda g: clip_by_run_norm(2.0, seg).update(g, optax.EmptyState())[0])(g)
    clip = jax.jit(lambda own: optax.clip_by_global_norm(2.0).update(own, optax.EmptyState())[0])
    for k, (a, b) in enumerate([(0, 2), (2, 5), (5, 6)]):
        own = {n: v[a:b] for n, v in g.items()}
        want = clip(own)
        for n in g:
            np.testing.assert_allclose(got[n][a:b], want[n], rtol=1e-6)
    norms = [float(jnp.sqrt(sum(jnp.sum(v[a:b] ** 2) for v in g.values()))) for a, b in [(0, 2), (2, 5), (5, 6)]]
    assert norms[0] > 2 and norms[1] > 2 and norms[2] < 2  # both branches of the clip are exercised
    np.testing.assert_array_equal(got["b"][5], g["b"][5])
    np.testing.assert_array_equal(got["b"][6], g["b"][6])  # the unused neuron is left alone


# ----------------------------------------------------------------------------- the packed trainer
def test_a_diverging_run_freezes_alone():
    """Run 1's quadratic loss has a step that overflows: it stops at its last finite weights and its later records
    are NaN; runs 0 and 2 train on, each as it does alone."""
    seg = layout(jnp.asarray([2, 2, 3]), 8)
    scale = jnp.asarray([1.0, 1e19, 0.5])
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 3))

    def loss(p, xb, yb):  # (samples, runs): s_k * mean over the run's neurons of (x . w_j)^2
        z = jnp.square(xb @ p["w"].T)  # (samples, neurons)
        return segment_sum(z.T, seg).T * scale

    w0 = jax.random.normal(jax.random.PRNGKey(2), (8, 3))
    p, rec, bad = train(loss, {"w": w0}, x, jnp.zeros(6), optax.sgd(0.01), plan=(0, 2, 5, 20),
                        record_fn=lambda p: jnp.mean(loss(p, x, None), axis=0), segments=seg)
    assert bad[0] == -1 and bad[2] == -1 and 0 <= int(bad[1]) <= 5
    assert np.all(np.isnan(rec[-1, 1])) and np.all(np.isfinite(rec[:, [0, 2]]))
    assert np.all(np.isfinite(p["w"]))
    for k, (a, b) in enumerate([(0, 2), (4, 7)]):
        kk = (0, 2)[k]
        one = lambda q, xb, yb, kk=kk: jnp.sum(jnp.square(xb @ q["w"].T), axis=1) * scale[kk]  # noqa: E731
        q, r, bad1 = train(one, {"w": w0[a:b]}, x, jnp.zeros(6), optax.sgd(0.01), plan=(0, 2, 5, 20),
                           record_fn=lambda q: jnp.mean(one(q, x, None)))
        assert int(bad1) == -1
        np.testing.assert_allclose(p["w"][a:b], q["w"], rtol=1e-5)
        np.testing.assert_allclose(rec[:, kk], r, rtol=1e-5)


# ----------------------------------------------------------------------------- planning
def test_slots_respect_capacity_and_keep_unlike_runs_apart():
    cfgs = [cfg(m, seed=s) for m in (1, 2, 4) for s in (0, 1)] + [cfg(2, lr=0.1), cfg(1, data_seed=1)]
    plan = plan_slots(cfgs, PACK)
    assert sorted(i for m in plan.members for i in m) == list(range(len(cfgs)))
    for slot, members in zip(plan.slots, plan.members, strict=True):
        assert sum(slot.sizes) <= slot.capacity == 8  # the largest run: width 4, two sides
        assert len({(cfgs[i].optim.lr, cfgs[i].data_seed) for i in members}) == 1
        assert slot.sizes[: len(members)] == tuple(size(cfgs[i]) for i in members)
    assert len({S.static_key(s) for s in plan.slots}) == 1  # one program for every slot
    assert plan_slots(cfgs, PACK).members == plan.members  # deterministic
    assert plan.fill == sum(size(c) for c in cfgs) / (8 * len(plan.slots))


def test_the_default_capacity_computes_the_fewest_neurons():
    """One run each of widths 1, 4, 16 (2, 8, 32 neurons): slots as wide as the largest run would compute 64
    neurons for 42; one slot of 42 computes 42. Many equal runs keep slots as wide as one run."""
    plan = plan_slots([cfg(1), cfg(4), cfg(16)], PACK)
    assert [s.capacity for s in plan.slots] == [42] and plan.fill == 1.0
    plan = plan_slots([cfg(4, seed=s) for s in range(12)], PACK)
    assert plan.slots[0].capacity == 8 and len(plan.slots) == 12
    fixed = plan_slots([cfg(1), cfg(4), cfg(16)], dataclasses.replace(PACK, capacity=32))
    assert [s.capacity for s in fixed.slots] == [32, 32] and fixed.members == [(0, 1), (2,)]


def test_bad_packing_is_named_before_anything_compiles():
    cfgs = [cfg(1), cfg(4)]
    traces = S.STATS.traces
    with pytest.raises(ConfigError, match="pack.capacity"):
        plan_slots(cfgs, dataclasses.replace(PACK, capacity=4))
    with pytest.raises(ConfigError, match="pack.fields"):
        plan_slots(cfgs, dataclasses.replace(PACK, fields=("model.widht",)))
    with pytest.raises(ConfigError, match="pack.ignore"):
        plan_slots(cfgs, dataclasses.replace(PACK, ignore=("seed",)))
    with pytest.raises(ConfigError, match="pack.fields"):  # the data stage reads data_seed: not packable
        run_packed(run_slot, cfgs, dataclasses.replace(PACK, fields=("model.width", "data_seed")), data=data)
    with pytest.raises(ConfigError, match="pack.ignore"):  # a typo, and a non-leaf path
        plan_slots(cfgs, dataclasses.replace(PACK, ignore=("model.buckett",)))
    with pytest.raises(ConfigError, match="pack.ignore"):
        plan_slots(cfgs, dataclasses.replace(PACK, ignore=("model",)))
    with pytest.raises(ConfigError, match="run_slot.*slot.run.model.width"):  # the first run's width for all
        run_packed(run_slot_reading_run_width, cfgs, PACK, data=data)
    assert S.STATS.traces == traces


def run_slot_reading_run_width(slot, data: dict) -> dict:
    """A mistake run_packed refuses: the width read from slot.run (the slot's first run's) instead of packed."""
    out = run_slot(slot, data)
    return {**out, "width": slot.run.model.width * jnp.ones((slot.places,))}


# ----------------------------------------------------------------------------- packed == separate
@pytest.mark.parametrize("kind,name,clip", [("binary", "gd", math.inf), ("multiclass", "adam", 0.05)])
def test_packed_runs_equal_separate_runs_float64(x64, kind, name, clip):
    """Widths 1..5 and two seeds on two datasets; Adam with per-run clipping that binds (multi-class)."""
    cfgs = [cfg(m, seed=s, data_seed=ds, kind=kind, name=name, clip=clip, lr=0.05 if name == "adam" else 0.5,
                bucket=5) for ds in (0, 1) for m in (1, 2, 3, 5) for s in (0, 1)]  # reference: one padded program
    ref = S.run_sweep(run_one, cfgs, data=data)
    got = run_packed(run_slot, cfgs, PACK, data=data)
    assert len(plan_slots(cfgs, PACK).slots) < len(cfgs)  # runs were packed
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g["loss"], r["loss"], rtol=1e-10)
        assert int(g["diverged_step"]) == -1 and not g["diverged"]
        assert r["loss"][-1] < 0.9 * r["loss"][0]  # trained


def test_new_widths_in_the_same_slot_shape_do_not_recompile_and_a_rerun_reloads(tmp_path):
    pack = dataclasses.replace(PACK, capacity=12, places=3)
    a = [cfg(m, seed=s) for m in (1, 2) for s in (0, 1, 2)]
    b = [cfg(m, seed=s) for m in (3, 1) for s in (0, 1)]
    run_packed(run_slot, a, pack, data=data)
    traces = S.STATS.traces
    got = run_packed(run_slot, b, pack, data=data)
    assert S.STATS.traces == traces
    first = run_packed(run_slot, b, pack, data=data, out_dir=tmp_path)
    loaded = S.STATS.chunks_loaded
    again = run_packed(run_slot, b, pack, data=data, out_dir=tmp_path)
    assert S.STATS.chunks_loaded > loaded
    for x, y, z in zip(got, first, again, strict=True):
        np.testing.assert_array_equal(y["loss"], z["loss"])
        np.testing.assert_allclose(x["loss"], y["loss"], rtol=1e-6)


def doc_reference(c, data):
    """The docs block's run alone (unpacked; padded to its bucket: one program for every width)."""
    params = init_two_layer(jax.random.PRNGKey(c.seed), c.model, 16, 1)
    A = readout_matrix(c.model, 1)
    loss = lambda p, x, y: jax.nn.softplus(-y * apply_two_layer(p, x, A)[:, 0])  # noqa: E731
    _, rec, _ = train(loss, params, data["x"], data["y"], make_optimizer(c.optim), plan=(0, c.steps),
                      record_fn=lambda p: jnp.mean(loss(p, data["x"], data["y"])))
    return {"loss": rec}


def test_the_sweeps_doc_example_runs(tmp_path, monkeypatch):
    """docs/sweeps.md's packing block, verbatim: 12 runs of widths 2, 8, 32 in 4 full slots; every run equals its
    separate run (the same net, unpacked) and trained."""
    from conftest import run_doc_block

    monkeypatch.chdir(tmp_path)
    ns = run_doc_block("sweeps.md", "### Widths packed on one neuron axis")
    assert len(ns["plan"].slots) == 4 and ns["plan"].fill == 1.0
    padded = [dataclasses.replace(c, model=dataclasses.replace(c.model, bucket=32)) for c in ns["grid"]]
    ref = S.run_sweep(doc_reference, padded, data=ns["draw"])
    for r, want in zip(ns["results"], ref, strict=True):
        np.testing.assert_allclose(r["loss"], want["loss"], rtol=1e-5)
        assert r["loss"][-1] < 0.75 * r["loss"][0]  # trained


def test_mini_batch_runs_that_share_their_batches_pack(x64):
    """SGD (b = 7 of 24, epoch sampling) with the batches drawn from the data seed: the weighted per-run objective
    of the packed trainer (full batches and a partial last one) equals the separate runs."""
    # 24 = 3 x 7 + 3: three full batches and a partial last one per epoch
    cfgs = [cfg(m, seed=s, name="sgd", batch=7, lr=0.3, bucket=3) for m in (1, 3, 2) for s in (0, 1)]
    ref = S.run_sweep(run_one, cfgs, data=data)
    got = run_packed(run_slot, cfgs, PACK, data=data)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g["loss"], r["loss"], rtol=1e-10)
        assert r["loss"][-1] < 0.9 * r["loss"][0]


def test_a_diverging_run_is_marked_alone_end_to_end():
    """A packed float field (the init scale): the run initialised at 1e38 overflows at its first step; it alone is
    marked diverged (its outputs NaN), its slot-mates equal their separate runs."""
    pack = dataclasses.replace(PACK, fields=("model.width", "seed", "model.init_scale"))
    cfgs = [cfg(2, seed=0, bucket=3), cfg(3, seed=1, scale=1e38, bucket=3), cfg(1, seed=2, bucket=3),
            cfg(2, seed=3, scale=0.1, bucket=3)]
    plan = plan_slots(cfgs, pack)
    assert any(1 in m and len(m) > 1 for m in plan.members)  # the diverging run shares its slot
    ref = S.run_sweep(run_one, cfgs, data=data)
    got = run_packed(run_slot, cfgs, pack, data=data)
    assert [bool(g["diverged"]) for g in got] == [False, True, False, False]
    assert int(got[1]["diverged_step"]) == 0 and np.all(np.isnan(got[1]["loss"]))
    assert bool(ref[1]["diverged"]) and int(ref[1]["diverged_step"]) == 0
    for i in (0, 2, 3):
        np.testing.assert_allclose(got[i]["loss"], ref[i]["loss"], rtol=1e-5)


_TWO_DEVICES = """
import json
import jax
import numpy as np
import test_packing as T
from fa_jax.packing import run_packed

devices = tuple(jax.local_devices())
assert len(devices) == 2
cfgs = [T.cfg(m, seed=s, data_seed=ds) for ds in (0, 1) for m in (1, 2, 4) for s in (0, 1, 2)]
res = run_packed(T.run_slot, cfgs, T.PACK, data=T.data, devices=devices)
print(json.dumps({"loss": np.stack([r["loss"] for r in res]).tolist()}))
"""


def test_two_devices_split_the_slots():
    """Slots sharded over a 2-device mesh: the same numbers as one device, to float reassociation (float32)."""
    from conftest import run_on_devices

    doc = run_on_devices(_TWO_DEVICES, 2)
    cfgs = [cfg(m, seed=s, data_seed=ds) for ds in (0, 1) for m in (1, 2, 4) for s in (0, 1, 2)]
    one = run_packed(run_slot, cfgs, PACK, data=data, devices=jax.local_devices()[:1])
    np.testing.assert_allclose(np.asarray(doc["loss"]), np.stack([r["loss"] for r in one]), rtol=1e-5)


def test_other_packed_fields_are_another_program_and_a_float_field_stays_float():
    """Packing the init scale too (a float field; one run's is the int 1) is another program, not the cached one
    of the same shapes and slot count (the packed fields are part of a slot's static key); the int 1 is stacked
    as a float; both equal the separate runs."""
    same = [cfg(2, seed=0, bucket=2), cfg(1, seed=1, bucket=2), cfg(2, seed=2, bucket=2)]
    mixed = [cfg(2, seed=0, bucket=2), cfg(1, seed=1, scale=1, bucket=2), cfg(2, seed=2, scale=0.1, bucket=2)]
    base_pack = dataclasses.replace(PACK, capacity=10, places=3)
    pack = dataclasses.replace(base_pack, fields=("model.width", "seed", "model.init_scale"))
    assert len(plan_slots(same, base_pack).slots) == len(plan_slots(mixed, pack).slots) == 1
    assert all(isinstance(v, float) for v in plan_slots(mixed, pack).slots[0].values.model__init_scale)
    for cfgs, p in ((same, base_pack), (mixed, pack)):  # one slot each: equal shapes, other packed fields
        got = run_packed(run_slot, cfgs, p, data=data)
        for r, g in zip(S.run_sweep(run_one, cfgs, data=data), got, strict=True):
            np.testing.assert_allclose(g["loss"], r["loss"], rtol=1e-5)


def test_the_cpu_default_chunk_holds_a_bounded_number_of_neurons():
    """On CPU run_packed caps a chunk at CPU_CHUNK_NEURONS packed neurons per device (unless max_chunk is given):
    slots of 8 neurons -> 512 per chunk on one device, 1 024 on two; a slot wider than the budget still runs."""
    from fa_jax.packing import CPU_CHUNK_NEURONS, default_max_chunk

    cpu = jax.local_devices()[:1]
    plan = plan_slots([cfg(4, seed=s) for s in range(3)], PACK)
    assert plan.slots[0].capacity == 8 and default_max_chunk(plan, cpu) == CPU_CHUNK_NEURONS // 8
    assert default_max_chunk(plan, cpu * 2) == 2 * (CPU_CHUNK_NEURONS // 8)
    wide = plan_slots([cfg(4, seed=0)], dataclasses.replace(PACK, capacity=CPU_CHUNK_NEURONS + 1))
    assert default_max_chunk(wide, cpu) == 1
