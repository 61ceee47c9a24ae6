import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ERRORS } from '../../src/errors.js';

test('docs/errors.md lists exactly the codes of the catalogue, with their messages', () => {
  const doc = readFileSync(path.resolve('docs/errors.md'), 'utf8');
  const rows = [...doc.matchAll(/^\| `(\w+)` \| (.*) \|$/gm)].map((m) => [m[1], m[2]]);
  expect(rows).toEqual(Object.entries(ERRORS).map(([code, e]) => [code, e.message]));
});
