"""Keep a command-line process from importing ``torch._dynamo`` (the ``torch.compile`` machinery).

torch's optimisers wrap some of their methods in ``torch._disable_dynamo``, which imports
``torch._dynamo`` the first time one is called, only to mark it "not to be compiled". ``ude`` never
uses ``torch.compile``; the import alone costs about 1 s and 70 MiB per process here (2-core CPU,
torch 2.13), a third of the sample fit's whole-process time. Adam's ``step`` also imports it itself, on
every call, to mark graph breaks around the update; :func:`optimizer_step` runs that step's own body
instead (what the wrapper runs, less the import, the graph breaks and the profiler's record).

:func:`skip_compile_machinery` records the "disabled" version of each such function as the function
itself, which is what ``_disable_dynamo`` caches after its first call; the optimisers then run
exactly the same code, without the import. The ``ude`` command, whose process compiles nothing, applies
it for good; the library's :func:`ude_cli.api.fit` for the fit's duration only
(:func:`compile_machinery_skipped`), never on import: a notebook that also uses ``torch.compile`` keeps
torch's own behaviour. If torch changes how it wraps these functions, the attribute is simply unused
and torch imports ``torch._dynamo`` as before.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.optim import Optimizer

#: The attribute torch._compile._disable_dynamo caches the disabled function under.
_CACHE = "__dynamo_disable"
#: Set by :func:`skip_compile_machinery`: this process compiles nothing.
_lean = False


def skip_compile_machinery() -> int:
    """Mark the optimisers' dynamo-disabled functions as already disabled; return how many.

    Does nothing once ``torch._dynamo`` is imported (something in this process may compile).
    """
    return len(_mark())


@contextlib.contextmanager
def compile_machinery_skipped():
    """The same savings for the library's :func:`ude_cli.api.fit`, for the fit's duration only.

    Inside, the optimisers run as in :func:`skip_compile_machinery`; on leaving, the marks set here are
    taken off again, so that the next optimiser call outside imports ``torch._dynamo`` and caches
    torch's own disabled functions, as if ``ude`` had never been there: a notebook that uses
    ``torch.compile`` after (or before: then nothing is marked) a fit keeps torch's behaviour. Nested or
    in a process already marked by the command line, it leaves the marks alone."""
    global _lean
    if _lean:
        yield
        return
    marked = _mark()
    try:
        yield
    finally:
        _lean = False
        for fn in marked:
            with contextlib.suppress(AttributeError, TypeError):
                if getattr(fn, _CACHE, None) is fn:
                    delattr(fn, _CACHE)


def _mark() -> list:
    """Mark each dynamo-disabled optimiser function not yet disabled as its own disabled version; return them."""
    global _lean
    if "torch._dynamo" in sys.modules:
        return []
    _lean = True
    import torch.optim
    from torch.optim import optimizer as optimizer_module

    marked = []
    modules = [optimizer_module, *(sys.modules[m] for m in list(sys.modules) if m.startswith("torch.optim."))]
    seen: set[int] = set()
    for owner in [*modules, *_optimizer_classes(torch.optim)]:
        for value in list(vars(owner).values()):
            fn = getattr(value, "__wrapped__", None)
            if fn is None or id(fn) in seen or not callable(fn):
                continue
            seen.add(id(fn))
            if getattr(fn, _CACHE, None) is None:
                try:
                    setattr(fn, _CACHE, fn)
                except (AttributeError, TypeError):
                    continue
                marked.append(fn)
    return marked


def _optimizer_classes(optim) -> list[type]:
    classes = [optim.Optimizer]
    classes += [c for c in vars(optim).values() if isinstance(c, type) and issubclass(c, optim.Optimizer)]
    return classes


def optimizer_step(opt: Optimizer) -> None:
    """``opt.step()``; in a process spared ``torch._dynamo``, the step's own body under the grad mode its
    wrapper sets (``torch.optim.optimizer._use_grad_for_differentiable`` imports torch._dynamo on every
    call only to place graph breaks). Without the wrapper (another torch), plain ``opt.step()``."""
    import torch

    raw = _raw_step(type(opt))  # type: ignore[arg-type]  # a class is hashable: mypy misreads lru_cache's Hashable
    if not _lean or "torch._dynamo" in sys.modules or raw is type(opt).step:
        opt.step()
        return
    with torch.set_grad_enabled(bool(opt.defaults.get("differentiable", False))):
        raw(opt)


@functools.cache
def _raw_step(cls: type[Optimizer]):
    """The optimiser class's ``step`` without its wrappers (the same for every step of every instance)."""
    import inspect

    return inspect.unwrap(cls.step)
