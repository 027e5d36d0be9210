"""Generated data shared by runs (``data=``; fa_jax.sweep module docstring, "Generated data shared by runs").

A tiny user experiment: a one-hidden-layer tanh net (d = 16 inputs, 8 neurons, fixed head) fitted by 20 GD steps
to a random teacher, its training set drawn from ``data_seed``, its init from ``seed``, its learning rate traced.
Split into a data stage ``toy_data(cfg)`` and the run proper ``toy_run(cfg, data)``, a sweep draws the data once
per block of runs on one data seed: each run equals ``toy_run(cfg, toy_data(cfg))`` run alone (float64: to 1e-12
relative; float32 on two devices: to 1e-6), in one compiled program whose text holds the data per block, never per
run. The fields that decide sharing are read off the data stage's traced program; the block layout pads and
splits as documented and is part of every chunk name (a rerun reloads, a sweep without ``data`` names its chunks
as before); a bad ``data`` is an error naming it, before anything compiles.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_doc_block, run_on_devices, write_spec

from fa_jax import sweep as S
from fa_jax.config import traced
from fa_jax.experiments import Experiment, describe

N, D, H = 64, 16, 8  # 64x16: the data's shape in a program's text


@dataclasses.dataclass(frozen=True)
class Toy:
    n: int = N
    d: int = D
    steps: int = 20
    data_seed: int = traced(0)
    seed: int = traced(0)
    lr: float = traced(0.1)

    def validate(self):
        return self


def toy_data(cfg: Toy) -> dict:
    """x (samples, d) ~ N(0, 1), y = tanh(x w*) for a teacher w* (d,): both from ``data_seed`` only."""
    key = jax.random.PRNGKey(cfg.data_seed)
    x = jax.random.normal(key, (cfg.n, cfg.d))
    return {"x": x, "y": jnp.tanh(x @ jax.random.normal(jax.random.fold_in(key, 1), (cfg.d,)))}


def toy_run(cfg: Toy, data) -> dict:
    """``steps`` GD steps on mean (tanh(x W) a - y)^2, W (d, 8) ~ 0.1 N(0, 1) from ``seed``, a = 1/8."""
    w = 0.1 * jax.random.normal(jax.random.PRNGKey(cfg.seed), (cfg.d, H), data["x"].dtype)
    a = jnp.full((H,), 1.0 / H, data["x"].dtype)

    def loss(w):
        return jnp.mean((jnp.tanh(data["x"] @ w) @ a - data["y"]) ** 2)

    def step(w, _):
        return w - cfg.lr * jax.grad(loss)(w), loss(w)

    w, losses = jax.lax.scan(step, w, None, length=cfg.steps)
    return {"w": w, "loss": losses}


def data_reading_lr(cfg: Toy) -> dict:
    """A data stage that (oddly) scales its inputs by the learning rate: lr decides sharing too."""
    return {"x": cfg.lr * toy_data(cfg)["x"], "y": toy_data(cfg)["y"]}


# two data seeds x 3 init seeds x 2 learning rates, and one run alone on a third data seed
CFGS = [Toy(data_seed=ds, seed=s, lr=lr) for ds in (0, 1) for s in range(3) for lr in (0.05, 0.1)] + [
    Toy(data_seed=2, seed=0)]
EXPERIMENT = Experiment(name="toy-data", config=Toy, run=toy_run, data=toy_data)


def _alone(cfg: Toy) -> dict:
    return {k: np.asarray(v) for k, v in toy_run(cfg, toy_data(cfg)).items()}


def test_the_fields_that_decide_sharing_are_read_off_the_data_stage():
    assert S.data_fields(toy_data, CFGS[0]) == ("data_seed",)
    assert S.data_fields(data_reading_lr, CFGS[0]) == ("data_seed", "lr")
    assert S.data_fields(lambda cfg: {"x": jnp.ones((cfg.n, cfg.d))}, CFGS[0]) == ()  # one draw for the group


def test_blocks_pad_and_split_as_documented():
    (p,) = S.plan_chunks(toy_run, CFGS, data=toy_data, files=False)
    # 3 data keys (6, 6, 1 runs): blocks of 3, the largest that pads the group to <= 1.25 slots per run (blocks of
    # 6 would give 18 slots for 13 runs); the lone run's block padded with itself
    assert (p.block, p.size, p.runs) == (3, 15, tuple(range(13)))
    assert p.slots == tuple(range(13)) + (12,) * 2
    # chunk_size 4: a whole number of blocks, 3; each key's runs in pieces; a piece's spare slots repeat its last run
    plans = S.plan_chunks(toy_run, CFGS, data=toy_data, files=False, chunk_size=4)
    assert [(p.runs, p.slots) for p in plans] == [
        ((0, 1, 2), (0, 1, 2)), ((3, 4, 5), (0, 1, 2)), ((6, 7, 8), (0, 1, 2)), ((9, 10, 11), (0, 1, 2)),
        ((12,), (0, 0, 0))]
    # keys of 4 and 3 runs: blocks of 4 (8 slots for 7 runs), the short block's spare slot repeating its last run
    seven = [Toy(data_seed=0, seed=s) for s in range(4)] + [Toy(data_seed=1, seed=s) for s in range(3)]
    assert [(p.block, p.slots) for p in S.plan_chunks(toy_run, seven, data=toy_data, files=False, chunk_size=4)] == [
        (4, (0, 1, 2, 3)), (4, (0, 1, 2, 2))]
    # a data stage that reads lr: 4 keys (data seed, lr) of 3 runs (the init seeds) and one of 1
    (q,) = S.plan_chunks(toy_run, CFGS, data=data_reading_lr, files=False)
    assert (q.block, q.size) == (3, 15)
    # the smallest chunk is one block per device (chunk_size 1 -> blocks of one run)
    assert {p.block for p in S.plan_chunks(toy_run, CFGS, data=toy_data, files=False, chunk_size=1)} == {1}


def test_every_run_equals_its_own_draw_float64(x64):
    before = S.STATS.traces
    res = S.run_sweep(toy_run, CFGS, data=toy_data)
    assert S.STATS.traces - before == 1  # one program for the group
    for cfg, r in zip(CFGS, res, strict=True):
        ref = _alone(cfg)
        assert ref["w"].dtype == np.float64
        np.testing.assert_allclose(r["w"], ref["w"], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(r["loss"], ref["loss"], rtol=1e-12)
    # a run's numbers do not depend on its block or chunk: the same runs, chunked by 4
    again = S.run_sweep(toy_run, CFGS, data=toy_data, chunk_size=4)
    for r, q in zip(res, again, strict=True):
        np.testing.assert_allclose(q["w"], r["w"], rtol=1e-12, atol=1e-14)
    # and the training learned: the loss fell on every run
    assert all(r["loss"][-1] < 0.9 * r["loss"][0] for r in res)


def test_the_program_holds_one_draw_per_block_never_one_per_run():
    (p,) = S.plan_chunks(toy_run, CFGS, data=toy_data, files=False)
    u = p.size // p.block  # 5 blocks of 3
    low = S._lower(toy_run, p.key, CFGS[0], p.size, tuple(jax.local_devices()),
                   data=S._DataStage(toy_data, p.block))
    text = low.lowered.as_text()
    assert f"tensor<{u}x{N}x{D}xf32>" in text  # the data: one (n, d) draw per block
    assert f"tensor<{p.size}x{N}x{D}xf32>" not in text and f"tensor<{u}x{p.block}x{N}x{D}xf32>" not in text
    # without data the per-run program batches the draw over every slot
    per_run = S._lower(lambda cfg: toy_run(cfg, toy_data(cfg)), p.key, CFGS[0], p.size, tuple(jax.local_devices()))
    assert f"tensor<{p.size}x{N}x{D}xf32>" in per_run.lowered.as_text()


def test_resume_reloads_and_the_layout_names_the_chunks(tmp_path):
    first = S.run_sweep(toy_run, CFGS, data=toy_data, out_dir=tmp_path, chunk_size=4)
    loaded0, run0 = S.STATS.chunks_loaded, S.STATS.chunks_run
    again = S.run_sweep(toy_run, CFGS, data=toy_data, out_dir=tmp_path, chunk_size=4)
    assert (S.STATS.chunks_loaded - loaded0, S.STATS.chunks_run - run0) == (5, 0)
    for r, q in zip(first, again, strict=True):
        np.testing.assert_array_equal(q["w"], r["w"])
    with_data = {p.file for p in S.plan_chunks(toy_run, CFGS, data=toy_data, chunk_size=4)}
    # the same runs without a data stage: other programs, other names
    without = {p.file for p in S.plan_chunks(lambda cfg: toy_run(cfg, toy_data(cfg)), CFGS, chunk_size=4)}
    assert not with_data & without
    # the manifest records the layout; another process rebuilds the same plans from it
    plans = S.plan_chunks(toy_run, CFGS, data=toy_data, chunk_size=4)
    doc = S.plan_json(plans, precision=True)
    assert doc[4]["block"] == 3 and doc[4]["slots"] == [0, 0, 0]
    rebuilt = [S.plan_from_json(d) for d in doc]
    assert rebuilt == plans


def test_bad_data_is_named_before_anything_compiles():
    before = S.STATS.traces
    with pytest.raises(TypeError, match=r"invalid data=3: allowed a callable data\(cfg\)"):
        S.plan_chunks(toy_run, CFGS, data=3)

    def broken(cfg):
        raise KeyError("x")

    with pytest.raises(TypeError, match=r"invalid data=.*broken: data\(cfg\) cannot be traced"):
        S.run_sweep(toy_run, CFGS, data=broken)
    with pytest.raises(TypeError, match="invalid Experiment data=1"):
        Experiment(name="t", config=Toy, run=toy_run, data=1)
    plans = S.plan_chunks(lambda cfg: toy_run(cfg, toy_data(cfg)), CFGS, files=False, chunk_size=13)
    with pytest.raises(ValueError, match="invalid plans: made without a data stage"):
        S.run_sweep(toy_run, CFGS, data=toy_data, plans=plans)
    assert S.STATS.traces == before


def test_a_sweep_file_experiment_with_a_data_stage(tmp_path):
    from fa_jax.results import load_results
    from fa_jax.sweepfile import run_spec

    assert describe(EXPERIMENT)["data"] == f"{__name__}:toy_data"
    spec = write_spec(tmp_path, f"""
        experiment = "{__name__}:EXPERIMENT"
        name = "toy"
        [axes]
        data_seed = [0, 1]
        lr = [0.05, 0.1, 0.2]
        """)
    out = run_spec(spec, tmp_path / "out", progress=False)
    assert out["complete"] and out["manifest"]["experiment"]["data"] == f"{__name__}:toy_data"
    assert [p["block"] for p in out["manifest"]["plan"]] == [3]
    ds = load_results(tmp_path / "out")
    ref = np.stack([[_alone(Toy(data_seed=s, lr=lr))["w"] for lr in (0.05, 0.1, 0.2)] for s in (0, 1)])
    np.testing.assert_allclose(ds["w"].values, ref, rtol=1e-5, atol=1e-6)


_TWO_DEVICES = """
import json
import jax
import numpy as np
import test_sweep_data as T
from fa_jax import sweep as S

