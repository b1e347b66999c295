"""Keep a command-line process from importing ``torch._dynamo`` (the ``torch.compile`` machinery).

torch's optimisers wrap some of their methods in ``torch._disable_dynamo``, which imports
``torch._dynamo`` the first time one is called, only to mark it "not to be compiled". ``ude`` never
uses ``torch.compile``; the import alone costs about 1 s and 70 MiB per process here (2-core CPU,
torch 2.13), a third of the sample fit's whole-process time. LBFGS, ``ude``'s main optimiser, then
never imports it; Adam's ``step`` imports it unconditionally, so a fit with an Adam stage still does.

:func:`skip_compile_machinery` records the "disabled" version of each such function as the function
itself, which is what ``_disable_dynamo`` caches after its first call; the optimisers then run
exactly the same code, without the import. It is applied only by the ``ude`` command, whose process
compiles nothing, never on import of the library: a notebook that also uses ``torch.compile`` keeps
torch's own behaviour. If torch changes how it wraps these functions, the attribute is simply unused
and torch imports ``torch._dynamo`` as before.
"""

from __future__ import annotations

import sys

#: The attribute torch._compile._disable_dynamo caches the disabled function under.
_CACHE = "__dynamo_disable"


def skip_compile_machinery() -> int:
    """Mark the optimisers' dynamo-disabled functions as already disabled; return how many.

    Does nothing once ``torch._dynamo`` is imported (something in this process may compile).
    """
    if "torch._dynamo" in sys.modules:
        return 0
    import torch.optim
    from torch.optim import optimizer as optimizer_module

    marked = 0
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
                marked += 1
    return marked


def _optimizer_classes(optim) -> list[type]:
    classes = [optim.Optimizer]
    classes += [c for c in vars(optim).values() if isinstance(c, type) and issubclass(c, optim.Optimizer)]
    return classes
