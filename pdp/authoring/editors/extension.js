// The VS Code side of `pdp lsp`: start the server over stdio for .pdp files (docs/editors.md).
"use strict";
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace.getConfiguration("pdp").get("command");
  const server = { command, args, transport: TransportKind.stdio };
  client = new LanguageClient("pdp", "pdp language server", server, {
    documentSelector: [{ scheme: "file", language: "pdp" }],
  });
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
