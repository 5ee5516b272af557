"""Writing outputs: atomic writes for the small files stages produce (metrics JSON, plot CSVs), and
the up-front check that every output path can be written at all.

A write that fails for a reason the user can fix (a full or read-only disk, a directory where a file
goes) is one `GanopsError` naming the file, and leaves no temp file behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ganops.errors import GanopsError

if TYPE_CHECKING:
    import pandas as pd

MIN_FREE_BYTES = 1 << 20  # below this no stage's outputs fit: refuse before the work, not after it

# OSErrors of a write that the user can act on, and how to say them (strerror is less clear for some)
WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "a parent is a file, not a directory",
    errno.EEXIST: "a parent is a file, not a directory",  # mkdir(exist_ok=True) on a file
}


def _why(exc: OSError) -> str:
    return WRITE_ERRORS.get(exc.errno or 0, exc.strerror or str(exc))


def write_error(path: str | Path, exc: OSError) -> GanopsError:
    """The one-line error for an OSError while writing `path` (free bytes added for a full disk)."""
    path = Path(path)
    reason = _why(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        with contextlib.suppress(OSError):
            reason += f" ({shutil.disk_usage(_existing_ancestor(path)).free} bytes free)"
    return GanopsError(f"{path}: cannot write: {reason}")


def write_error_of(path: str | Path, exc: BaseException) -> GanopsError | None:
    """`write_error` if `exc` is a write failure the user can act on, else None.

    Also for libraries that wrap the OSError in their own error text ("... (os error 28)": safetensors).
    """
    if not isinstance(exc, OSError) and (m := re.search(r"\(os error (\d+)\)", str(exc))):
        exc = OSError(int(m.group(1)), os.strerror(int(m.group(1))))
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
        return write_error(path, exc)
    return None


def _existing_ancestor(path: Path) -> Path:
    """`path`'s nearest ancestor that exists (a file there is the caller's problem to report)."""
    anc = path.parent
    while not (anc.exists() or anc == anc.parent):
        anc = anc.parent
    return anc


def free_bytes(directory: Path) -> int:
    """Bytes this user may still write on `directory`'s file system."""
    st = os.statvfs(directory)
    # root may use the blocks a file system reserves for it; others only the available ones
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def _check_one(path: Path, is_dir: bool) -> None:
    if path.exists():
        if path.is_dir() and not is_dir:
            raise GanopsError(f"{path}: is a directory (this output is a file)")
        if is_dir and not path.is_dir():
            raise GanopsError(f"{path}: is a file (this output is a directory)")
    anc = _existing_ancestor(path)
    if not anc.is_dir():
        raise GanopsError(f"{path}: parent {anc} is a file, not a directory")
    # outputs are created in the parent (atomic rename); a directory output is also written into
    for d in (anc, path) if is_dir and path.is_dir() else (anc,):
        try:  # a real file, not os.access: access() says yes to root even where a write would fail
            fd, probe = tempfile.mkstemp(prefix=".ganops-write-check.", dir=d)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise GanopsError(f"{path}: cannot write in {d}: {_why(e)}") from None
        if (free := free_bytes(d)) < MIN_FREE_BYTES:
            raise GanopsError(f"{path}: no space left on the file system of {d} ({free} bytes free)")


def check_writable(*files: str | Path | None, dirs: Iterable[str | Path | None] = ()) -> None:
    """Raise GanopsError if an output cannot be written: call it before the work, not after.

    `files` are output files, `dirs` output directories (None entries are skipped: optional outputs).
    Refused: a directory where a file goes (or the reverse), a file where a parent directory is needed,
    a read-only or permission-denied directory, less than MIN_FREE_BYTES free. Creates nothing that
    stays (missing parents are made later, by the write).
    """
    for p, is_dir in [(f, False) for f in files] + [(d, True) for d in dirs]:
        if p is None:
            continue
        try:
            _check_one(Path(p), is_dir)
        except OSError as e:  # e.g. a parent this user may not enter
            raise GanopsError(f"{p}: cannot check: {_why(e)}") from None


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write; it replaces `path` only if the block ends without error.

    Written beside `path` and fsynced before the rename, so a reader (or a crash) never
    sees half a file and a failed write leaves the previous version in place. The temp file
    goes on any exception (also a signal turned into one, see pipelines.common.run); an
    OSError of the write itself (full disk, read-only, ...) becomes a GanopsError naming `path`.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and _about(e, path, tmp) and (err := write_error_of(path, e)):
            raise err from e
        raise


def _about(exc: OSError, path: Path, tmp: str | None) -> bool:
    """Whether an OSError raised inside atomic_file is about writing `path` (the block may read others)."""
    if exc.filename is None:  # a write to the open file names none
        return True
    return Path(exc.filename) in {path, *path.parents} or exc.filename == tmp


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temp directory beside `path` to build it in; it replaces `path` only if the block ends without error.

    For directory outputs (prepared data, Data Docs): a reader, a crash or a full disk never leaves a mix of
    old and new files. The previous `path` is moved aside (`.<name>.old-<pid>`) for the two renames and then
    removed; on any exception (also a signal turned into one, see pipelines.common.run) the temp dir goes and
    the previous version stays where it was. A write failure the user can act on (full disk, read-only; also a
    library's "(os error 28)") becomes a GanopsError naming `path`.
    """
    path = Path(path)
    tmp = built = None  # built: the temp dir's name, also once it is `path`
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = built = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; outputs are for every user of the checkout (and a container's)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        tmp = None  # it is `path` now
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old.exists():  # interrupted around the swap: keep whichever complete version is in place
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, path)
        if (not isinstance(e, OSError) or _in_dir(e, path, built)) and (err := write_error_of(path, e)):
            raise err from e
        raise


def _in_dir(exc: OSError, path: Path, tmp: Path | None) -> bool:
    """Whether an OSError raised while building a directory is about writing it (the block may read others)."""
    if exc.filename is None:  # a write to an open file names none
        return True
    f = Path(exc.filename)
    return f == path or path in f.parents or f in path.parents or (tmp is not None and (f == tmp or tmp in f.parents))


def write_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


CSV_FLOAT_FORMAT = "%.6g"  # plots CSVs: 6 significant digits, so readers compare at that precision


def write_csv(path: str | Path, df: pd.DataFrame) -> Path:
    return write_atomic(path, df.to_csv(index=False, float_format=CSV_FLOAT_FORMAT).encode())


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
