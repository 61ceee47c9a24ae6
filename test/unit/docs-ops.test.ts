/**
 * Docs in step with the code for what operators use: every metric and every option of every
 * `tsbridge` subcommand in docs/operations.md, the IPAM options in docs/options.md, every
 * variable loadConfig reads in the README's table.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { buildProgram } from '../../src/cli.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { IPAM_OPTIONS, REQUEST_ADDRESS_TYPE } from '../../src/protocol/ipam.js';
import { emptyState } from '../../src/state/types.js';
import { REPO_ROOT } from '../fakes/recorded.js';

const read = (f: string) => readFileSync(path.join(REPO_ROOT, f), 'utf8');

test('docs/operations.md describes every tsbridge_ metric, and no other', async () => {
  const doc = read('docs/operations.md');
  const registered = (await new Metrics({ state: emptyState, info: { instance: 'x', version: '1' } }).registry.getMetricsAsJSON()).map((m) => m.name).sort();
  const documented = [...doc.matchAll(/^\| `(tsbridge_[a-z_]+)` \|/gm)].map((m) => m[1]).sort();
  expect(documented).toEqual(registered);
});

test('docs/operations.md names every subcommand and each of its options', () => {
  const doc = read('docs/operations.md');
  const program = buildProgram({ io: { out: () => undefined, err: () => undefined, env: {} }, code: 0 });
  expect(program.commands.map((c) => c.name()).sort()).toEqual(['doctor', 'gc', 'health', 'ports', 'status']);
  for (const c of program.commands) {
    expect({ command: c.name(), documented: doc.includes(`\`tsbridge ${c.name()}\``) }).toEqual({ command: c.name(), documented: true });
    for (const o of c.options) {
      const flag = o.long!;
      expect({ command: c.name(), flag, documented: doc.includes(`\`${flag}`) }).toEqual({ command: c.name(), flag, documented: true });
    }
  }
});

test('docs/options.md names the IPAM options Docker sends and each of tsbridge\'s own', () => {
  const doc = read('docs/options.md');
  for (const key of [REQUEST_ADDRESS_TYPE, 'com.docker.network.endpoint.name', 'com.docker.network.endpoint.macaddress', 'IPAM_OPTIONS', ...Object.keys(IPAM_OPTIONS)]) {
    expect({ key, documented: doc.includes(`\`${key}`) }).toEqual({ key, documented: true });
  }
});

test("the README's configuration table lists every variable loadConfig reads", () => {
  const readme = read('README.md');
  const vars = new Set([...read('src/config.ts').matchAll(/\b(TSBRIDGE_[A-Z_]+)\b/g)].map((m) => m[1]!));
  vars.add('TSBRIDGE_IPTABLES'); // read through iptablesSetting
  for (const v of vars) expect({ v, documented: readme.includes(`| \`${v}\` |`) }).toEqual({ v, documented: true });
});
