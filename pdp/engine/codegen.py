"""One way to turn generated Python source into functions. Each source is compiled under a
descriptive file name (`<pdp decide_document_read 3f2a9c1e>`) registered in `linecache`, so
tracebacks, `inspect.getsource`, pdb and profilers show the generated code, as attrs does for the
methods it writes. `pdp check --show-code` prints it.
"""

from __future__ import annotations

import functools
import hashlib
import linecache
import re
from collections import OrderedDict
from collections.abc import Callable
from types import CodeType
from typing import Any

# Sources registered in linecache, oldest first, with their compiled code. A reload compiles
# only sources it has not seen (most of a bundle is unchanged by an edit, and `compile` is most
# of a small bundle's load); a code object is immutable, and each `exec` of it makes new
# functions in their own namespace. A bound keeps a long-running sidecar's caches from growing
# without end (an evicted source only loses its listing in a traceback, never the function).
_MAX_SOURCES = 20_000
_registered: OrderedDict[str, tuple[str, str, CodeType]] = (
    OrderedDict()
)  # sha256 -> (name, source, code)


def identifier(*parts: str) -> str:
    """A Python identifier naming what a function decides: `decide`, `document`, `read` →
    `decide_document_read`."""
    return "_".join(_part(p) for p in parts if p)


@functools.lru_cache(maxsize=65_536)  # the same few type, action and rule names, load after load
def _part(text: str) -> str:
    return re.sub(r"\W", "_", text)


def define(source: str, label: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Execute `source` (one or more `def`s) in `namespace` and return it; `label` names the
    generated file in tracebacks."""
    digest = hashlib.sha256(source.encode()).hexdigest()
    filename = f"<pdp {label} {digest[:8]}>"
    cached = _registered.get(digest)
    if cached is None or cached[1] != source:  # the source itself decides, not a digest
        code = compile(source, filename, "exec")
        # mtime None: linecache.checkcache never drops it as a stale file
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        _registered[digest] = (filename, source, code)
        if len(_registered) > _MAX_SOURCES:
            old, _, _ = _registered.popitem(last=False)[1]
            linecache.cache.pop(old, None)
    else:
        code = cached[2]
    exec(code, namespace)
    return namespace


def function(source: str, name: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    """The function `name` that `source` defines, compiled under its own name."""
    fn: Callable[..., Any] = define(source, name, namespace)[name]
    return fn
