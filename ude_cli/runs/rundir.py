"""Run directories, written so that nothing is ever half-written.

Every file is written to a temporary file in the same directory and moved into place with
``os.replace`` (atomic on POSIX): a reader sees the old file or the new one, never a part. A whole
run is first written to a staging directory beside the target and then moved into place, so an
existing run is replaced only once the new one is complete (and only with ``overwrite``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import RunDirError

#: The file that marks a directory as a run of ours.
RUN_FILE = "run.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_mode(path: str | Path, directory: bool = False) -> None:
    """Give a mkstemp/mkdtemp path the permissions a plain open()/mkdir() would have."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


#: errno values that mean "this location cannot take the file" (full, read-only, no permission, ...).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG,
                errno.ENOTDIR, errno.ENOENT, errno.EISDIR}
_STAGING_PART = re.compile(r"^\.(.+)\.staging-[^/]*$")
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>staging|old)-(?P<pid>\d+)(?:-.*)?$")


def shown_path(path: str | Path) -> str:
    """How messages name a file being written: as the run's path, not the hidden staging directory."""
    parts = [(m.group(1) if (m := _STAGING_PART.match(part)) else part) for part in Path(path).parts]
    return str(Path(*parts)) if parts else str(path)


def write_error(exc: OSError, path: str | Path) -> RunDirError:
    """A one-line :class:`RunDirError` for a failed write of ``path``."""
    reason = exc.strerror or str(exc)
    hint = "free some space or choose another --out" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else \
        "choose another --out"
    return RunDirError(f"cannot write {Path(path).name}: {reason}; nothing was written there", where=shown_path(
        Path(path).parent), hint=hint)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, os.replace).

    Raises:
        RunDirError: the file cannot be written (disk full, read-only, no permission); the old
            file, if any, is left as it was and no temporary file remains.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path) from None
    try:
        _normal_mode(tmp)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(exc, path) from None
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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path) from None
    os.close(fd)
    _normal_mode(tmp)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise write_error(exc, path) from None
        raise


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def clean_leftovers(out: Path) -> None:
    """Tidy what a killed process left beside ``out``: its staging directory (removed) and, when it
    was killed between moving an old run aside and moving the new one in, the old run (put back)."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = _LEFTOVER.match(entry.name)
        if m is None or m.group("name") != out.name or _alive(int(m.group("pid"))):
            continue
        if m.group("kind") == "old" and not out.exists():
            with contextlib.suppress(OSError):
                os.replace(entry, out)
            continue  # an old run is put back, never removed, unless a new one took its place
        shutil.rmtree(entry, ignore_errors=True)


def check_target(out: Path, overwrite: bool) -> None:
    """Fail early if ``out`` cannot receive a run: it exists (without overwrite) or is not writable."""
    try:
        _check_target(Path(out), overwrite)
    except OSError as exc:  # a name too long, a path through something unreadable
        raise RunDirError(f"cannot use this output location: {exc.strerror or exc}", where=str(out)) from None


def _check_target(out: Path, overwrite: bool) -> None:
    clean_leftovers(out)
    if out.exists():
        if not out.is_dir():
            raise RunDirError("exists and is not a directory", where=str(out))
        if any(out.iterdir()) and not (out / RUN_FILE).exists():  # with or without --overwrite: the same answer
            raise RunDirError("exists and is not a run directory (no run.json); ude replaces only run directories",
                              where=str(out), hint="choose another --out, or move the folder away")
        if not overwrite:
            if run_status(out) == "incomplete":
                raise RunDirError("run directory already exists, with an interrupted fit in it", where=str(out),
                                  hint=f"continue it with: ude fit --resume {out}; or pass --overwrite to start again")
            raise RunDirError("run directory already exists", where=str(out),
                              hint="pass --overwrite to replace it, or --out to choose another")
    parent = out.parent if str(out.parent) else Path(".")
    blocking = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise RunDirError("is a file, so the run directory cannot be created below it", where=str(blocking),
                          hint="choose another --out")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the output location: {exc.strerror}", where=str(parent)) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError("the output location is not writable", where=str(parent))
    try:  # what the staging will do, tried before any work: catches /proc, names too long, full quotas
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise RunDirError(f"cannot write to the output location: {exc.strerror or exc}", where=str(out)) from None


def run_status(path: Path) -> str | None:
    """``status`` in a run directory's run.json ("complete", "incomplete"), or None."""
    try:
        status = json.loads((Path(path) / RUN_FILE).read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return status if isinstance(status, str) else None


class Staging:
    """A directory beside the target where a run is written, then moved into place as a whole."""

    def __init__(self, out: Path):
        self.out = Path(out)
        parent = self.out.parent if str(self.out.parent) else Path(".")
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.staging-{os.getpid()}-", dir=parent))
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
            try:
                os.replace(self.out, old)
            except OSError as exc:
                raise RunDirError(f"cannot move the old run aside to replace it: {exc.strerror or exc}",
                                  where=str(self.out)) from None
        try:
            os.replace(self.path, self.out)
        except OSError as exc:
            if old is not None:
                os.replace(old, self.out)
            raise RunDirError(f"cannot move the new run into place: {exc.strerror or exc}",
                              where=str(self.out)) from None
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