devices = tuple(jax.local_devices())
assert len(devices) == 2
plans = S.plan_chunks(T.toy_run, T.CFGS, data=T.toy_data, devices=devices, files=False)
res = S.run_sweep(T.toy_run, T.CFGS, data=T.toy_data, devices=devices)
print(json.dumps({"w": np.stack([r["w"] for r in res]).tolist(), "blocks": [p.block for p in plans],
                  "sizes": [p.size for p in plans]}))
"""


def test_two_devices_split_the_blocks():
    """On a 2-device mesh each device holds whole blocks (block <= a device's share): the same numbers as one
    device, to float reassociation (float32)."""
    doc = run_on_devices(_TWO_DEVICES, 2)
    assert doc["blocks"] == [3] and doc["sizes"] == [18]  # 5 blocks of 3 rounded up to 3 per device
    ref = np.stack([_alone(c)["w"] for c in CFGS])
    np.testing.assert_allclose(np.asarray(doc["w"]), ref, rtol=1e-5, atol=1e-6)


def test_the_sweeps_doc_example_runs(tmp_path, monkeypatch):
    """docs/sweeps.md's data-stage block, verbatim: two draws of 12 runs, every run equal to its own draw."""
    monkeypatch.chdir(tmp_path)
    ns = run_doc_block("sweeps.md", "### Generated data shared by runs")
    assert ns["data_fields"](ns["draw"], ns["grid"][0]) == ("data_seed",)
    for cfg, r in zip(ns["grid"], ns["results"], strict=True):
        alone = float(ns["run"](cfg, ns["draw"](cfg))["loss"])
        np.testing.assert_allclose(float(r["loss"]), alone, rtol=1e-5)
    assert float(np.mean([r["loss"] for r in ns["results"]])) < np.log(2.0)  # trained: below the chance loss
    plans = S.plan_chunks(ns["run"], ns["grid"], data=ns["draw"], files=False)
    assert [(p.block, p.size) for p in plans] == [(12, 24)]


def test_layout_sizes_are_whole_blocks_per_device_for_any_key_counts():
    """The automatic size (every block in one chunk, within max_chunk) and the block it implies agree on any
    device count: a whole number of blocks per device, every run in exactly one slot group, padding bounded by
    BLOCK_WASTE per chunk-full of keys (review of the first version: 12 + 1 runs on 2 devices gave 28 slots of
    blocks of 12, which no device share holds)."""
    import itertools
    import random

    rng = random.Random(0)
    cases = [[12, 1], [100] + [1] * 100, [6, 6, 1], [3] * 5, [1] * 7, [5, 2, 2, 9]]
    cases += [[rng.randint(1, 20) for _ in range(rng.randint(1, 6))] for _ in range(60)]
    for counts, nd, cap in itertools.product(cases, (1, 2, 3, 8), (None, 16)):
        it = iter(range(sum(counts)))
        blocks = [[next(it) for _ in range(c)] for c in counts]
        idx = [i for b in blocks for i in b]
        start = S._round_up(min(len(idx), len(idx) if cap is None else cap), nd)
        size = S._data_auto_size(blocks, start, nd, cap)
        g = S._block_of(size, nd, S._preferred_block(blocks))
        assert size % (nd * g) == 0 and (cap is None or size <= max(cap, nd * g)), (counts, nd, cap, size, g)
        chunks = S._layout(idx, blocks, size, nd)
        assert sorted(i for runs, _ in chunks for i in runs) == idx  # every run once
        for runs, slots in chunks:
            assert len(slots) == size and set(slots) == set(range(len(runs)))
            for u in range(size // g):  # a block never mixes data keys
                keys = {next(k for k, b in enumerate(blocks) if runs[j] in b) for j in slots[u * g:(u + 1) * g]}
                assert len(keys) == 1
    # bounded padding: 100 runs on one seed beside 100 lone seeds share nothing (block 1), not 10 200 slots
    it = iter(range(200))
    wide = [[next(it) for _ in range(100)]] + [[next(it)] for _ in range(100)]
    assert S._preferred_block(wide) == 1 and S._preferred_block([[0] * 6, [0] * 6, [0]]) == 3


def test_a_recorded_size_the_layout_cannot_use_is_named():
    key = next(iter(S.group_configs(CFGS)))
    with pytest.raises(S.LayoutError, match="not a whole number of blocks"):
        S.plan_chunks(toy_run, CFGS, data=toy_data, files=False, sizes={key: 11})


def run_with_both(cfg, arrays=None, data=None):
    """A run function for sweeps with both shared inputs and a data stage (arrays None: the group has none)."""
    out = toy_run(cfg, data)
    return out if arrays is None else {**out, "shift": jnp.sum(arrays["z"])}


def test_shared_and_data_together_and_an_empty_sweep():
    """The data always arrive by keyword: a group whose shared(cfg) is {} gets run(cfg, data=...) with its arrays
    left at the default; with arrays, run(cfg, arrays, data=...). An empty sweep with data returns []."""
    none = S.run_sweep(run_with_both, CFGS[:3], data=toy_data, shared=lambda cfg: {})
    some = S.run_sweep(run_with_both, CFGS[:3], data=toy_data, shared=lambda cfg: {"z": np.ones(3, np.float32)})
    for a, b, cfg in zip(none, some, CFGS[:3], strict=True):
        np.testing.assert_allclose(a["w"], _alone(cfg)["w"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(a["w"], b["w"])
        assert "shift" not in a and float(b["shift"]) == 3.0
    assert S.run_sweep(toy_run, [], data=toy_data) == []


# ----------------------------------------------------------------------------- memory plan
@dataclasses.dataclass(frozen=True)
class BigDraw(Toy):
    n: int = 8192  # a draw of 8192 x 16 floats (0.5 MiB) against a per-run state of 16 x 8


def small_run(cfg: BigDraw, data) -> dict:
    """A run whose own memory is small beside the draw: a few GD steps on one row-block of the data."""
    return toy_run(dataclasses.replace(cfg, n=64), {k: v[:64] for k, v in data.items()})


def test_memory_plan_holds_a_whole_draw_per_block():
    """The automatic chunk size under a budget: a block holds one draw (and its generation temporaries) whatever its
    number of runs, so a chunk of fewer runs saves only the runs' own memory. Every chunk planned under a budget
    between one run's footprint and the whole group's fits it when compiled; a budget below one run's footprint
    (one run beside one draw) is refused before anything runs. (The single-footprint model shared the draw out per
    run: a few bytes short of the whole group it planned 7 runs, 2 631 188 bytes against a budget of 2 629 454.)"""
    cfgs = [BigDraw(seed=s, lr=0.1 + 0.01 * s) for s in range(8)]  # one data seed: one block of 8

    def footprint(size):
        return S._footprint(S._program(small_run, key, cfgs[0], size, dev, data=S._stage(toy_data, size, 1, 8))[0])

    key, dev = S.static_key(cfgs[0]), tuple(jax.devices()[:1])
    one, whole = footprint(1), footprint(8)
    assert one > (8192 * 16 + 8192) * 4 and whole > one  # one run holds the whole draw (x and y, float32)
    for budget in (whole - 1, (one + whole) // 2, one):
        (plan, *_) = S.plan_chunks(small_run, cfgs, devices=dev, budget=budget, data=toy_data, files=False)
        assert 1 <= plan.size < 8 and footprint(plan.size) <= budget, (plan.size, footprint(plan.size), budget)
    with pytest.raises(S.RunTooLargeError, match="one run needs"):
        S.plan_chunks(small_run, cfgs, devices=dev, budget=one - 1, data=toy_data, files=False)
