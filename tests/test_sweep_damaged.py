"""Damaged state in a sweep directory (issue 21): every case recovers, or stops with the file named and the fix.

* a chunk file that cannot be parsed (empty, truncated, bytes flipped), or whose stored identity disagrees with
  its name (renamed, swapped, copied over), is reported with its path, moved to ``chunks/damaged/`` and
  recomputed -- by the Python ``run_sweep`` the simulations use and by ``fa-jax sweep`` / ``run_spec``;
  ``load_results`` names it and says to rerun the sweep command;
* two swapped chunk files never give exchanged runs (the Python ``run_sweep`` used to return them so);
* a damaged ``sweep.json`` (binary, truncated, ``{}``, missing keys) is reported with its path; the sweep command
  sets it aside and rebuilds it from the spec; no chunk file is ever deleted for it (``{}`` used to suggest
  ``--overwrite``, which deletes every chunk);
* temp files of a writer killed mid-write are ignored and cleaned by the next run.

Uses the linear-regression experiment at a tiny size: one compiled program for the whole file.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import time
import zipfile

import numpy as np
import pytest
from conftest import write_spec

from fa_jax import sweep as S
from fa_jax.experiments.linear import run_linear
from fa_jax.results import load_results
from fa_jax.sweep import DamagedChunkError, DamagedChunkWarning, read_chunk
from fa_jax.sweepfile import ManifestError, SpecError, build_configs, parse_spec, read_manifest, run_spec

FIXED = {"data.d": 3, "data.n_train": 16, "train.steps": 10, "train.n_records": 3}
CFGS = build_configs(parse_spec({"experiment": "linear-regression", "fixed": FIXED,
                                 "axes": {"seed": {"range": [0, 4]}}}))

LIN = """
experiment = "linear-regression"
name = "lin-damaged"
[fixed]
"data.d" = 3
"data.n_train" = 16
"train.steps" = 10
"train.n_records" = 3
[engine]
chunk_size = 2
[axes]
seed = { range = [0, 4] }
"""


def _sweep(out, cfgs=CFGS):
    before = dataclasses.replace(S.STATS)
    res = S.run_sweep(run_linear, cfgs, out_dir=out, chunk_size=2)
    d = {f: getattr(S.STATS, f) - getattr(before, f) for f in ("chunks_run", "chunks_loaded", "chunks_damaged")}
    return res, d


def _files(cfgs=CFGS):
    return [p.file for p in S.plan_chunks(run_linear, cfgs, chunk_size=2)]


def _same(a, b):
    for x, y in zip(a, b, strict=True):
        for k in ("w", "w0", "diverged"):
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
        np.testing.assert_array_equal(x["records"]["loss"], y["records"]["loss"])


def _swap(a, b):
    tmp = f"{a}.swap"
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)


def _data_offset(path, member):
    """Byte offset of ``member``'s data in the (stored, uncompressed) zip ``path``."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        n, m = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + n + m, info.file_size


def _flip(path, at):
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))


def _damage(path, kind):
    size = os.path.getsize(path)
    if kind == "empty":
        open(path, "wb").close()
    elif kind == "truncated":
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    elif kind == "data_byte_flipped":  # inside w's array data: only the zip CRC can tell
        start, n = _data_offset(path, "w.npy")
        _flip(path, start + n - 1)
    elif kind == "header_byte_flipped":  # the central directory's first entry
        with open(path, "rb") as f:
            at = f.read().rindex(b"PK\x01\x02") + 20
        _flip(path, at)
    elif kind == "garbage":
        with open(path, "wb") as f:
            f.write(os.urandom(size))
    elif kind == "npy_not_npz":
        np.save(path, np.zeros(3))
        os.replace(path + ".npy", path)
    else:
        raise AssertionError(kind)


DAMAGE = ["empty", "truncated", "data_byte_flipped", "header_byte_flipped", "garbage", "npy_not_npz"]


