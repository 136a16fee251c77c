"""One way to turn generated Python source into functions. Each function's code carries a
descriptive file name (`<pdp decide_document_read 3f2a9c1e>`) registered in `linecache` with its
source, so tracebacks, `inspect.getsource`, pdb and profilers show the generated code, as attrs
does for the methods it writes. `pdp check --show-code` prints it. Sources are compiled once per
process, and sources differing only in the function's name once for all of them.
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
    cached = _registered.get(digest)
    if cached is None or cached[1] != source:  # the source itself decides, not a digest
        filename = _register(source, label, digest)
        code = compile(source, filename, "exec")
        _registered[digest] = (filename, source, code)
    else:
        code = cached[2]
    exec(code, namespace)
    return namespace


def _register(source: str, label: str, digest: str) -> str:
    """List `source` in linecache under its own file name, within the bound."""
    filename = f"<pdp {label} {digest[:8]}>"
    # mtime None: linecache.checkcache never drops it as a stale file
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    if len(_registered) >= _MAX_SOURCES:
        old, _, _ = _registered.popitem(last=False)[1]
        linecache.cache.pop(old, None)
    return filename


# Sources that differ only in the name of the function they define compile once: the decide and
# key functions of most entries of a large bundle are the same code under another name (a
# rename of a compiled function is a copy of its code object, a compile is ~100x that).
_MAX_SHAPES = 20_000
_shapes: dict[str, CodeType] = {}  # source with the name replaced by _SHAPE -> its module code
_SHAPE = "_generated"


def function(source: str, name: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    """The function `name` that `source` (one `def`) defines, compiled under its own name and
    listed under its own file name: tracebacks and `inspect.getsource` show this source."""
    head = f"def {name}("
    if not source.startswith(head) or source.count(name) != 1:
        fn: Callable[..., Any] = define(source, name, namespace)[name]
        return fn
    shape = f"def {_SHAPE}(" + source[len(head) :]
    module = _shapes.get(shape)
    if module is None:
        if len(_shapes) >= _MAX_SHAPES:
            _shapes.clear()
        module = _shapes[shape] = compile(shape, f"<pdp {name}>", "exec")
    exec(module, namespace)
    made = namespace.pop(_SHAPE)
    digest = hashlib.sha256(source.encode()).hexdigest()
    cached = _registered.get(digest)
    if cached is None or cached[1] != source:
        filename = _register(source, name, digest)
        code = made.__code__.replace(co_name=name, co_qualname=name, co_filename=filename)
        _registered[digest] = (filename, source, code)
    else:
        code = cached[2]
    made.__code__ = code
    made.__name__ = made.__qualname__ = name
    namespace[name] = made
    return made  # type: ignore[no-any-return]
