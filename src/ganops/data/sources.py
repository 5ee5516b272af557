"""Readers for every `data.source`: IDX files, torchvision downloads, image folders.

Each returns a `RawDataset` of uint8 N×C×H×W arrays and int64 labels. Every failure
is a `DataError` whose message starts with the offending file.
"""

from __future__ import annotations

import gzip
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from ganops.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

    from ganops.config import DataConfig

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
# An IDX file is read no further than its header promises, and a header may promise at most this much
# (Fashion-MNIST's train images are 47 MB): a gzip bomb or a corrupt header never fills the memory.
MAX_IDX_BYTES = 2**32
# Images are shrunk to at most 64×64: anything above PIL's own default bomb limit (~89 MP, more than any
# camera photo) is refused before it is decoded, whatever PIL.Image.MAX_IMAGE_PIXELS is set to elsewhere.
MAX_IMAGE_PIXELS = 89_478_485


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

def _read_at_most(f: BinaryIO, n: int) -> bytes:
    """Up to n bytes, in chunks: `f.read(n)` would allocate n bytes up front, whatever the file holds."""
    chunks: list[bytes] = []
    while n > 0 and (chunk := f.read(min(n, 1 << 20))):
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (optionally gzip'd) of unsigned bytes into an ndarray."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        gz = path.suffix == ".gz"
        with (gzip.open(path, "rb") if gz else path.open("rb")) as f:
            raw = _read_at_most(f, 4)
            if len(raw) < 4:
                raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
            zero, dtype_code, ndim = struct.unpack(">HBB", raw)
            if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
                raise DataError(f"{path}: wrong IDX magic number 0x{raw.hex()} "
                                "(expected 0x00000801 for labels or 0x00000803 for images)")
            head = _read_at_most(f, 4 * ndim)
            if len(head) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", head)
            shown = "×".join(map(str, dims))
            if 0 in dims:
                what = "images" if ndim == 3 and dims[0] == 0 else "labels" if ndim == 1 else "pixels per image"
                raise DataError(f"{path}: header says {shown}: no {what}")
            expected = int(np.prod(dims, dtype=object))
            if expected > MAX_IDX_BYTES:
                raise DataError(f"{path}: header promises {shown} = {expected} bytes, "
                                f"more than {MAX_IDX_BYTES} (corrupt header?)")
            body = _read_at_most(f, expected + 1)  # one byte more tells "too long" from "exact"
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"{path}: {'corrupt or truncated gzip' if gz else 'unreadable'} ({e})") from None
    if len(body) != expected:
        holds = f"more than {expected}" if len(body) > expected else str(len(body))
        raise DataError(f"{path}: header promises {shown} = {expected} bytes, file holds {holds}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


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

TORCHVISION = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST", "cifar10": "CIFAR10"}  # source -> dataset class


def download_torchvision(source: str, raw_dir: Path, download: bool = True) -> RawDataset:
    """Fetch `source` with torchvision into `raw_dir` (needs a network); with download=False, read the files
    torchvision finds there (checksummed) and never touch the network."""
    from torchvision import datasets

    cls = getattr(datasets, TORCHVISION[source])
    raw_dir.mkdir(parents=True, exist_ok=True)
    try:
        train = cls(str(raw_dir), train=True, download=download)
        test = cls(str(raw_dir), train=False, download=download)
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError variants
        hint = ("apt-get install dataset-fashion-mnist and set data.download: false"
                if source == "fashion-mnist" else f"put the {source} files under {raw_dir} by hand")
        raise DataError(f"{raw_dir}: could not {'download' if download else 'read'} {source} ({type(e).__name__}: "
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

def _ls(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"{d}: cannot list folder ({e.strerror})") from None


def _list_folder(root: Path) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    entries = _ls(root)
    subdirs = [p for p in entries if p.is_dir()]
    if subdirs:
        stray = [p for p in entries if not p.is_dir()]
        if stray:
            raise DataError(f"{stray[0]}: a file beside class folders (put it in a class folder)")
        classes = tuple(p.name for p in subdirs)
        files = [(f, k) for k, d in enumerate(subdirs) for f in _ls(d)]
    else:
        classes = ("all",)
        files = [(f, 0) for f in entries]
    if not files:
        raise DataError(f"{root}: empty folder, no images found")
    for f, _ in files:
        if f.is_dir():
            raise DataError(f"{f}: nested folders are not supported (one level of class folders)")
    return files, classes


def _to_8bit(im: Image.Image, f: Path) -> Image.Image:
    """`im` with 8-bit samples. 16-bit grayscale (PIL mode I;16, I;16B, or I from a PNG in older Pillow)
    is scaled, value >> 8, as PIL itself does for 16-bit RGB: its convert("L") would clip it at 255."""
    from PIL import Image


    if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):
        a = np.asarray(im).astype(np.int64)  # (H, W); I;16B is big-endian, astype gives native order
        if a.size and (a.min() < 0 or a.max() > 0xFFFF):
            raise DataError(f"{f}: 16-bit image with values outside 0..65535 (PIL mode {im.mode})")
        return Image.fromarray((a >> 8).astype(np.uint8))
    if im.mode in ("I", "F"):  # 32-bit int or float samples: no agreed 8-bit scale to guess
        raise DataError(f"{f}: {'32-bit integer' if im.mode == 'I' else 'floating-point'} pixels "
                        f"(PIL mode {im.mode}); save it as an 8- or 16-bit PNG")
    return im


def _decode(f: Path, mode: str) -> Image.Image:
    """Image file `f` as 8-bit `mode` ("L" or "RGB"); any failure is a one-line DataError naming `f`."""
    from PIL import Image, UnidentifiedImageError

    if f.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{f}: not an image file (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
    if not f.is_file():  # a FIFO would block open() forever; a symlink loop or dangling link is no file
        raise DataError(f"{f}: not a regular file (a broken or looping symlink, a pipe or a device?)")
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice it, then decodes: make that a refusal too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise DataError(f"{f}: {w}×{h} = {w * h} pixels, over the {MAX_IMAGE_PIXELS} limit "
                                    "(a decompression bomb?); downscale it first")
                im.load()
                return _to_8bit(im, f).convert(mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{f}: refused as a possible decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:  # ValueError: PIL's chunk limits
        raise DataError(f"{f}: cannot decode image ({e})") from None


def load_folder(root: Path, image_size: int, channels: int, resize: bool,
                test_fraction: float, seed: int) -> RawDataset:
    """Images in `root` (or `root/<class>/`), split per class into train/test by `seed`."""
    from PIL import Image


    files, classes = _list_folder(root)
    mode = "L" if channels == 1 else "RGB"
    images: list[np.ndarray] = []
    first_size: tuple[int, int] | None = None
    for f, _ in files:
        im = _decode(f, mode)
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


def read_cifar_folder(root: Path) -> RawDataset:
    """CIFAR-10 from an extracted `cifar-10-batches-py` under `root`, read by torchvision; never downloads."""
    if not (root / "cifar-10-batches-py").is_dir():
        raise DataError(f"{root / 'cifar-10-batches-py'}: not found (set data.download: true on a "
                        "machine with a network, or point data.path at the extracted CIFAR-10 folder)")
    return download_torchvision("cifar10", root, download=False)


# A data source is its reader here: `data.source` may name exactly these (`ganops prepare` checks on load).
# Each takes the `data:` section and returns the raw train and test splits.
READERS: dict[str, Callable[[DataConfig], RawDataset]] = {
    "fashion-mnist": lambda cfg: load_idx_dir(Path(cfg.path), "fashion-mnist"),
    "mnist": lambda cfg: load_idx_dir(Path(cfg.path), "mnist"),
    "cifar10": lambda cfg: read_cifar_folder(Path(cfg.path)),
    "folder": lambda cfg: load_folder(Path(cfg.path), cfg.image_size, cfg.channels, cfg.resize,
                                      cfg.test_fraction, cfg.seed),
}
SOURCES = tuple(READERS)
