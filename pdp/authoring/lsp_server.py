"""The language server behind `pdp lsp` (pygls over stdio): it converts positions between the
protocol (0-based) and policy_lang (1-based) and publishes what `pdp.authoring.language` finds."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from pdp.authoring import language
from policy_lang.diagnostics import Diagnostic, Loc

SOURCE = "pdp"


class PolicyServer(LanguageServer):
    """pygls's server plus the URIs last given a non-empty list, to clear once they are fixed."""

    def __init__(self) -> None:
        super().__init__("pdp", metadata.version("pdp"))
        self.published: set[str] = set()

    def open_docs(self) -> dict[Path, str]:
        return {
            _path(uri): doc.source
            for uri, doc in self.workspace.text_documents.items()
            if uri.startswith("file:")
        }

    def publish(self, uri: str) -> None:
        """Diagnostics for every file of the bundle holding `uri` (another file's errors may
        come or go with this one's edit), and empty lists for files fixed since."""
        try:
            by_file = language.diagnostics(_path(uri), self.open_docs())
        except OSError:
            return
        uris = {p.as_uri(): ds for p, ds in by_file.items()}
        for stale in self.published - set(uris):
            uris[stale] = []
        for target, found in uris.items():
            self.text_document_publish_diagnostics(
                types.PublishDiagnosticsParams(uri=target, diagnostics=[to_lsp(d) for d in found])
            )
        self.published = {u for u, ds in uris.items() if ds}


def create_server() -> PolicyServer:
    server = PolicyServer()
    server.feature(types.TEXT_DOCUMENT_DID_OPEN)(_changed)
    server.feature(types.TEXT_DOCUMENT_DID_CHANGE)(_changed)
    server.feature(types.TEXT_DOCUMENT_DID_SAVE)(_changed)
    # Closed, the file on disk is what counts again, for it and the files that use it.
    server.feature(types.TEXT_DOCUMENT_DID_CLOSE)(_changed)
    server.feature(types.TEXT_DOCUMENT_FORMATTING)(_formatting)
    server.feature(types.TEXT_DOCUMENT_DEFINITION)(_definition)
    server.feature(types.TEXT_DOCUMENT_HOVER)(_hover)
    return server


def _changed(
    ls: PolicyServer,
    params: types.DidOpenTextDocumentParams
    | types.DidChangeTextDocumentParams
    | types.DidSaveTextDocumentParams
    | types.DidCloseTextDocumentParams,
) -> None:
    ls.publish(params.text_document.uri)


def _formatting(
    ls: PolicyServer, params: types.DocumentFormattingParams
) -> list[types.TextEdit] | None:
    """One edit replacing the whole document with the formatter's output; none when it is
    already formatted; null when it does not parse (its diagnostics say why)."""
    doc = ls.workspace.get_text_document(params.text_document.uri)
    formatted = language.format_text(doc.source, doc.path)
    if formatted is None or formatted == doc.source:
        return None if formatted is None else []
    end = types.Position(line=len(doc.lines), character=0)
    whole = types.Range(start=types.Position(line=0, character=0), end=end)
    return [types.TextEdit(range=whole, new_text=formatted)]


def _definition(ls: PolicyServer, params: types.DefinitionParams) -> list[types.Location] | None:
    path, line, col = _where(params)
    found = language.definition(path, ls.open_docs(), line, col)
    return [
        types.Location(uri=Path(d.name_loc.file).as_uri(), range=_range(d.name_loc)) for d in found
    ] or None


def _hover(ls: PolicyServer, params: types.HoverParams) -> types.Hover | None:
    path, line, col = _where(params)
    text = language.hover(path, ls.open_docs(), line, col)
    if text is None:
        return None
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))


def _path(uri: str) -> Path:
    return Path(to_fs_path(uri) or uri).resolve()


def _where(params: types.DefinitionParams | types.HoverParams) -> tuple[Path, int, int]:
    """The document's path and the 1-based line and column of the position."""
    return (
        _path(params.text_document.uri),
        params.position.line + 1,
        params.position.character + 1,
    )


def _range(loc: Loc) -> types.Range:
    line, col = max(loc.line - 1, 0), max(loc.col - 1, 0)
    if loc.end_col and (loc.end_line or loc.line) == loc.line:
        end = types.Position(line=line, character=max(loc.end_col - 1, col + 1))
    elif loc.end_line and loc.end_col:
        end = types.Position(line=loc.end_line - 1, character=loc.end_col - 1)
    else:
        end = types.Position(line=line, character=col + 1)
    return types.Range(start=types.Position(line=line, character=col), end=end)


def to_lsp(d: Diagnostic) -> types.Diagnostic:
    """A policy diagnostic as the protocol's: the same position, code and message; the hint as
    related information at the same place."""
    rng = _range(d.loc)
    related = None
    if d.hint and d.loc.file:
        location = types.Location(uri=Path(d.loc.file).as_uri(), range=rng)
        related = [types.DiagnosticRelatedInformation(location=location, message=f"hint: {d.hint}")]
    return types.Diagnostic(
        range=rng,
        message=d.message,
        severity=types.DiagnosticSeverity.Error if d.is_error else types.DiagnosticSeverity.Warning,
        code=d.code,
        source=SOURCE,
        related_information=related,
    )
