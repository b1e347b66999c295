"""Native code for the compiled engine: CasADi's C code generation, compiled by the system's C compiler
in the background and kept on disk, so that a model's solves run as machine code instead of in CasADi's
virtual machine.

Why: the virtual machine spends ~5-10 ns per scalar instruction; the same function compiled by a C
compiler runs ~8 times faster (one dopri5 attempt of the sample problem: 5.6 against 0.7 us). Compiling
takes about half a second for the sample model, so training never waits for it: it starts in the virtual
machine and switches to the library when the compiler is done (checked between solves); the next fit of
the same model structure loads the library from the cache (the cache key costs generating the C
source: ~10 ms for the sample model, ~100 ms near :data:`MAX_INSTRUCTIONS`).

The switch changes no number: the code is compiled without ``-march``, fast-math or floating-point
contraction (``-O1 -ffp-contract=off``), so it performs the virtual machine's IEEE operations in the same
order, and calls the same libm (tested bit for bit in ``tests/test_native.py``). A compiler whose defaults
differ (``UDE_CC`` with fast-math, say) is caught before the switch: the engine compares the library's
numbers with the virtual machine's on sample inputs and on its first solve, and keeps the virtual
machine when they differ.

Environment:
    ``UDE_NATIVE=0``: never compile (the virtual machine only).
    ``UDE_CC``, else ``CC``, else the first of ``cc``, ``gcc``, ``clang`` on the PATH: the compiler.
    ``UDE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ude``, else ``~/.cache/ude``: where libraries are kept
    (``native/<hash>.so``; safe to delete at any time). Created private to the user; a folder others can
    write to would let them replace the code a fit loads.

Without a compiler (or on Windows), or when compiling fails, the engine stays in the virtual machine: the
same numbers, only slower; ``metrics.json``'s ``native_code`` says which ran.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: C flags: the same IEEE operations in the same order as CasADi's virtual machine (no fast-math, no
#: contraction into fused multiply-adds). -O1, not -O2: the generated functions are long straight-line
#: code, which -O2 compiles many times slower (a 16-16 network: 19 against 2.6 s) for ~20 % faster code.
FLAGS = ("-O1", "-ffp-contract=off", "-fPIC", "-shared")
#: Functions of more instructions than this in all stay in the virtual machine: the compiler's time grows
#: faster than their size (-O1, 2 cores: 5,000 instructions 0.5 s; 20,000 2.6 s; 68,000 7.5 s;
#: 250,000 62 s).
MAX_INSTRUCTIONS = 100_000
#: a temporary library older than this was left by a compiler that never finished
STALE_SECONDS = 3600
#: a failed compilation is not tried again for this long (unless its ``.failed`` file is deleted)
FAILED_SECONDS = 86400


def enabled() -> bool:
    """Whether native code may be used at all (``UDE_NATIVE`` not set to 0, and not on Windows)."""
    return os.environ.get("UDE_NATIVE", "1").strip().lower() not in {"0", "off", "false", "no"} and os.name == "posix"


def compiler() -> list[str] | None:
    """The C compiler's command (``UDE_CC``, ``CC``, or the first found of cc, gcc, clang), or None."""
    for variable in ("UDE_CC", "CC"):
        if os.environ.get(variable, "").strip():
            command = shlex.split(os.environ[variable])
            return command if shutil.which(command[0]) else None
    for name in ("cc", "gcc", "clang"):
        if path := shutil.which(name):
            return [path]
    return None


