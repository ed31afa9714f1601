// Tokenizes pipe source with the extension's TextMate grammar, through the
// same engine VS Code uses (vscode-textmate + vscode-oniguruma), and checks
// the scopes given to keywords, strings, interpolations, durations and
// comments, on a sample and on every shipped .pipe file.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test, before } = require('node:test');
const vsctm = require('vscode-textmate');
const oniguruma = require('vscode-oniguruma');

const root = path.resolve(__dirname, '..', '..', '..');
const grammarPath = path.resolve(__dirname, '..', 'syntaxes', 'pipe.tmLanguage.json');
let grammar;

before(async () => {
  const wasm = fs.readFileSync(require.resolve('vscode-oniguruma/release/onig.wasm')).buffer;
  await oniguruma.loadWASM(wasm);
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async (scopeName) =>
      scopeName === 'source.pipe'
        ? vsctm.parseRawGrammar(fs.readFileSync(grammarPath, 'utf8'), grammarPath)
        : null,
  });
  grammar = await registry.loadGrammar('source.pipe');
});

/** Tokens of `text`: [{ line, start, text, scopes }], plus the final state. */
function tokenize(text) {
  let stack = vsctm.INITIAL;
  const tokens = [];
  text.split('\n').forEach((line, lineNo) => {
    const result = grammar.tokenizeLine(line, stack);
    for (const t of result.tokens) {
      tokens.push({ line: lineNo, start: t.startIndex, text: line.slice(t.startIndex, t.endIndex), scopes: t.scopes });
    }
    stack = result.ruleStack;
  });
  return { tokens, stack };
}

/**
 * Scopes of the token holding the `nth` occurrence of `needle` (first when
 * omitted), found in the tokenized text; `offset` moves into the needle.
 */
function scopesAt(text, needle, { nth = 0, offset = 0 } = {}) {
  let at = -1;
  for (let i = 0; i <= nth; i++) {
    at = text.indexOf(needle, at + 1);
    assert.notEqual(at, -1, `"${needle}" (#${i}) not in text`);
  }
  at += offset;
  const line = text.slice(0, at).split('\n').length - 1;
  const col = at - (text.lastIndexOf('\n', at - 1) + 1);
  const token = tokenize(text).tokens.find((t) => t.line === line && t.start <= col && col < t.start + t.text.length);
  assert.ok(token, `no token at "${needle}"`);
  return token.scopes;
}

function expectScope(text, needle, scope, options) {
  const scopes = scopesAt(text, needle, options);
  assert.ok(scopes.includes(scope), `"${needle}": expected ${scope}, got ${scopes.join(' ')}`);
}

function expectNoScope(text, needle, scope, options) {
  const scopes = scopesAt(text, needle, options);
  assert.ok(!scopes.some((s) => s.startsWith(scope)), `"${needle}": unexpected ${scope} in ${scopes.join(' ')}`);
}

const release = fs.readFileSync(path.join(root, 'pipelines', 'release.pipe'), 'utf8');
const deploy = fs.readFileSync(path.join(root, 'stdlib', 'deploy.pipe'), 'utf8');