# ----------------------------------------------------------------------------- the Python run_sweep (the sims)
def test_swapped_chunk_files_never_give_exchanged_runs(tmp_path):
    """Before: the second sweep returned runs 0-1 and 2-3 exchanged, silently. Now each file's stored name is
    checked against the plan entry: both are reported, moved aside and recomputed."""
    clean, d = _sweep(tmp_path)
    assert d["chunks_run"] == 2
    f0, f1 = (str(tmp_path / "chunks" / f) for f in _files())
    _swap(f0, f1)
    with pytest.warns(DamagedChunkWarning) as rec:
        res, d = _sweep(tmp_path)
    msgs = [str(w.message) for w in rec]
    assert any(m.startswith(f0) and "misfiled" in m and "moved to" in m for m in msgs), msgs
    assert any(m.startswith(f1) and "misfiled" in m for m in msgs), msgs
    assert d == {"chunks_run": 2, "chunks_loaded": 0, "chunks_damaged": 2}
    _same(res, clean)
    assert sorted(os.listdir(tmp_path / "chunks" / "damaged")) == sorted(os.path.basename(f) for f in (f0, f1))
    res, d = _sweep(tmp_path)  # recomputed files are in place: plain reload
    assert d == {"chunks_run": 0, "chunks_loaded": 2, "chunks_damaged": 0}
    _same(res, clean)


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_chunk_reported_moved_aside_and_recomputed(tmp_path, kind):
    clean, _ = _sweep(tmp_path)
    path = str(tmp_path / "chunks" / _files()[1])
    _damage(path, kind)
    with pytest.warns(DamagedChunkWarning, match="damaged chunk file") as rec:
        res, d = _sweep(tmp_path)  # before: a raw BadZipFile / EOFError / CRC error on every rerun
    (w,) = rec
    assert str(w.message).startswith(path) and os.path.join("chunks", "damaged") in str(w.message)
    assert d == {"chunks_run": 1, "chunks_loaded": 1, "chunks_damaged": 1}
    _same(res, clean)
    assert os.path.exists(tmp_path / "chunks" / "damaged" / os.path.basename(path))  # kept, not deleted
    read_chunk(path, (2, 3))  # the recomputed file reads back


def test_no_byte_flip_gives_silently_different_numbers(tmp_path):
    """Every single-byte flip of a chunk file's zip directory (and of every 7th byte of its members) either is
    reported as damage or leaves the numbers unchanged (a flip in a field no reader uses, e.g. a timestamp). It
    found one: a flipped comment length in a directory entry makes zipfile silently drop the entries after it."""
    _sweep(tmp_path)
    path = str(tmp_path / "chunks" / _files()[0])
    with open(path, "rb") as f:
        good = f.read()
    ref = read_chunk(path, (0, 1))
    directory = good.index(b"PK\x01\x02")
    damaged = 0
    positions = [*range(0, directory, 7), *range(directory, len(good))]
    for at in positions:
        bad = bytearray(good)
        bad[at] ^= 0xFF
        with open(path, "wb") as f:
            f.write(bad)
        try:
            got = read_chunk(path, (0, 1))
        except DamagedChunkError as e:
            assert e.path == path
            damaged += 1
            continue
        assert got.keys() == ref.keys(), at
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"byte {at}, {k}")
    assert damaged > len(positions) // 2


