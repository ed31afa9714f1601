// The pipe extension: registers the language (grammar and configuration come
// from package.json) and starts the pipe language server, `pipe lsp`, over
// stdio. The binary is the `pipe.path` setting (default: `pipe` on PATH).
'use strict';

const vscode = require('vscode');
const { LanguageClient, TransportKind } = require('vscode-languageclient/node');

let client;

/** The command line that starts the server, from the current settings. */
function serverOptions() {
  const command = vscode.workspace.getConfiguration('pipe').get('path') || 'pipe';
  const run = { command, args: ['lsp'], transport: TransportKind.stdio };
  return { run, debug: run };
}

async function start(context) {
  client = new LanguageClient(
    'pipe',
    'pipe language server',
    serverOptions(),
    {
      documentSelector: [{ language: 'pipe' }],
      synchronize: {
        fileEvents: vscode.workspace.createFileSystemWatcher('**/*.pipe'),
      },
    },
  );
  try {
    await client.start();
  } catch (error) {
    const path = vscode.workspace.getConfiguration('pipe').get('path');
    vscode.window.showErrorMessage(
      `Could not start the pipe language server (\`${path} lsp\`): ${error.message}. ` +
        'Install pipe or set `pipe.path`.',
    );
  }
  context.subscriptions.push({ dispose: () => client && client.stop() });
}

async function restart(context) {
  if (client) {
    await client.stop().catch(() => {});
    client = undefined;
  }
  await start(context);
}

async function activate(context) {
  context.subscriptions.push(
    vscode.commands.registerCommand('pipe.restartServer', () => restart(context)),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration('pipe.path')) {
        restart(context);
      }
    }),
  );
  await start(context);
}

async function deactivate() {
  if (client) {
    await client.stop();
  }
}

module.exports = { activate, deactivate, serverOptions };