test('keywords that start declarations', () => {
  expectScope(release, 'import "std/docker"', 'keyword.control.import.pipe');
  expectScope(release, 'pipeline release', 'keyword.other.pipeline.pipe');
  expectScope(release, 'pipeline release', 'entity.name.type.pipeline.pipe', { offset: 9 });
  expectScope(release, 'param version', 'keyword.other.param.pipe');
  expectScope(release, 'param version', 'variable.parameter.pipe', { offset: 6 });
  expectScope(release, 'env staging {', 'keyword.other.env.pipe');
  expectScope(release, 'env staging {', 'entity.name.section.env.pipe', { offset: 4 });
  expectScope(release, 'stage build', 'keyword.other.stage.pipe');
  expectScope(release, 'step migrate', 'keyword.other.step.pipe');
  expectScope(release, 'step migrate', 'entity.name.tag.step.pipe', { offset: 5 });
  expectScope(release, 'step "image-', 'keyword.other.step.pipe');
  expectScope(release, 'gate approve', 'keyword.other.gate.pipe');
  expectScope(release, 'chaos slow_pagespeed', 'keyword.other.chaos.pipe');
  expectScope(release, 'for svc in', 'keyword.control.loop.for.pipe');
  expectScope(release, 'for svc in', 'variable.other.loop.pipe', { offset: 4 });
  expectScope(release, 'for svc in', 'keyword.control.loop.in.pipe', { offset: 8 });
  expectScope(release, 'assert production_is_gated', 'keyword.other.assert.pipe');
  expectScope(release, 'assert production_is_gated', 'entity.name.section.assert.pipe', { offset: 7 });
  expectScope(release, 'through = [', 'variable.other.property.pipe');
  expectScope(release, 'on failure {', 'keyword.control.on.pipe');
  expectScope(release, 'on failure {', 'constant.language.handler.pipe', { offset: 3 });
  expectScope(deploy, 'template container', 'keyword.other.template.pipe');
  expectScope(deploy, 'template container', 'entity.name.function.template.pipe', { offset: 9 });
  expectScope('import "std/http" as web\n', 'as web', 'keyword.control.as.pipe');
  expectScope('import "std/http" as web\n', 'web', 'entity.name.namespace.pipe');
});

test('keywords used as keys or names are not keywords', () => {
  // `env = staging` sets a stage's environment; `env.DATA_DIR` reads it.
  expectScope(release, 'env   = staging', 'variable.other.property.pipe');
  expectNoScope(release, 'env   = staging', 'keyword.other');
  expectNoScope(release, 'env.DATA_DIR', 'keyword.other');
  expectScope(release, 'chaos.slow_pagespeed.url', 'variable.other.pipe');
  expectScope(release, 'stage chaos', 'entity.name.section.stage.pipe', { offset: 6 });
});

test('templates, types, attributes and blocks', () => {
  expectScope(release, 'docker.build {', 'entity.name.function.template.pipe');
  expectScope(release, 'list<string>', 'support.type.pipe');
  expectScope(release, 'param version: string', 'support.type.primitive.pipe', { offset: 15 });
  expectScope(deploy, 'image: string', 'variable.parameter.pipe');
  expectScope(deploy, 'image: string', 'support.type.primitive.pipe', { offset: 7 });
  expectScope(deploy, 'map<string>', 'support.type.pipe');
  expectScope(release, 'dockerfile =', 'variable.other.property.pipe');
  expectScope(release, 'retry {', 'entity.name.type.block.pipe');
  expectScope(release, 'fault latency', 'entity.name.type.block.pipe');
  expectScope(release, 'fault latency', 'entity.name.label.pipe', { offset: 6 });
  expectScope(release, 'exponential(', 'entity.name.function.call.pipe');
  expectScope(release, '??', 'keyword.operator.logical.pipe');
  expectScope(release, '=~', 'keyword.operator.match.pipe');
  expectScope(release, 'protected = true', 'constant.language.boolean.pipe', { offset: 12 });
  expectScope(deploy, 'null', 'constant.language.null.pipe');
});

test('strings, escapes and raw strings', () => {
  expectScope(release, '"std/docker"', 'string.quoted.double.pipe', { offset: 1 });
  expectScope(release, '\\"database\\"', 'constant.character.escape.pipe');
  expectScope(release, '\\"database\\"', 'string.quoted.double.pipe', { offset: 2 });
  // A raw string takes `${` as text, not as an interpolation.
  expectScope(release, "'/audits/${id}'", 'string.quoted.single.pipe', { offset: 9 });
  expectNoScope(release, "'/audits/${id}'", 'meta.interpolation', { offset: 9 });
  // `#` inside a string is text, not a comment.
  const sample = 'pipeline p {\n  channel = "#ops # x"\n  x = 1\n}\n';
  expectScope(sample, '# x', 'string.quoted.double.pipe');
  expectNoScope(sample, '# x', 'comment');
  expectScope(sample, 'x = 1', 'variable.other.property.pipe');
  // A string may span lines.
  const multi = 'template t() {\n  a = "one\n  two ${b}"\n  c = 1\n}\n';
  expectScope(multi, 'two', 'string.quoted.double.pipe');
  expectScope(multi, 'c = 1', 'variable.other.property.pipe');
  expectNoScope(multi, 'c = 1', 'string');
});

