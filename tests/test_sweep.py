"""fa_jax.sweep.run_sweep with the real feature-averaging run function on a tiny config: recompile guard,
vmapped == single, key independence from grid position, padded == unpadded widths, chunking, resumption from
cached chunks, and divergence handling. A toy run function checks the grouping/ordering mechanics cheaply.

Compiles are the cost here (~10 s per static config x chunk size); see FA_PROGRAMS in conftest.py.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import fa_replace, flat, make_fa_config

from fa_jax.config import traced
from fa_jax.experiments.feature_averaging import run_feature_averaging
from fa_jax.models.two_layer import neuron_mask
from fa_jax.sweep import STATS, group_configs, run_sweep


def assert_results_close(a: dict, b: dict, rtol=1e-5, atol=1e-6, skip=()):
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if k in skip:
            continue
        x, y = fa[k], fb[k]
        assert x.shape == y.shape, k
        if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
            np.testing.assert_array_equal(x, y, err_msg=k)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=k)


def assert_results_equal(a: dict, b: dict):
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


# ----------------------------------------------------------------------------- sanity of the shared runs
def test_fa_results_sane(fa_grid3, fa_grid_configs):
    r = fa_grid3[0]
    plan = np.asarray(r["plan"])
    assert plan[0] == 0 and plan[-1] == fa_grid_configs[0].train.steps
    for name in ("loss", "test_acc", "cos_in", "flip_median"):
        assert r["records"][name].shape == plan.shape
    loss = np.asarray(r["records"]["loss"])
    np.testing.assert_allclose(loss[0], np.log(2.0), rtol=1e-3)  # tiny init: f ~ 0, loss = log 2
    assert loss[-1] < loss[0]
    assert float(r["centre_orthogonality"]) <= 1e-5
    assert not bool(r["diverged"])
    # different traced values -> different runs
    assert not np.allclose(np.asarray(fa_grid3[0]["records"]["loss"]), np.asarray(fa_grid3[1]["records"]["loss"]))


# ----------------------------------------------------------------------------- recompile guard
@pytest.fixture(scope="module")
def padded_pair(fa_grid_configs):
    """The grid's first two configs padded to 8 neurons per side (a static change: bucket 3 -> 8) as one chunk of 2,
    and the number of programs that compiled. Shared: the recompile guard's static case, and the padded side of
    padded == unpadded (against the grid's first chunk of 2, ``fa_chunked``). Nothing else compiles this program."""
    cfgs = [fa_replace(c, model__bucket=8) for c in fa_grid_configs[:2]]
    t0 = STATS.traces
    res = run_sweep(run_feature_averaging, cfgs, chunk_size=2)
    return cfgs, res, STATS.traces - t0


def test_recompile_guard(padded_pair):
    base = make_fa_config()

    def with_lrs(lrs, cfg=base):
        return [fa_replace(cfg, optim__lr=lr) for lr in lrs]

    first = run_sweep(run_feature_averaging, with_lrs([1e-3, 2e-3]))
    t0 = STATS.traces
    second = run_sweep(run_feature_averaging, with_lrs([5e-3, 7e-3]))
    assert STATS.traces == t0, "a new learning rate must not recompile"
    assert not np.allclose(np.asarray(first[0]["records"]["loss"]), np.asarray(second[0]["records"]["loss"]))
    # every traced field (seeds, init scale, noise, split, width inside its bucket) is free too
    other = [fa_replace(base, optim__lr=3e-3, model__init_scale=1e-3, data__sigma=0.5, data__n_pos=1,
                        data_seed=4, model_seed=9),
             fa_replace(base, model__width=2)]
    assert other[1].model.bucket == 3 and other[1].model.width == 2
    run_sweep(run_feature_averaging, other)
    assert STATS.traces == t0, "traced fields must not recompile"
    # a static change (the padded width, bucket 3 -> 8, at the same chunk size) must compile a new program
    assert padded_pair[2] == 1, "a static change must compile a new program"


# ----------------------------------------------------------------------------- vmapped vs single / position
def test_vmapped_equals_single(fa_grid3, fa_alone):
    assert_results_close(fa_grid3[1], fa_alone, rtol=1e-5)


def test_key_independent_of_grid_position(fa_grid3, fa_grid_configs):
    c0, _, c2 = fa_grid_configs
    stranger = fa_replace(c0, optim__lr=5e-2, data_seed=7, model_seed=3)
    shuffled = run_sweep(run_feature_averaging, [c2, stranger, c0])  # same chunk size (3), new neighbours
    assert_results_equal(shuffled[2], fa_grid3[0])
    assert_results_equal(shuffled[0], fa_grid3[2])


def test_chunking_equals_unchunked(fa_chunked, fa_grid3):
    assert len(fa_chunked) == 3
    for a, b in zip(fa_chunked, fa_grid3):
        assert_results_close(a, b, rtol=1e-5)


# ----------------------------------------------------------------------------- padded vs unpadded
@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_padded_equals_unpadded(kind, fa_grid_configs, fa_chunked, padded_pair, mc_plain):
    if kind == "binary":
        # width 3, bucket None -> 3: the grid's second config in its chunk of 2 (fa_chunked), and the same config
        # padded to bucket 8 in a chunk of 2 (padded_pair); both runs are shared with other tests
        plain_cfg, plain = fa_grid_configs[1], fa_chunked[1]
        padded_cfg, padded = padded_pair[0][1], padded_pair[1][1]
        assert padded_cfg == fa_replace(plain_cfg, model__bucket=8)
    else:
        plain_cfg, plain = mc_plain[0][0], mc_plain[1][0]
        padded_cfg = fa_replace(plain_cfg, model__bucket=8)
        padded = run_sweep(run_feature_averaging, [padded_cfg])[0]
    assert plain_cfg.model.bucket == 3 and padded_cfg.model.bucket == 8
    # the whole training trajectory: loss and every recorded metric
    for name in plain["records"]:
        a, b = np.asarray(plain["records"][name]), np.asarray(padded["records"][name])
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=0, err_msg=name)  # (a censored inf must match inf)
    assert np.asarray(plain["records"]["loss"])[-1] < np.asarray(plain["records"]["loss"])[0] - 1e-4  # it trained
    # end-of-run metrics too (the binary cosine matrix has one column per neuron: compare the real ones)
    skip = ("features/cos",) if kind == "binary" else ()
    assert_results_close(plain, padded, rtol=1e-5, atol=1e-6, skip=skip)
    if kind == "binary":
        real = np.asarray(neuron_mask(padded_cfg.model, 2)) > 0
        np.testing.assert_allclose(np.asarray(padded["features"]["cos"])[:, real],
                                   np.asarray(plain["features"]["cos"]), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- cluster buckets (k, g traced)
@pytest.fixture(scope="module")
def mc_plain():
    """Multi-class runs, unpadded (4 clusters, 4 slots): k = 4 with g = k and with g = 2 super-classes, one chunk
    of 2 (g is traced: one program). Shared by the width and the cluster padding tests."""
    cfgs = [make_fa_config("multiclass", optim__lr=0.3, model_seed=1),
            make_fa_config("multiclass", optim__lr=0.3, model_seed=1, data__groups=2)]
    return cfgs, run_sweep(run_feature_averaging, cfgs, chunk_size=2)


def _assert_cluster_padded_close(plain_cfg, plain: dict, padded: dict):
    """A run in a cluster bucket equals the unpadded run: outputs over cluster slots compare on the real ones,
    the eps grid (and the curves over it) on the unpadded grid's points, its padding repeating the end point."""
    fa, fb = flat(plain), dict(flat(padded))
    n_eps, k = len(fa["eps"]), plain_cfg.data.k
    for key, y in fb.items():
        if key == "eps" or key.endswith("/acc"):
            np.testing.assert_array_equal(y[n_eps:], y[n_eps - 1])  # the grid's end point (and its attack) repeated
            fb[key] = y[:n_eps]
    fb["features/cos"] = fb["features/cos"][:k, : fa["features/cos"].shape[1]]  # real clusters (and heads)
    # ~1e-7: the QR of the wider matrix reassociates (relative error ~1), so bounded, not compared
    assert float(fa["centre_orthogonality"]) < 1e-5 and float(fb["centre_orthogonality"]) < 1e-5
    # float32 reassociation (QR of a wider matrix) carried through 20 training steps and the attacks
    assert_results_close(fa, fb, rtol=1e-4, atol=1e-5, skip=("centre_orthogonality",))


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_cluster_bucket_equals_unpadded(kind, fa_grid_configs, fa_chunked, mc_plain):
    """k (and g) traced inside a static cluster bucket: runs of k = 4 and k = 8 share ONE program of 8 slots, and
    the k = 4 runs equal the unpadded ones (4 slots) to float32 reassociation (issue 19: the (k, d) phase diagram
    compiles one program per d and net, not per k)."""
    if kind == "binary":
        plains = [(fa_grid_configs[1], fa_chunked[1])]
    else:
        plains = list(zip(*mc_plain))
    assert all(c.data.bucket == 4 for c, _ in plains)
    padded = [fa_replace(c, data__bucket=8) for c, _ in plains]
    wide = fa_replace(plains[0][0], data__k=8, data__bucket=8, data__groups=4 if kind == "multiclass" else None)
    t0 = STATS.traces
    res = run_sweep(run_feature_averaging, [*padded, wide], chunk_size=len(padded) + 1)
    assert STATS.traces - t0 == 1, "runs of one cluster bucket must share one program"
    for (cfg, plain), r in zip(plains, res):
        assert np.asarray(plain["records"]["loss"])[-1] < np.asarray(plain["records"]["loss"])[0] - 1e-4  # trained
        _assert_cluster_padded_close(cfg, plain, r)
    # the k = 8 run is a different experiment: its radius grid is finer, its centres 8
    assert len(res[-1]["eps"]) == len(res[0]["eps"]) and len(np.unique(res[-1]["eps"])) > len(np.unique(res[0]["eps"]))
    assert np.isfinite(np.asarray(res[-1]["records"]["loss"])).all()


# ----------------------------------------------------------------------------- resume
def test_resume_from_chunks(tmp_path, fa_grid_configs):
    cfgs = fa_grid_configs[:2]
    before = dataclasses.replace(STATS)
    first = run_sweep(run_feature_averaging, cfgs, out_dir=tmp_path, tag="t")
    assert STATS.chunks_run == before.chunks_run + 1 and STATS.chunks_loaded == before.chunks_loaded
    files = os.listdir(tmp_path / "chunks")
    assert len(files) == 1 and files[0].endswith(".npz")
    mid = dataclasses.replace(STATS)
    second = run_sweep(run_feature_averaging, cfgs, out_dir=tmp_path, tag="t")
    assert STATS.chunks_run == mid.chunks_run, "a cached chunk must not be recomputed"
    assert STATS.chunks_loaded == mid.chunks_loaded + 1
    assert STATS.traces == mid.traces
    for a, b in zip(first, second):
        assert_results_equal(a, b)
    # another tag (or other traced values) does not reuse the cache
    run_sweep(run_feature_averaging, cfgs, out_dir=tmp_path, tag="u")
    assert STATS.chunks_run == mid.chunks_run + 1
    run_sweep(run_feature_averaging, [fa_replace(c, optim__lr=0.05) for c in cfgs], out_dir=tmp_path, tag="t")
    assert STATS.chunks_run == mid.chunks_run + 2
    assert len(os.listdir(tmp_path / "chunks")) == 3


# ----------------------------------------------------------------------------- divergence
def test_divergent_run_flagged_not_fatal():
    """A huge step (lr = 1e30 with weight decay 1e30) turns the weights into inf and then NaN."""
    base = make_fa_config()
    bad = fa_replace(base, optim__lr=1e30, optim__weight_decay=1e30)
    good = fa_replace(base, optim__lr=1e-2)
    res = run_sweep(run_feature_averaging, [bad, good])  # must not raise
    assert np.isnan(np.asarray(res[0]["records"]["loss"])).any()
    assert bool(res[0]["diverged"]) is True
    assert bool(res[1]["diverged"]) is False
    assert np.all(np.isfinite(np.asarray(res[1]["records"]["loss"])))


def test_exploded_loss_flagged_diverged():
    """lr = 1e38 at init scale 1, seed 10: the recorded training loss overflows to inf after the first step (other
    seeds of this tiny config peak at a finite 1e35-1e36 and fall back to 0: the guard flags non-finite values,
    test_trainer's guard tests cover the rule); the run has diverged and must be flagged, its later records NaN."""
    base = make_fa_config()
    bad = fa_replace(base, optim__lr=1e38, model__init_scale=1.0, data_seed=10, model_seed=10)
    res = run_sweep(run_feature_averaging, [bad, fa_replace(base, optim__lr=1e-2)])
    loss = np.asarray(res[0]["records"]["loss"])
    assert not np.all(np.isfinite(loss))  # the trajectory blew up
    assert bool(res[0]["diverged"]) is True, f"recorded loss {loss} but diverged=False"
    assert bool(res[1]["diverged"]) is False


# ----------------------------------------------------------------------------- engine mechanics (toy run_fn)
@dataclasses.dataclass(frozen=True)
class Toy:
    n: int = 3
    a: float = traced(1.0)
    seed: int = traced(0)


def toy_run(cfg: Toy) -> dict:
    x = jnp.arange(cfg.n, dtype=jnp.float32) * cfg.a
    noise = jax.random.normal(jax.random.PRNGKey(cfg.seed), ())
    return {"x": x, "nested": {"s": jnp.sum(x), "noise": noise}, "diverged": cfg.a > 100.0}


def test_group_configs_first_seen_order():
    cfgs = [Toy(3, 1.0), Toy(5, 1.0), Toy(3, 2.0), Toy(5, 3.0, 1), Toy(4)]
    groups = group_configs(cfgs)
    assert list(groups.values()) == [[0, 2], [1, 3], [4]]


def test_toy_sweep_order_values_and_padding():
    cfgs = [Toy(3, 1.0), Toy(5, 2.0, 1), Toy(3, -1.5, 2), Toy(5, 0.5, 3), Toy(3, 4.0, 4)]
    t0 = STATS.traces
    res = run_sweep(toy_run, cfgs, chunk_size=2)
    # groups {n=3: 3 runs -> chunks of 2 (last padded), n=5: 2 runs}: one trace per group (same chunk shape)
    assert STATS.traces == t0 + 2
    for cfg, r in zip(cfgs, res):
        np.testing.assert_allclose(r["x"], np.arange(cfg.n) * cfg.a, rtol=1e-6)
        np.testing.assert_allclose(r["nested"]["s"], np.arange(cfg.n).sum() * cfg.a, rtol=1e-6)
        np.testing.assert_allclose(r["nested"]["noise"],
                                   float(jax.random.normal(jax.random.PRNGKey(cfg.seed), ())), rtol=1e-6)
        assert r["diverged"].dtype == bool and not bool(r["diverged"])
    # runs again with new traced values: no new trace
    run_sweep(toy_run, [Toy(3, 9.0, 9), Toy(3, 8.0), Toy(5, 1.0), Toy(5, 1.0)], chunk_size=2)
    assert STATS.traces == t0 + 2


def test_run_labelled_max_chunk_caps_every_chunk(tmp_path):
    """run_labelled's max_chunk reaches the plan it records and the sweep it runs: 5 toy runs of one group in
    chunks of at most 2 (3 chunks, the last padded), the same numbers as one uncapped chunk."""
    import json

    from fa_jax.sweep import run_labelled

    runs = {"a": [({"i": i}, Toy(3, 1.0 + i, i)) for i in range(5)]}
    capped, _ = run_labelled(toy_run, runs, out_dir=tmp_path / "capped", tag="toy", max_chunk=2)
    whole, _ = run_labelled(toy_run, runs, out_dir=tmp_path / "whole", tag="toy")
    sizes = {name: [len(c["runs"]) for c in json.loads((tmp_path / name / "runs.toy.json").read_text())["plan"]]
             for name in ("capped", "whole")}
    assert sizes == {"capped": [2, 2, 1], "whole": [5]}
    for (_, a), (_, b) in zip(capped["a"], whole["a"]):
        np.testing.assert_array_equal(a["x"], b["x"])


def toy_run_nodiv(cfg: Toy) -> dict:
    """No ``diverged`` output: the engine decides from NaNs (sqrt of a negative value: a NaN made inside the run;
    a NaN config value is refused before anything runs)."""
    return {"x": jnp.arange(cfg.n, dtype=jnp.float32) * jnp.sqrt(cfg.a), "r": jnp.inf * cfg.a}


def test_toy_divergence_from_nan():
    res = run_sweep(toy_run_nodiv, [Toy(3, -1.0), Toy(3, 1.0), Toy(3, 2.0)])
    assert [bool(r["diverged"]) for r in res] == [True, False, False]  # inf alone is not divergence
    np.testing.assert_allclose(res[1]["x"], [0.0, 1.0, 2.0])


def test_toy_divergence_from_own_flag():
    res = run_sweep(toy_run, [Toy(3, 1e3), Toy(3, 1.0), Toy(3, 101.0)])
    assert [bool(r["diverged"]) for r in res] == [True, False, True]


# ----------------------------------------------------------------------------- expand_grid
def test_expand_grid_cartesian_order_and_validation():
    from fa_jax.sweep import expand_grid

    base = make_fa_config()
    lrs, seeds = [1e-3, 2e-2], [0, 5, 9]
    cfgs = expand_grid(base, {"optim.lr": lrs, "data_seed": seeds})
    expect = [(lr, s) for lr in lrs for s in seeds]  # last axis fastest
    assert [(c.optim.lr, c.data_seed) for c in cfgs] == expect
    # everything else is the base config, and the whole grid is one static group (one program)
    assert all(c.model == base.model and c.data == base.data for c in cfgs)
    assert len(group_configs(cfgs)) == 1
    with pytest.raises(ValueError, match="optim.lr"):
        expand_grid(base, {"optim.lr": [1e-3, -1.0]})


def test_irrelevant_ce_flag_does_not_split_binary_programs():
    """attack.ce only concerns the multi-class net: binary configs differing in it share one static key."""
    from fa_jax.config import static_key

    b_on = fa_replace(make_fa_config(), attack__ce=True)
    b_off = fa_replace(make_fa_config(), attack__ce=False)
    assert static_key(b_on) == static_key(b_off)
    m_on = fa_replace(make_fa_config("multiclass"), attack__ce=True)
    m_off = fa_replace(make_fa_config("multiclass"), attack__ce=False)
    assert static_key(m_on) != static_key(m_off)


# ----------------------------------------------------------------------------- pipelining (issue 19 item 4)
_SEEN: list[float] = []  # values of ``a`` whose program has started (host callback of toy_run_cb)
_SEEN_EVENT = __import__("threading").Event()
_WAIT_FOR: set[float] = set()


def _seen(a) -> None:
    vals = [float(v) for v in np.ravel(a)]
    _SEEN.extend(vals)
    if _WAIT_FOR & set(vals):
        _SEEN_EVENT.set()


def toy_run_cb(cfg: Toy) -> dict:
    """The toy run with a host callback naming its run (as the trainer's progress report makes a program's
    dispatch synchronous on CPU) and two progress reports."""
    from fa_jax import progress

    jax.debug.callback(_seen, cfg.a)
    x = jnp.arange(cfg.n, dtype=jnp.float32) * cfg.a
    progress.report(jnp.int32(1), 2)
    y = jnp.sin(x) + jax.random.normal(jax.random.PRNGKey(cfg.seed), (cfg.n,))
    progress.report(jnp.int32(2), 2)
    return {"y": y, "diverged": cfg.a > 100.0}


PIPE_CFGS = [Toy(3, float(a), a) for a in (1, 2, 3, 4, 5, 200)]  # chunks of 2: {1, 2}, {3, 4}, {5, 200}


def test_pipeline_writes_chunk_while_next_computes(tmp_path, monkeypatch):
    """Chunk i's write waits until chunk i+1's program has started: it only finishes if the next chunk is dispatched
    (and computes) while the writer holds chunk i. Results are bitwise those of the chunk-at-a-time order."""
    from fa_jax import sweep as S

    events, write = [], S._write_atomic
    launch = S._launch_chunk

    def spy_launch(run_fn, configs, p, devices, *rest):
        events.append(("launch", p.runs))
        return launch(run_fn, configs, p, devices, *rest)

    def gated_write(path, arrays):
        runs = tuple(int(i) for i in arrays["_runs"])
        if runs == (0, 1):
            events.append(("next started", _SEEN_EVENT.wait(20)))
        write(path, arrays)
        events.append(("written", runs))

    _WAIT_FOR.clear()
    _WAIT_FOR.update({3.0, 4.0})  # chunk 2's runs
    _SEEN_EVENT.clear()
    monkeypatch.setattr(S, "_launch_chunk", spy_launch)
    monkeypatch.setattr(S, "_write_atomic", gated_write)
    piped = run_sweep(toy_run_cb, PIPE_CFGS, chunk_size=2, out_dir=tmp_path)
    assert ("next started", True) in events, events
    assert events.index(("launch", (2, 3))) < events.index(("written", (0, 1))), events
    assert len(os.listdir(tmp_path / "chunks")) == 3
    assert [bool(r["diverged"]) for r in piped] == [False] * 5 + [True]
    monkeypatch.setattr(S, "_PIPELINE", False)
    monkeypatch.setattr(S, "_write_atomic", write)
    for a, b in zip(piped, run_sweep(toy_run_cb, PIPE_CFGS, chunk_size=2)):
        for k in flat(a):
            assert flat(a)[k].tobytes() == flat(b)[k].tobytes(), k


@pytest.mark.parametrize("where", ["launch", "fetch"])
def test_pipeline_failure_in_next_chunk_keeps_previous_on_disk(tmp_path, monkeypatch, where):
    """An error while dispatching chunk 2 of 3 (``launch``), or an interrupt while fetching it (``fetch``, in the
    writer thread), propagates after chunk 1 reached the disk; the rerun loads it and computes the rest."""
    from fa_jax import sweep as S

    name = {"launch": "_launch_chunk", "fetch": "_fetch_chunk"}[where]
    real, calls = getattr(S, name), []

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("chunk 2 failed") if where == "launch" else KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(S, name, failing)
    with pytest.raises(RuntimeError if where == "launch" else KeyboardInterrupt):
        run_sweep(toy_run_cb, PIPE_CFGS, chunk_size=2, out_dir=tmp_path)
    monkeypatch.setattr(S, name, real)
    files = os.listdir(tmp_path / "chunks")
    assert len(files) == 1 and files[0].endswith(".npz"), files
    before = dataclasses.replace(STATS)
    resumed = run_sweep(toy_run_cb, PIPE_CFGS, chunk_size=2, out_dir=tmp_path)
    assert (STATS.chunks_loaded - before.chunks_loaded, STATS.chunks_run - before.chunks_run) == (1, 2)
    for a, b in zip(resumed, run_sweep(toy_run_cb, PIPE_CFGS, chunk_size=2)):
        assert_results_equal(a, b)


def test_progress_bar_counts_with_pipelining(tmp_path, monkeypatch, capsys):
    """The bar never goes back and ends at every run, with a loaded chunk arriving while another computes."""
    from fa_jax import sweep as S

    first = run_sweep(toy_run_cb, PIPE_CFGS, chunk_size=2, out_dir=tmp_path)
    plans = S.plan_chunks(toy_run_cb, PIPE_CFGS, chunk_size=2)
    assert len(plans) == 3
    os.remove(tmp_path / "chunks" / plans[0].file)  # chunk 1 computes while chunks 2 and 3 are loaded
    shown, show = [], S._Bar._show

    def spy_show(self, step_text=""):
        show(self, step_text)
        shown.append((self.bar.n, self.done_chunks))

    monkeypatch.setattr(S._Bar, "_show", spy_show)
    again = run_sweep(toy_run_cb, PIPE_CFGS, chunk_size=2, out_dir=tmp_path, progress=True, desc="pipe")
    ns = [n for n, _ in shown]
    assert ns == sorted(ns) and ns[-1] == len(PIPE_CFGS) and shown[-1][1] == 3, shown
    assert f"{len(PIPE_CFGS)}/{len(PIPE_CFGS)} runs" in capsys.readouterr().err
    for a, b in zip(first, again):
        assert_results_equal(a, b)
