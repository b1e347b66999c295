"""Run directories, written so that nothing is ever half-written.

Every file is written to a temporary file in the same directory and moved into place with
``os.replace`` (atomic on POSIX): a reader sees the old file or the new one, never a part. A whole
run is first written to a staging directory beside the target and then moved into place, so an
existing run is replaced only once the new one is complete (and only with ``overwrite``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RunDirError

#: The file that marks a directory as a run of ours.
RUN_FILE = "run.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_mode(path: str | Path, directory: bool = False) -> None:
    """Give a mkstemp/mkdtemp path the permissions a plain open()/mkdir() would have."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, os.replace)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _normal_mode(tmp)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write to (by any library); moved onto ``path`` when the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    _normal_mode(tmp)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_target(out: Path, overwrite: bool) -> None:
    """Fail early if ``out`` cannot receive a run: it exists (without overwrite) or is not writable."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise RunDirError("exists and is not a directory", where=str(out))
        if not overwrite:
            raise RunDirError("run directory already exists", where=str(out),
                              hint="pass --overwrite to replace it, or --out to choose another")
        if any(out.iterdir()) and not (out / RUN_FILE).exists():
            raise RunDirError("exists and is not a run directory (no run.json); refusing to replace it",
                              where=str(out), hint="choose another --out")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the output location: {exc.strerror}", where=str(parent)) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError("the output location is not writable", where=str(parent))


class Staging:
    """A directory beside the target where a run is written, then moved into place as a whole."""

    def __init__(self, out: Path):
        self.out = Path(out)
        parent = self.out.parent if str(self.out.parent) else Path(".")
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.staging-", dir=parent))
            _normal_mode(self.path, directory=True)
        except OSError as exc:
            raise RunDirError(f"cannot write to the output location: {exc.strerror}", where=str(parent)) from None

    def commit(self, overwrite: bool) -> Path:
        """Move the staged run onto the target (replacing an old run only with ``overwrite``)."""
        old = None
        if self.out.exists():
            if not overwrite:
                raise RunDirError("run directory already exists", where=str(self.out),
                                  hint="pass --overwrite to replace it")
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        try:
            os.replace(self.path, self.out)
        except OSError:
            if old is not None:
                os.replace(old, self.out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_failure_safe(fn, *args, where: str, **kwargs):
    """Call a writer; turn an OSError (disk full, permissions) into a one-line :class:`RunDirError`."""
    try:
        return fn(*args, **kwargs)
    except OSError as exc:
        raise RunDirError(f"cannot write: {exc.strerror or exc}", where=where) from None