test('interpolations, nested and holding strings', () => {
  expectScope(release, '${svc}', 'punctuation.section.interpolation.begin.pipe');
  expectScope(release, '${svc}', 'meta.interpolation.pipe', { offset: 2 });
  expectScope(release, '${svc}', 'variable.other.pipe', { offset: 2 });
  expectNoScope(release, '${svc}', 'constant.character', { offset: 2 });
  // "sha-${git.short_sha ?? "local"}": the inner string is a string inside
  // the interpolation, and the outer string resumes after the `}`.
  const inner = scopesAt(release, '"local"', { offset: 1 });
  assert.ok(inner.includes('meta.interpolation.pipe'), inner.join(' '));
  assert.equal(inner.filter((s) => s === 'string.quoted.double.pipe').length, 2, inner.join(' '));
  expectScope(release, '}", "v${version}"', 'punctuation.section.interpolation.end.pipe');
  const nested = 'template t() {\n  a = "x ${ "y ${ { k = 1 }.k } z" } w"\n  b = 2\n}\n';
  expectScope(nested, 'z"', 'string.quoted.double.pipe');
  expectScope(nested, 'w"', 'string.quoted.double.pipe');
  expectNoScope(nested, 'w"', 'meta.interpolation');
  expectScope(nested, 'b = 2', 'variable.other.property.pipe');
});

test('durations and numbers', () => {
  for (const d of ['3m', '30s', '24h', '500ms', '2m']) {
    expectScope(release, ` ${d}`, 'constant.numeric.duration.pipe', { offset: 1 });
  }
  expectScope('template t() { a = 1h30m }', '1h30m', 'constant.numeric.duration.pipe');
  expectScope(release, '0.05', 'constant.numeric.pipe');
  expectNoScope(release, '0.05', 'constant.numeric.duration');
  expectScope(release, 'status = 200', 'constant.numeric.pipe', { offset: 9 });
});

test('comments and doc comments', () => {
  expectScope(release, '# 7.2.1', 'comment.line.number-sign.pipe');
  expectScope(deploy, '## Deploys', 'comment.line.documentation.pipe');
  expectNoScope(deploy, '# std/deploy', 'comment.line.documentation');
  expectScope('import "std/x" # trailing\n', '# trailing', 'comment.line.number-sign.pipe');
});

test('every shipped .pipe file tokenizes cleanly', () => {
  const dirs = ['pipelines', 'stdlib', 'examples'].map((d) => path.join(root, d));
  const files = [];
  const walk = (dir) => {
    if (!fs.existsSync(dir)) return;
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.pipe')) files.push(full);
    }
  };
  dirs.forEach(walk);
  assert.ok(files.length >= 8, `found only ${files.length} .pipe files`);
  for (const file of files) {
    const { tokens, stack } = tokenize(fs.readFileSync(file, 'utf8'));
    const invalid = tokens.filter((t) => t.scopes.some((s) => s.startsWith('invalid')));
    assert.deepEqual(invalid, [], `${file}: invalid tokens`);
    // Every string, interpolation and loop header is closed by the end.
    assert.equal(stack.depth, 1, `${file}: ends inside ${stack.toString?.() ?? 'a region'}`);
    const keywords = tokens.filter((t) => t.scopes.some((s) => s.startsWith('keyword.other.')));
    assert.ok(keywords.length > 0, `${file}: no keyword scopes at all`);
  }
});
