"""`torch-audit server` end to end: pygls' language client talks to `python -m torch_audit
server` over stdio, as an editor would (diagnostics, code actions, hover, configuration)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pygls")
from lsprotocol import types  # noqa: E402
from pygls.lsp.client import LanguageClient  # noqa: E402

BAD = textwrap.dedent("""\
    import torch
    import torch.nn.functional as F


    def step(model, x, y):
        probs = torch.softmax(model(x), dim=1)
        return F.cross_entropy(probs, y)
    """)
#: the whole conversation must end well within this (the server lints in-process)
TIMEOUT = 120


class Editor:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.client = LanguageClient("test-editor", "1")
        self.published: asyncio.Queue[types.PublishDiagnosticsParams] = asyncio.Queue()
        self.messages: list[str] = []

        @self.client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def publish(params: types.PublishDiagnosticsParams) -> None:
            self.published.put_nowait(params)

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def show(params: types.ShowMessageParams) -> None:
            self.messages.append(params.message)

    async def start(self) -> types.InitializeResult:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        await self.client.start_io(sys.executable, "-m", "torch_audit", "server", cwd=str(self.root), env=env)
        result = await self.client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            root_uri=self.root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=self.root.as_uri(), name="project")],
        ))
        self.client.initialized(types.InitializedParams())
        return result

    async def diagnostics(self, uri: str) -> list[types.Diagnostic]:
        while True:
            params = await self.published.get()
            if params.uri == uri:
                return params.diagnostics

    def open(self, path: Path, text: str) -> str:
        uri = path.as_uri()
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
        return uri

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), 10)
            self.client.exit(None)
            await asyncio.wait_for(self.client.stop(), 10)
        finally:
            server = self.client._server
            if server is not None and server.returncode is None:
                server.kill()


def run(root: Path, scenario) -> None:
    async def main() -> None:
        editor = Editor(root)
        try:
            await editor.start()
            await scenario(editor)
        finally:
            await editor.stop()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def apply(text: str, edits: list[types.TextEdit]) -> str:
    lines = text.splitlines(keepends=True)

    def offset(p: types.Position) -> int:
        return sum(len(l) for l in lines[: p.line]) + p.character

    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: offset(e.range.start)] + e.new_text + text[offset(e.range.end):]
    return text


def test_diagnostics_code_actions_and_hover(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(BAD)

    async def scenario(editor: Editor) -> None:
        uri = editor.open(path, BAD)
        [diag] = await editor.diagnostics(uri)
        assert diag.code == "TA101" and diag.source == "torch-audit"
        assert diag.severity == types.DiagnosticSeverity.Error
        assert (diag.range.start.line, diag.range.start.character) == (6, 11)
        assert "softmax" in diag.message

        actions = await editor.client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), range=diag.range,
            context=types.CodeActionContext(diagnostics=[diag])))
        [fix] = [a for a in actions if "suppress" not in a.title]
        assert fix.title == "TA101: Remove the softmax; pass the logits to the loss (unsafe fix)"
        assert fix.kind == types.CodeActionKind.QuickFix and not fix.is_preferred
        fixed = apply(BAD, fix.edit.changes[uri])
        assert fixed == BAD.replace("torch.softmax(model(x), dim=1)", "model(x)")
        suppress = next(a for a in actions if "suppress" in a.title)
        suppressed = apply(BAD, suppress.edit.changes[uri])
        assert "    return F.cross_entropy(probs, y)  # torch-audit: ignore[TA101]\n" in suppressed

        hover = await editor.client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=6, character=14)))
        assert "TA101" in hover.contents.value and "Why is this bad?" in hover.contents.value
        nothing = await editor.client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=1)))
        assert nothing is None

        # the edits applied in the editor: the diagnostic goes away on change
        editor.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=suppressed)]))
        assert list(await editor.diagnostics(uri)) == []
        editor.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=3),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=fixed)]))
        assert [d.code for d in await editor.diagnostics(uri)] == []
        path.write_text(BAD)
        editor.client.text_document_did_save(types.DidSaveTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
        # saved: the document's text is still the editor's (fixed) one
        assert list(await editor.diagnostics(uri)) == []

    run(tmp_path, scenario)


def test_workspace_configuration_applies(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.torch-audit]\nignore = ["TA101"]\nper-file-ignores = { "legacy/*" = ["TA106"] }\n'
    )
    (tmp_path / "legacy").mkdir()
    source = BAD + "\n\ny = F.softmax(torch.ones(3))\n"

    async def scenario(editor: Editor) -> None:
        uri = editor.open(tmp_path / "train.py", source)
        assert [d.code for d in await editor.diagnostics(uri)] == ["TA106"]
        legacy = editor.open(tmp_path / "legacy" / "old.py", source)
        assert list(await editor.diagnostics(legacy)) == []
        # a broken configuration: one message, no crash
        (tmp_path / "pyproject.toml").write_text('[tool.torch-audit]\nselect = ["NOPE999"]\n')
        editor.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=source + "\n")]))
        assert list(await editor.diagnostics(uri)) == []
        assert any("NOPE999" in m for m in editor.messages)

    run(tmp_path, scenario)


def test_fix_all_applies_the_safe_fixes(tmp_path):
    source = "import torch\n\n\ndef f(x):\n    return torch.log(torch.softmax(x, dim=1))\n"

    async def scenario(editor: Editor) -> None:
        uri = editor.open(tmp_path / "a.py", source)
        [diag] = await editor.diagnostics(uri)
        actions = await editor.client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=0)),
            context=types.CodeActionContext(diagnostics=[], only=["source.fixAll"])))
        [action] = actions
        assert action.kind == "source.fixAll.torch-audit"
        assert apply(source, action.edit.changes[uri]) == source.replace(
            "torch.log(torch.softmax(x, dim=1))", "torch.log_softmax(x, dim=1)")

    run(tmp_path, scenario)


def test_positions_are_utf16_code_units(tmp_path):
    # the default LSP position encoding: an emoji before a finding counts two units
    source = 'import torch\nimport torch.nn.functional as F\n\nlabel = "\U0001F600"; y = F.softmax(torch.ones(3))\n'

    async def scenario(editor: Editor) -> None:
        uri = editor.open(tmp_path / "u.py", source)
        [diag] = await editor.diagnostics(uri)
        line = source.splitlines()[3]
        assert diag.code == "TA106"
        assert diag.range.start.character == line.index("F.softmax") + 1  # one code point, two units

    run(tmp_path, scenario)


def test_notebook_json_is_not_linted_as_python(tmp_path):
    async def scenario(editor: Editor) -> None:
        editor.open(tmp_path / "n.ipynb", '{"cells": [], "metadata": {}, "nbformat": 4}')
        uri = editor.open(tmp_path / "a.py", BAD)
        first = await asyncio.wait_for(editor.published.get(), TIMEOUT)
        assert first.uri == uri  # nothing was published for the notebook (no syntax error)

    run(tmp_path, scenario)


def test_the_server_does_not_import_torch(tmp_path):
    code = textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from torch_audit.lsp import Linter, build_server
        build_server()
        from torch_audit.lsp import _rule_help
        findings, _ = Linter().lint(Path({str(tmp_path / 'a.py')!r}), {BAD!r})
        assert [f.code for f in findings] == ["TA101"], findings
        assert "Why is this bad?" in _rule_help(None, "", findings[0])
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