def cache_dir() -> Path:
    """Where compiled libraries are kept (see the module's docstring)."""
    if os.environ.get("UDE_CACHE_DIR"):
        root = Path(os.environ["UDE_CACHE_DIR"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "ude"
    else:
        root = Path.home() / ".cache" / "ude"
    return root / "native"


def package_source(name: str) -> str:
    """A C file shipped with the package (e.g. ``dopri5_driver.c``)."""
    return (Path(__file__).parent / name).read_text()


def source_of(functions: Sequence[Any]) -> str:
    """C source defining ``functions`` (CasADi functions), by CasADi's code generator."""
    import casadi as ca

    generator = ca.CodeGenerator("ude_native.c", {"with_header": False})
    for fn in functions:
        generator.add(fn)
    return generator.dump()


@dataclass
class Build:
    """What compiling ``functions`` would take: the source, the compiler and the library's path in the
    cache; or, in :attr:`reason`, why there will be no native code."""

    names: list[str]
    reason: str | None = None
    command: list[str] = field(default_factory=list)
    source: str = ""
    path: Path | None = None

    @property
    def viable(self) -> bool:
        return self.reason is None


def prepare(functions: Sequence[Any], extra_source: str = "") -> Build:
    """The :class:`Build` of ``functions`` and ``extra_source`` (C that calls them by name)."""
    names = [fn.name() for fn in functions]
    if not enabled():
        return Build(names, "native code disabled (UDE_NATIVE=0)")
    command = compiler()
    if command is None:
        return Build(names, "no C compiler found")
    size = sum(fn.n_instructions() for fn in functions)
    if size > MAX_INSTRUCTIONS:
        return Build(names, f"the model's functions are too large to compile quickly ({size:,} instructions, "
                            f"more than {MAX_INSTRUCTIONS:,})")
    try:
        folder = cache_dir()
    except (RuntimeError, KeyError, OSError) as e:  # no home directory (a service, env -i)
        return Build(names, f"no folder for the cache ({e}); set UDE_CACHE_DIR")
    source = source_of(functions) + extra_source
    key = hashlib.sha256("\0".join([source, *command, *FLAGS, _casadi_version(), sys.platform, platform.machine(),
                                    *_compiler_identity(tuple(command))]).encode())
    path = folder / f"{key.hexdigest()[:24]}.so"
    build = Build(names, None, command, source, path)
    if path.exists():
        return build
    failed = path.with_suffix(".failed")
    try:
        if time.time() - failed.stat().st_mtime < FAILED_SECONDS:
            build.reason = f"{failed.read_text().strip()} (an earlier fit; it is tried again a day later, or " \
                           f"once {failed} is deleted)"
            return build
    except OSError:
        pass
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        build.reason = f"cannot write to the cache {folder}: {e.strerror}"
    return build


#: the libraries of this process by path: models with the same functions share one compilation
_LIBRARIES: dict[Path, NativeLibrary] = {}


def library(build: Build) -> NativeLibrary:
    """The :class:`NativeLibrary` of ``build``, started once per process (later models of the same
    structure, a batch of fits of one model, share it)."""
    if not build.viable:
        return NativeLibrary(build)
    assert build.path is not None  # a viable build has its library's path
    existing = _LIBRARIES.get(build.path)
    if existing is None or (existing.reason is not None and build.path.exists()):
        existing = _LIBRARIES[build.path] = NativeLibrary(build)
    return existing


class NativeLibrary:
    """A :class:`Build` compiled into a shared library, in the background; :meth:`poll` gives its functions
    as CasADi functions once it is loaded (``None`` before, and for good when it cannot be; :attr:`reason`
    says why). :attr:`path` is the library (for ctypes: C code compiled with the functions).

    A library already in the cache is loaded at once. Otherwise the compiler runs as a separate process
    that writes a temporary file and renames it into the cache when done, even if this process has ended
    by then (the next fit finds it); processes compiling the same source at once do not disturb each other.
    A compilation that fails leaves ``<hash>.failed`` with the compiler's message: later fits do not try
    again for a day (and ``engine: auto`` does not count on native code meanwhile).
    """

    def __init__(self, build: Build):
        self.names = build.names
        self.reason: str | None = build.reason  # why there is no native code, when there is none
        self.seconds = 0.0  # compile time waited for in this process (0 when loaded from the cache)
        self.cached = False  # found in the cache, compiled by an earlier process
        self.path = build.path
        self._functions: dict[str, Any] | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if self.reason is not None or self.path is None:
            self._done.set()
            return
        self.cached = self.path.exists()
        if self.cached:
            self._done.set()
            return
        folder = self.path.parent
        unique = f"{self.path.stem}.{uuid.uuid4().hex}"
        c_file, temporary, log = (folder / f"{unique}{suffix}" for suffix in (".c", ".so.tmp", ".log"))
        try:
            _remove_stale(folder)
            c_file.write_text(build.source)
        except OSError as e:
            self._give_up(f"cannot write to the cache {folder}: {e.strerror}")
            return
        # The compiler is started here, not in the thread, and the rename into the cache is the shell's:
        # if this process ends first (a short fit), the compilation still completes for the next fit.
        script = ('tmp=$0 final=$1 src=$2 log=$3; shift 3; "$@" 2>"$log"; status=$?; rm -f "$src"; '
                  'if [ $status -eq 0 ]; then mv -f "$tmp" "$final"; rm -f "$log"; else rm -f "$tmp"; fi; exit $status')
        self._started = time.perf_counter()
        try:
            process = subprocess.Popen(["sh", "-c", script, str(temporary), str(self.path), str(c_file), str(log),
                                        *build.command, *FLAGS, "-o", str(temporary), str(c_file), "-lm"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            self._give_up(f"the C compiler could not be run: {e.strerror}")
            return
        self._thread = threading.Thread(target=self._wait, args=(process, build.command, log), daemon=True)
        self._thread.start()

    def _wait(self, process: subprocess.Popen, command: list[str], log: Path) -> None:
        assert self.path is not None  # started only for a build with its path
        if process.wait() != 0 and not self.path.exists():  # (another process may have built it meanwhile)
            try:
                lines = log.read_text(errors="replace").strip().splitlines()
                log.unlink()
            except OSError:
                lines = []
            self.reason = f"the C compiler failed ({command[0]}): {(lines or ['(no message)'])[-1]}"
            with contextlib.suppress(OSError):
                self.path.with_suffix(".failed").write_text(self.reason + "\n")
        self.seconds = time.perf_counter() - self._started
        self._done.set()

    def _give_up(self, reason: str) -> None:
        self.reason = reason
        self._done.set()

    def poll(self) -> dict[str, Any] | None:
        """The compiled functions by name once the library is built and loaded; None until then, or if it
        cannot be (:attr:`reason` says why)."""
        if self._functions is not None or not self._done.is_set() or self.reason is not None:
            return self._functions
        assert self.path is not None  # no reason: a viable build, which has its path
        import casadi as ca

        try:
            self._functions = {name: ca.external(name, str(self.path)) for name in self.names}
        except RuntimeError as e:  # a damaged or foreign library: the next fit builds it again
            self.reason = f"the compiled library {self.path} could not be loaded: {str(e).splitlines()[0]}"
            with contextlib.suppress(OSError):
                self.path.unlink()
        return self._functions

    def refuse(self, reason: str) -> None:
        """Do not use this library (its numbers are not the virtual machine's: see
        :meth:`ude_cli.engines.compiled.CompiledEngine.verify`)."""
        self.reason = reason
        self._functions = None

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        """:meth:`poll`, after waiting for the compiler (at most ``timeout`` seconds)."""
        self._done.wait(timeout)
        return self.poll()


@functools.cache
def _compiler_identity(command: tuple[str, ...]) -> tuple[str, str]:
    """The compiler's target and version (part of the cache key: a cache shared between machines)."""
    out = []
    for flag in ("-dumpmachine", "-dumpversion"):
        try:
            out.append(subprocess.run([*command, flag], capture_output=True, text=True, timeout=30,
                                      stdin=subprocess.DEVNULL).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            out.append("")
    return out[0], out[1]


def _casadi_version() -> str:
    import casadi as ca

    return ca.__version__  # type: ignore[attr-defined]  # casadi's __init__.pyi omits __version__ (set in __init__.py)


def _remove_stale(folder: Path) -> None:
    """Temporary files of compilers that never finished (a killed machine), older than an hour."""
    now = time.time()
    for path in folder.glob("*.*.*"):
        if path.suffix in {".c", ".tmp", ".log"}:
            try:
                if now - path.stat().st_mtime > STALE_SECONDS:
                    path.unlink()
            except OSError:
                pass
