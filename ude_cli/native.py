"""Native code for the compiled engine: CasADi's C code generation, compiled by the system's C compiler
in the background and kept on disk, so that a model's solves run as machine code instead of in CasADi's
virtual machine.

Why: the virtual machine spends ~5-10 ns per scalar instruction; the same function compiled by a C
compiler runs ~8 times faster (one dopri5 attempt of the sample problem: 5.6 against 0.7 us). Compiling
takes about a second, so training never waits for it: it starts in the virtual machine and switches to
the library when the compiler is done (checked between solves); the next fit of the same model
structure loads the library from the cache in a millisecond.

The switch changes no number: the code is compiled without ``-march``, fast-math or floating-point
contraction (``-O2 -ffp-contract=off``), so it performs the virtual machine's IEEE operations in the same
order, and calls the same libm (tested bit for bit in ``tests/test_native.py``).

Environment:
    ``UDE_NATIVE=0``: never compile (the virtual machine only).
    ``UDE_CC``, else ``CC``, else the first of ``cc``, ``gcc``, ``clang`` on the PATH: the compiler.
    ``UDE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ude``, else ``~/.cache/ude``: where libraries are kept
    (``native/<hash>.so``; safe to delete at any time).

Without a compiler (or on Windows), or when compiling fails, the engine stays in the virtual machine: the
same numbers, only slower; ``metrics.json``'s ``native_code`` says which ran.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
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


def enabled() -> bool:
    """Whether native code may be used at all (``UDE_NATIVE`` not set to 0, and not on Windows)."""
    return os.environ.get("UDE_NATIVE", "1").strip().lower() not in {"0", "off", "false", "no"} and os.name == "posix"


def possible(functions: Sequence[Any]) -> bool:
    """Whether :class:`NativeLibrary` would compile ``functions`` (enabled, a compiler, not too large)."""
    return enabled() and compiler() is not None and sum(fn.n_instructions() for fn in functions) <= MAX_INSTRUCTIONS


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


class NativeLibrary:
    """``functions`` compiled into one shared library, in the background; :meth:`poll` gives them as
    CasADi functions once it is loaded (``None`` before, and for good when it cannot be). ``extra_source``:
    C code compiled with them, which may call them by name (:attr:`path` is the library, for ctypes).

    A library already in the cache is loaded at once. Otherwise the compiler runs as a separate process
    that writes a temporary file and renames it into the cache when done, even if this process has ended
    by then (the next fit finds it); processes compiling the same source at once do not disturb each other.
    """

    def __init__(self, functions: Sequence[Any], extra_source: str = ""):
        self.names = [fn.name() for fn in functions]
        self.reason: str | None = None  # why there is no native code, when there is none
        self.seconds = 0.0  # compile time waited for in this process (0 when loaded from the cache)
        self.cached = False  # found in the cache, compiled by an earlier process
        self.path: Path | None = None
        self._functions: dict[str, Any] | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        command = compiler() if enabled() else None
        if command is None:
            self._give_up("native code disabled (UDE_NATIVE=0)" if not enabled() else "no C compiler found")
            return
        size = sum(fn.n_instructions() for fn in functions)
        if size > MAX_INSTRUCTIONS:
            self._give_up(f"the model's functions are too large to compile quickly ({size:,} instructions, more "
                          f"than {MAX_INSTRUCTIONS:,})")
            return
        source = source_of(functions) + extra_source  # C that calls the functions by name
        key = hashlib.sha256("\0".join([source, *command, *FLAGS, _casadi_version(), sys.platform]).encode())
        folder = cache_dir()
        self.path = folder / f"{key.hexdigest()[:24]}.so"
        self.cached = self.path.exists()
        if self.cached:
            self._done.set()
            return
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            _remove_stale(folder)
            c_file = folder / f"{self.path.stem}.{os.getpid()}.{threading.get_ident()}.c"
            c_file.write_text(source)
        except OSError as e:
            self._give_up(f"cannot write to the cache {folder}: {e.strerror}")
            return
        # The compiler is started here, not in the thread, and the rename into the cache is the shell's:
        # if this process ends first (a short fit), the compilation still completes for the next fit.
        temporary, log = c_file.with_suffix(".so.tmp"), c_file.with_suffix(".log")
        script = ('tmp=$0 final=$1 src=$2 log=$3; shift 3; "$@" 2>"$log"; status=$?; rm -f "$src"; '
                  'if [ $status -eq 0 ]; then mv -f "$tmp" "$final"; rm -f "$log"; else rm -f "$tmp"; fi; exit $status')
        self._started = time.perf_counter()
        try:
            process = subprocess.Popen(["sh", "-c", script, str(temporary), str(self.path), str(c_file), str(log),
                                        *command, *FLAGS, "-o", str(temporary), str(c_file), "-lm"],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            self._give_up(f"the C compiler could not be run: {e.strerror}")
            return
        self._thread = threading.Thread(target=self._wait, args=(process, command, log), daemon=True)
        self._thread.start()

    def _wait(self, process: subprocess.Popen, command: list[str], log: Path) -> None:
        if process.wait() != 0:
            try:
                lines = log.read_text(errors="replace").strip().splitlines()
                log.unlink()
            except OSError:
                lines = []
            self.reason = f"the C compiler failed ({command[0]}): {(lines or ['(no message)'])[-1]}"
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
        import casadi as ca

        try:
            self._functions = {name: ca.external(name, str(self.path)) for name in self.names}
        except RuntimeError as e:  # a damaged library in the cache: not fatal, the virtual machine remains
            self.reason = f"the compiled library {self.path} could not be loaded: {str(e).splitlines()[0]}"
        return self._functions

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        """:meth:`poll`, after waiting for the compiler (at most ``timeout`` seconds)."""
        self._done.wait(timeout)
        return self.poll()


def _casadi_version() -> str:
    import casadi as ca

    return ca.__version__


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
