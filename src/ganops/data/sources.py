"""Readers for every `data.source`: IDX files, torchvision downloads, image folders.

Each returns a `RawDataset` of uint8 N×C×H×W arrays and int64 labels. Every failure
is a `DataError` whose message starts with the offending file.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganops.errors import DataError

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class RawDataset:
    """Images uint8 (N, C, H, W), labels int64 (N,), per split."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str


# ---------------------------------------------------------------- IDX (MNIST family)

def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (optionally gzip'd) of unsigned bytes into an ndarray."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"{path}: corrupt or truncated gzip ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise DataError(f"{path}: wrong IDX magic number 0x{raw[:4].hex()} "
                        "(expected 0x00000801 for labels or 0x00000803 for images)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    body = len(raw) - header
    if body != expected:
        raise DataError(f"{path}: header promises {'×'.join(map(str, dims))} = {expected} bytes, "
                        f"file holds {body}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root / (stem + '.gz')}: file not found")


def load_idx_dir(root: Path, source: str) -> RawDataset:
    """Read the four MNIST-style IDX files in `root` (gz or plain)."""
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found"
                        + (" (apt-get install dataset-fashion-mnist, or set data.download: true)"
                           if source == "fashion-mnist" else " (set data.download: true to fetch it)"))
    arrays: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    for key, stem in IDX_FILES.items():
        paths[key] = _find_idx(root, stem)
        arrays[key] = read_idx(paths[key])
    for split in ("train", "test"):
        imgs, labs = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.ndim != 3:
            raise DataError(f"{paths[f'{split}_images']}: expected a 3-d image IDX, got {imgs.ndim}-d")
        if labs.ndim != 1:
            raise DataError(f"{paths[f'{split}_labels']}: expected a 1-d label IDX, got {labs.ndim}-d")
        if len(imgs) != len(labs):
            raise DataError(f"{paths[f'{split}_labels']}: {len(labs)} labels for {len(imgs)} images "
                            f"in {paths[f'{split}_images'].name}")
    names = FASHION_CLASSES if source == "fashion-mnist" else MNIST_CLASSES
    for split in ("train", "test"):
        bad = arrays[f"{split}_labels"] >= len(names)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{paths[f'{split}_labels']}: label {arrays[f'{split}_labels'][i]} at index {i} "
                            f"is outside 0..{len(names) - 1}")
    return RawDataset(
        train_images=arrays["train_images"][:, None],  # (N, 1, H, W)
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"][:, None],
        test_labels=arrays["test_labels"].astype(np.int64),
        class_names=names,
        source=source,
    )


# ---------------------------------------------------------------- torchvision download

def download_torchvision(source: str, raw_dir: Path) -> RawDataset:
    """Fetch `source` with torchvision into `raw_dir` (needs a network)."""
    from torchvision import datasets

    cls = {"fashion-mnist": datasets.FashionMNIST, "mnist": datasets.MNIST,
           "cifar10": datasets.CIFAR10}[source]
    raw_dir.mkdir(parents=True, exist_ok=True)
    try:
        train = cls(str(raw_dir), train=True, download=True)
        test = cls(str(raw_dir), train=False, download=True)
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError variants
        hint = ("apt-get install dataset-fashion-mnist and set data.download: false"
                if source == "fashion-mnist" else f"put the {source} files under {raw_dir} by hand")
        raise DataError(f"{raw_dir}: could not download {source} ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'no detail'}); offline? {hint}") from None

    def arrays(ds: object) -> tuple[np.ndarray, np.ndarray]:
        data = np.asarray(ds.data)  # type: ignore[attr-defined]
        # MNIST family: (N, H, W); CIFAR: (N, H, W, C)
        imgs = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(imgs, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)  # type: ignore[attr-defined]

    (tr_i, tr_l), (te_i, te_l) = arrays(train), arrays(test)
    names = {"fashion-mnist": FASHION_CLASSES, "mnist": MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}[source]
    return RawDataset(tr_i, tr_l, te_i, te_l, names, source)


# ---------------------------------------------------------------- image folder

def _list_folder(root: Path) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    subdirs = [p for p in entries if p.is_dir()]
    if subdirs:
        stray = [p for p in entries if not p.is_dir()]
        if stray:
            raise DataError(f"{stray[0]}: a file beside class folders (put it in a class folder)")
        classes = tuple(p.name for p in subdirs)
        files = [(f, k) for k, d in enumerate(subdirs)
                 for f in sorted(d.iterdir()) if not f.name.startswith(".")]
    else:
        classes = ("all",)
        files = [(f, 0) for f in entries]
    if not files:
        raise DataError(f"{root}: empty folder, no images found")
    for f, _ in files:
        if f.is_dir():
            raise DataError(f"{f}: nested folders are not supported (one level of class folders)")
    return files, classes


def load_folder(root: Path, image_size: int, channels: int, resize: bool,
                test_fraction: float, seed: int) -> RawDataset:
    """Images in `root` (or `root/<class>/`), split per class into train/test by `seed`."""
    from PIL import Image, UnidentifiedImageError

    files, classes = _list_folder(root)
    mode = "L" if channels == 1 else "RGB"
    images: list[np.ndarray] = []
    first_size: tuple[int, int] | None = None
    for f, _ in files:
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{f}: not an image file (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
        try:
            with Image.open(f) as im:
                im.load()
                im = im.convert(mode)
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise DataError(f"{f}: cannot decode image ({e})") from None
        if resize:
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.Resampling.BICUBIC)
        else:
            if first_size is None:
                first_size = im.size
            elif im.size != first_size:
                raise DataError(f"{f}: size {im.size[0]}×{im.size[1]} differs from "
                                f"{first_size[0]}×{first_size[1]} (set data.resize: true)")
        arr = np.asarray(im, dtype=np.uint8)
        images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))  # (C, H, W)
    x = np.stack(images)  # (N, C, H, W)
    y = np.array([k for _, k in files], dtype=np.int64)
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(y), dtype=bool)
    for k in range(len(classes)):
        idx = np.flatnonzero(y == k)
        n_test = int(round(len(idx) * test_fraction))
        n_test = min(max(n_test, 1 if len(idx) > 1 else 0), len(idx) - 1)
        test_mask[rng.permutation(idx)[:n_test]] = True
    if not test_mask.any():
        raise DataError(f"{root}: too few images to hold out a test split ({len(y)})")
    return RawDataset(x[~test_mask], y[~test_mask], x[test_mask], y[test_mask], classes, "folder")
