/**
 * The long-lived `nft -i` (src/kernel/real/shell.ts) against the real nft in a throwaway
 * namespace: it never reads or writes the operator's `$HOME/.nft.history` (libedit's history
 * file, which grew with every operation and made each one slower), and it hands over to a new
 * process after its operation limit without losing or repeating an operation. Needs root.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LineShell } from '../../src/kernel/real/shell.js';
import { Cleanup } from '../lib/cleanup.js';
import { createNetns, type Netns } from '../lib/netns.js';
import { requireRoot } from '../lib/run.js';

const cleanup = new Cleanup();
let ns: Netns;
let home: string;
const savedHome = process.env.HOME;

beforeAll(() => requireRoot('test/integration/nft-shell.test.ts'));

beforeEach(async () => {
  ns = await createNetns('nftsh');
  cleanup.add(() => ns.delete(), ns.name);
  await ns.exec('nft', ['-f', '-'], { input: 'table inet tsbt_sh {\n  set s { type ifname; }\n}\n' });
  // The operator's HOME as nft would find it, with a history of its own.
  home = await mkdtemp(path.join(tmpdir(), 'tsbt-nfthome-'));
  cleanup.add(() => rm(home, { recursive: true, force: true }), 'home');
  await writeFile(path.join(home, '.nft.history'), 'list ruleset\n');
  process.env.HOME = home;
  cleanup.add(() => {
    process.env.HOME = savedHome;
  }, 'HOME');
});
afterEach(() => cleanup.run());

async function elements(): Promise<string[]> {
  const out = await ns.exec('nft', ['-j', 'list', 'set', 'inet', 'tsbt_sh', 's']);
  const set = (JSON.parse(out) as { nftables: { set?: { elem?: string[] } }[] }).nftables.find((x) => x.set)?.set;
  return [...(set?.elem ?? [])].sort();
}

test("operations through the long-lived nft leave the operator's history file as it was, and create none", async () => {
  const shell = new LineShell('nft', 10_000, undefined, ['ip', 'netns', 'exec', ns.name]);
  cleanup.add(() => shell.close(), 'nft');
  for (let i = 0; i < 5; i++) {
    const r = await shell.run(`add element inet tsbt_sh s { "tsv${String(i).padStart(12, '0')}" }\n`);
    expect(r.exitCode).toBe(0);
  }
  shell.close();
  // nft writes its history when its input ends: give it the moment to exit.
  await new Promise((r) => setTimeout(r, 500));
  expect(await readFile(path.join(home, '.nft.history'), 'utf8')).toBe('list ruleset\n');
  expect(existsSync('/dev/null/.nft.history')).toBe(false);
  expect(await elements()).toHaveLength(5);
});

test('after its operation limit a new process takes over: every operation applied once, in order, failures still reported', async () => {
  const shell = new LineShell('nft', 10_000, undefined, ['ip', 'netns', 'exec', ns.name], 3);
  cleanup.add(() => shell.close(), 'nft');
  const names = Array.from({ length: 8 }, (_, i) => `tsv${String(i).padStart(12, '0')}`);
  const results = await Promise.all(names.map((n) => shell.run(`add element inet tsbt_sh s { "${n}" }\n`)));
  expect(results.map((r) => r.exitCode)).toEqual(names.map(() => 0));
  expect(await elements()).toEqual(names);
  // an add and a delete of the same element in one operation: one transaction, nothing left
  expect((await shell.run(`add element inet tsbt_sh s { "tsvffffffffffff" }\ndelete element inet tsbt_sh s { "tsvffffffffffff" }\n`)).exitCode).toBe(0);
  const bad = await shell.run('delete element inet tsbt_sh s { "tsveeeeeeeeeeee" }\n', { allowFail: true });
  expect(bad.exitCode).toBe(1);
  expect(bad.stderr).toMatch(/Error/);
  expect(await elements()).toEqual(names);
});
