// Writes the input of every corpus test to DIR/<n>.pipe and prints one line
// per test: "<file>\t<ok|error>\t<title>". test.sh feeds these to `pipe check`
// to check that the pest grammar agrees with this one.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const [dir] = process.argv.slice(2);
const corpus = path.join(__dirname, 'corpus');
const rule = /^={3,}\n(.+)\n((?::\S+\n)*)={3,}\n([\s\S]*?)\n-{3,}\n/gm;
let n = 0;
for (const name of fs.readdirSync(corpus).sort()) {
  const text = fs.readFileSync(path.join(corpus, name), 'utf8');
  for (const [, title, attributes, input] of text.matchAll(rule)) {
    const file = path.join(dir, `${String(++n).padStart(3, '0')}.pipe`);
    fs.writeFileSync(file, `${input.replace(/^\n+|\n+$/g, '')}\n`);
    const expect = attributes.includes(':error') ? 'error' : 'ok';
    console.log(`${file}\t${expect}\t${name}: ${title}`);
  }
}
