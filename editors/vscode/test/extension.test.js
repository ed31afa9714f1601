// Checks the extension manifest and that the client starts `<pipe.path> lsp`
// over stdio, with the `vscode` module stubbed (no editor needed).
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const Module = require('node:module');
const { test } = require('node:test');

const dir = path.resolve(__dirname, '..');
const manifest = require(path.join(dir, 'package.json'));

test('manifest contributes the pipe language, grammar and settings', () => {
  const [language] = manifest.contributes.languages;
  assert.equal(language.id, 'pipe');
  assert.deepEqual(language.extensions, ['.pipe']);
  const [grammar] = manifest.contributes.grammars;
  assert.equal(grammar.language, 'pipe');
  assert.equal(grammar.scopeName, 'source.pipe');
  const tm = JSON.parse(fs.readFileSync(path.join(dir, grammar.path), 'utf8'));
  assert.equal(tm.scopeName, 'source.pipe');
  assert.equal(manifest.contributes.configuration.properties['pipe.path'].default, 'pipe');
  assert.ok(fs.existsSync(path.join(dir, manifest.main)), manifest.main);
  assert.ok(manifest.dependencies['vscode-languageclient']);
});

test('language configuration: comments, brackets, auto-closing', () => {
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'language-configuration.json'), 'utf8'));
  assert.equal(config.comments.lineComment, '#');
  assert.deepEqual(config.brackets, [['{', '}'], ['[', ']'], ['(', ')']]);
  const opens = config.autoClosingPairs.map((p) => p.open);
  for (const open of ['{', '[', '(', '"', "'"]) assert.ok(opens.includes(open), open);
  assert.ok(new RegExp(config.indentationRules.increaseIndentPattern).test('  stage build {'));
  assert.ok(new RegExp(config.indentationRules.decreaseIndentPattern).test('  }'));
});

test('the client runs `<pipe.path> lsp` over stdio', () => {
  let setting = '/opt/pipe/bin/pipe';
  const vscodeStub = new Proxy(
    {
      workspace: { getConfiguration: (section) => ({ get: (key) => (section === 'pipe' && key === 'path' ? setting : undefined) }) },
    },
    { get: (target, key) => (key in target ? target[key] : class {}) },
  );
  const resolve = Module._resolveFilename;
  Module._resolveFilename = function (request, ...rest) {
    return request === 'vscode' ? 'vscode' : resolve.call(this, request, ...rest);
  };
  require.cache.vscode = { id: 'vscode', filename: 'vscode', loaded: true, exports: vscodeStub };
  try {
    const { serverOptions } = require(path.join(dir, manifest.main));
    const { TransportKind } = require('vscode-languageclient/node');
    const options = serverOptions();
    assert.equal(options.run.command, '/opt/pipe/bin/pipe');
    assert.deepEqual(options.run.args, ['lsp']);
    assert.equal(options.run.transport, TransportKind.stdio);
    setting = '';
    assert.equal(serverOptions().run.command, 'pipe', 'an empty setting falls back to pipe on PATH');
  } finally {
    Module._resolveFilename = resolve;
    delete require.cache.vscode;
  }
});