def _old_format(path):
    """Rewrite a chunk file as written before it stored its own name (only ``_runs``)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "_chunk"}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_old_chunk_files_stay_readable_and_are_checked_by_their_runs(tmp_path):
    clean, _ = _sweep(tmp_path)
    f0, f1 = (str(tmp_path / "chunks" / f) for f in _files())
    for f in (f0, f1):
        _old_format(f)
    res, d = _sweep(tmp_path)
    assert d == {"chunks_run": 0, "chunks_loaded": 2, "chunks_damaged": 0}
    _same(res, clean)
    _swap(f0, f1)
    with pytest.warns(DamagedChunkWarning) as rec:
        res, d = _sweep(tmp_path)
    assert sorted(str(w.message).split(": it stores")[1][:12] for w in rec) == [" runs [0, 1]", " runs [2, 3]"]
    assert d["chunks_damaged"] == 2
    _same(res, clean)


@pytest.mark.parametrize("old", [False, True])
def test_identical_chunks_share_one_file(tmp_path, old):
    """Two chunks with the same configs have the same name (one file, stored indices of the first): both load it,
    neither is taken for misfiled."""
    cfgs = [*CFGS[:2], *CFGS[:2]]
    files = _files(cfgs)
    assert files[0] == files[1]
    first, d = _sweep(tmp_path, cfgs)
    assert d == {"chunks_run": 1, "chunks_loaded": 1, "chunks_damaged": 0}  # written for runs 0-1, read for 2-3
    if old:
        _old_format(str(tmp_path / "chunks" / files[0]))
    res, d = _sweep(tmp_path, cfgs)
    assert d == {"chunks_run": 0, "chunks_loaded": 2, "chunks_damaged": 0}
    _same(res, first)
    _same(res[2:], res[:2])


def test_read_chunk_checks_rows_and_outputs(tmp_path):
    path = str(tmp_path / "x.npz")
    np.savez(path, w=np.zeros((2, 2)), _runs=np.arange(3), _chunk=np.asarray("x"))
    with pytest.raises(DamagedChunkError, match=r"run indices \(_runs\) are missing or of the wrong length"):
        read_chunk(path, (0, 1))
    np.savez(path, w=np.zeros((2, 2)), _chunk=np.asarray("x"))  # entries after w hidden: _runs is not there
    with pytest.raises(DamagedChunkError, match=r"run indices \(_runs\) are missing"):
        read_chunk(path, (0, 1))
    np.savez(path, w=np.zeros((3, 2)), _runs=np.arange(2), _chunk=np.asarray("x"))
    with pytest.raises(DamagedChunkError, match=r"output 'w' has shape \(3, 2\), expected 2 runs"):
        read_chunk(path, (0, 1))
    np.savez(path, _chunk=np.asarray("x"), _runs=np.arange(2))
    with pytest.raises(DamagedChunkError, match="no outputs"):
        read_chunk(path, (0, 1))
    np.savez(path, w=np.zeros((2, 2)), _runs=np.arange(2), _chunk=np.asarray("y"))
    with pytest.raises(DamagedChunkError, match="holds the results of chunk y, not of x"):
        read_chunk(path, (0, 1))


# ----------------------------------------------------------------------------- interrupted writes
def test_stale_temp_files_are_ignored_and_cleaned(tmp_path):
    clean, _ = _sweep(tmp_path)
    chunks = tmp_path / "chunks"
    f0 = _files()[0]
    dead = 2**22 + 12345  # above Linux's pid_max: no such process
    stale = chunks / f"{f0}.tmp{dead}"
    stale.write_bytes(b"PK\x03\x04 half a chunk")  # what kill -9 in the middle of np.savez leaves
    old = time.time() - 2 * S.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    fresh = chunks / f"{f0}.tmp{dead + 1}"  # just written: maybe another host's live writer; left alone
    fresh.write_bytes(b"PK")
    mine = chunks / f"{f0}.tmp{os.getpid()}"  # a live process's temp file, however old: left alone
    mine.write_bytes(b"PK")
    os.utime(mine, (old, old))
    res, d = _sweep(tmp_path)
    assert d == {"chunks_run": 0, "chunks_loaded": 2, "chunks_damaged": 0}
    _same(res, clean)
    assert not stale.exists() and fresh.exists() and mine.exists()


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(S.np, "savez", boom)
    with pytest.raises(OSError, match="No space left"):
        S._write_atomic(str(tmp_path / "c.npz"), {"w": np.zeros(2)})
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- fa-jax sweep / run_spec
def _run(spec, out, **kw):
    return run_spec(spec, out, progress=False, **kw)


@pytest.fixture
def finished(tmp_path):
    """A finished sweep directory (2 chunks) and a pristine copy of it."""
    spec = write_spec(tmp_path, LIN)
    out = tmp_path / "out"
    res = _run(spec, out)
    assert res["complete"] and res["stats"]["chunks_run"] == 2
    shutil.copytree(out, tmp_path / "pristine")
    return spec, out, load_results(out)


def _assert_same_ds(a, b):
    for k in a.data_vars:
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)


@pytest.mark.parametrize("kind", ["truncated", "swapped"])
def test_sweep_command_recomputes_a_damaged_chunk_and_load_results_names_it(finished, kind):
    spec, out, clean = finished
    plan = read_manifest(out)["plan"]
    path = str(out / "chunks" / plan[0]["file"])
    if kind == "swapped":
        _swap(path, str(out / "chunks" / plan[1]["file"]))
    else:
        _damage(path, "truncated")
    with pytest.raises(DamagedChunkError) as e:  # before: a raw BadZipFile (truncated)
        load_results(out)
    msg = str(e.value)
    assert msg.startswith(path) and f"rerun the sweep command (`fa-jax sweep {spec} --out {out}`)" in msg
    n_bad = 2 if kind == "swapped" else 1  # a swapped pair: both files hold the other's runs
    with pytest.warns(DamagedChunkWarning, match="its runs are left NaN"):
        part = load_results(out, allow_partial=True)
    assert list(part["complete"].values) == ([False] * 4 if n_bad == 2 else [False, False, True, True])
    if n_bad == 1:
        assert np.isnan(part["w"].isel(seed=0).values).all() and np.isfinite(part["w"].isel(seed=3).values).all()
    with pytest.warns(DamagedChunkWarning, match="moved to"):
        res = _run(spec, out)
    assert res["complete"] and res["stats"]["chunks_run"] == n_bad and res["stats"]["chunks_loaded"] == 2 - n_bad
    _assert_same_ds(load_results(out), clean)


@pytest.mark.parametrize("content, why", [
    (b"", "empty file"),
    (None, "invalid JSON"),  # the real manifest cut in half
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "binary content"),
    (b"{}", "missing keys 'spec', 'spec_hash', 'n_runs', 'shape', 'plan'"),
    (b"[]", "a JSON list, expected an object"),
    ("drop plan", "missing key 'plan'"),
    ("bad plan", "the chunk plan does not cover runs"),
])
def test_damaged_manifest_named_and_rebuilt_never_deleting_chunks(finished, content, why):
    spec, out, clean = finished
    man = out / "sweep.json"
    text = man.read_bytes()
    if content is None:
        content = text[: len(text) // 2]
    elif content == "drop plan":
        content = json.dumps({k: v for k, v in json.loads(text).items() if k != "plan"}).encode()
    elif content == "bad plan":
        doc = json.loads(text)
        doc["plan"][1]["runs"] = doc["plan"][0]["runs"]
        content = json.dumps(doc).encode()
    man.write_bytes(content)
    chunks = sorted(os.listdir(out / "chunks"))
    for read in (read_manifest, load_results):  # readers: the file, what is wrong, the fix
        with pytest.raises(ManifestError) as e:
            read(out)
        msg = str(e.value)
        assert msg.startswith(str(man)) and why in msg and "rerun the sweep command" in msg, msg
        assert "--overwrite" not in msg
    # the sweep command (even with --overwrite) sets it aside and rebuilds it; every chunk is kept and reused
    with pytest.warns(UserWarning, match=r"damaged sweep manifest .* no chunk file was deleted"):
        res = _run(spec, out, overwrite=True)
    assert res["complete"] and res["stats"]["chunks_run"] == 0 and res["stats"]["chunks_loaded"] == 2
    assert sorted(os.listdir(out / "chunks")) == chunks
    assert (out / "sweep.json.damaged").read_bytes() == content
    _assert_same_ds(load_results(out), clean)


def test_damaged_manifest_through_the_cli(finished, capsys):
    from fa_jax.cli import main

    spec, out, clean = finished
    (out / "sweep.json").write_text("{}")
    with pytest.warns(UserWarning, match="damaged sweep manifest"):
        assert main(["sweep", spec, "--out", str(out), "--quiet"]) == 0
    assert "ran 0 chunks, loaded 2" in capsys.readouterr().out
    _assert_same_ds(load_results(out), clean)


def test_a_different_sweep_is_still_refused_and_an_inconsistent_plan_needs_overwrite(finished, tmp_path):
    spec, out, clean = finished
    other = write_spec(tmp_path, LIN.replace('"train.steps" = 10', '"train.steps" = 11'), "other.toml")
    with pytest.raises(SpecError, match="different sweep"):
        _run(other, out)
    man = out / "sweep.json"
    doc = json.loads(man.read_text())
    doc["plan"][0]["runs"], doc["plan"][1]["runs"] = doc["plan"][1]["runs"], doc["plan"][0]["runs"]
    man.write_text(json.dumps(doc))  # valid, but not this sweep's plan
    with pytest.raises(SpecError, match=r"sweep.json: the recorded chunk plan does not match .*--overwrite"):
        _run(spec, out)
    res = _run(spec, out, overwrite=True)  # before: the same error again (--overwrite only acted on a new spec)
    assert res["stats"]["chunks_loaded"] == 2 and res["stats"]["chunks_run"] == 0
    _assert_same_ds(load_results(out), clean)


def test_stale_manifest_temp_file_cleaned(finished):
    spec, out, _ = finished
    stale = out / f"sweep.json.tmp{2**22 + 7}"
    stale.write_text('{"format": 1, "sp')
    old = time.time() - 2 * S.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))
    keep = out / f"notes.txt.tmp{2**22 + 7}"  # not ours: never touched
    keep.write_text("x")
    os.utime(keep, (old, old))
    res = _run(spec, out)
    assert res["stats"]["chunks_loaded"] == 2 and not stale.exists() and keep.exists()


def test_load_results_reads_the_chunks_written_before_they_stored_their_name(finished):
    _, out, clean = finished
    for f in os.listdir(out / "chunks"):
        _old_format(str(out / "chunks" / f))
    _assert_same_ds(load_results(out), clean)


def test_identical_chunks_of_a_sweep_file_load_in_place(tmp_path):
    """Two labelled cases with the same settings: two chunks, one file (stored indices: the first chunk's).
    Before, load_results placed both by the stored indices: the second chunk's runs stayed NaN while marked
    complete, and finalize_sweep failed on the NaN ``diverged``."""
    spec = parse_spec({"experiment": "linear-regression", "fixed": FIXED, "engine": {"chunk_size": 2},
                       "axes": {"c": {"cases": {"a": {"optim.lr": 0.01}, "b": {"optim.lr": 0.01}}},
                                "seed": {"range": [0, 2]}}}, source="dup")
    res = _run(spec, tmp_path / "out")
    files = [c["file"] for c in res["manifest"]["plan"]]
    assert res["complete"] and files[0] == files[1]
    ds = load_results(tmp_path / "out")
    assert ds["complete"].all() and np.isfinite(ds["w"].values).all()
    np.testing.assert_array_equal(ds["w"].sel(c="a").values, ds["w"].sel(c="b").values)
