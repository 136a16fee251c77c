"""`pdp lsp` as a real subprocess over stdio, driven by pygls's language client with lsprotocol's
types: diagnostics on open and change are `pdp validate`'s (same line:col, same message),
formatting is the formatter's output, definition and hover find a relation's declaration."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from lsprotocol import types
from pygls.lsp.client import LanguageClient

from pdp.cli import main
from policy_lang.formatter import format_source

SAAS = Path(__file__).parents[2] / "bundles" / "saas"
DEADLINE = 30.0
T = TypeVar("T")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "saas"
    shutil.copytree(SAAS, root)
    return root.resolve()


class Session:
    """A pygls client talking to `pdp lsp`, with the diagnostics published so far by URI."""

    def __init__(self) -> None:
        self.client = LanguageClient("pdp-tests", "1")
        self.diagnostics: dict[str, list[types.Diagnostic]] = {}
        self.changed = asyncio.Event()

        @self.client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def published(params: types.PublishDiagnosticsParams) -> None:
            self.diagnostics[params.uri] = params.diagnostics
            self.changed.set()

    async def start(self, root: Path) -> None:
        await self.client.start_io(sys.executable, "-m", "pdp.cli", "lsp")
        await within(
            self.client.initialize_async(
                types.InitializeParams(
                    capabilities=types.ClientCapabilities(), root_uri=root.as_uri()
                )
            )
        )
        self.client.initialized(types.InitializedParams())

    async def stop(self) -> None:
        await within(self.client.shutdown_async(None))
        self.client.exit(None)
        await within(self.client.stop())

    async def diagnostics_for(self, uri: str, ready: Callable[[list[Any]], bool]) -> list[Any]:
        """The diagnostics of `uri` once `ready` accepts them (waiting for each publication)."""

        async def wait() -> list[Any]:
            while not (uri in self.diagnostics and ready(self.diagnostics[uri])):
                self.changed.clear()
                await self.changed.wait()
            return self.diagnostics[uri]

        return await within(wait())

    def open(self, path: Path, text: str) -> None:
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=path.as_uri(), language_id="pdp", version=1, text=text
                )
            )
        )

    def change(self, path: Path, text: str, version: int) -> None:
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=path.as_uri(), version=version
                ),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
            )
        )


async def within(aw: Awaitable[T]) -> T:
    return await asyncio.wait_for(aw, DEADLINE)


def run(scenario: Callable[[Session], Awaitable[None]], root: Path) -> None:
    async def go() -> None:
        session = Session()
        await session.start(root)
        try:
            await scenario(session)
        finally:
            await session.stop()

    asyncio.run(go())


def validate_errors(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> list[tuple[str, int, int, str]]:
    """`pdp validate`'s errors as (file, line, col, message)."""
    assert main(["validate", str(root)]) == 1
    found = []
    for line in capsys.readouterr().err.splitlines():
        m = re.match(r"^(.+?):(\d+):(\d+): error\[[a-z_]+\]: (.*)$", line)
        if m:
            found.append((m[1], int(m[2]), int(m[3]), m[4]))
    return found


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("has view on resource", "has viewz on resource"),  # a checker error
        ("when resource.owner == subject.id", "when resource.owner = subject.id"),  # syntax
    ],
)
def test_diagnostics_on_open_and_change_are_validate_s(
    bundle: Path, capsys: pytest.CaptureFixture[str], old: str, new: str
) -> None:
    rules = bundle / "policies" / "rules.pdp"
    good = rules.read_text()
    bad = good.replace(old, new, 1)
    assert bad != good
    rules.write_text(bad)
    expected = [
        (line, col, msg) for f, line, col, msg in validate_errors(bundle, capsys) if f == str(rules)
    ]
    assert expected
    rules.write_text(good)  # the editor's text, not the file on disk, is what counts

    async def scenario(s: Session) -> None:
        s.open(rules, bad)
        got = await s.diagnostics_for(rules.as_uri(), bool)
        assert [
            (d.range.start.line + 1, d.range.start.character + 1, d.message) for d in got
        ] == expected
        assert all(d.source == "pdp" and d.severity == types.DiagnosticSeverity.Error for d in got)
        s.change(rules, good, 2)
        assert not await s.diagnostics_for(rules.as_uri(), lambda ds: not ds)

    run(scenario, bundle)


def test_formatting_returns_the_formatter_s_output(bundle: Path) -> None:
    schema = bundle / "policies" / "schema.pdp"
    messy = schema.read_text().replace("relation owner: user", "relation   owner :user")
    assert format_source(messy) != messy

    async def scenario(s: Session) -> None:
        s.open(schema, messy)
        edits = await within(
            s.client.text_document_formatting_async(
                types.DocumentFormattingParams(
                    text_document=types.TextDocumentIdentifier(uri=schema.as_uri()),
                    options=types.FormattingOptions(tab_size=2, insert_spaces=True),
                )
            )
        )
        assert edits is not None and len(edits) == 1
        assert edits[0].new_text == format_source(messy, str(schema))
        assert edits[0].range.start == types.Position(line=0, character=0)

    run(scenario, bundle)


def _position_of(path: Path, line_contains: str, word: str, nth: int = 0) -> types.Position:
    lines = path.read_text().splitlines()
    hits = [i for i, line in enumerate(lines) if line_contains in line]
    i = hits[nth]
    return types.Position(line=i, character=lines[i].index(word, lines[i].index(line_contains)) + 1)


def test_definition_and_hover_of_a_relation(bundle: Path) -> None:
    rules = bundle / "policies" / "rules.pdp"
    schema = bundle / "policies" / "schema.pdp"
    # `update on document when subject has edit on resource`: document's `edit`, not folder's
    at = _position_of(rules, "when subject has edit on resource", "edit", nth=0)
    declared = _position_of(schema, "permission edit =", "edit", nth=1)  # document comes second

    async def scenario(s: Session) -> None:
        s.open(rules, rules.read_text())
        where = types.TextDocumentIdentifier(uri=rules.as_uri())
        found = await within(
            s.client.text_document_definition_async(
                types.DefinitionParams(text_document=where, position=at)
            )
        )
        assert isinstance(found, list) and len(found) == 1
        assert found[0].uri == schema.as_uri()
        assert found[0].range.start.line == declared.line
        assert found[0].range.start.character == declared.character - 1
        assert found[0].range.end.character == declared.character - 1 + len("edit")

        hover = await within(
            s.client.text_document_hover_async(types.HoverParams(text_document=where, position=at))
        )
        assert hover is not None and isinstance(hover.contents, types.MarkupContent)
        assert "permission document#edit" in hover.contents.value
        assert "permission edit = owner + editor + parent->edit" in hover.contents.value

        # a role: `has role approver` goes to `role approver`, not anything else named so
        role_at = _position_of(rules, "has role approver", "approver")
        roles = await within(
            s.client.text_document_definition_async(
                types.DefinitionParams(text_document=where, position=role_at)
            )
        )
        assert isinstance(roles, list) and [r.uri for r in roles] == [
            (bundle / "policies" / "roles.pdp").as_uri()
        ]

    run(scenario, bundle)
