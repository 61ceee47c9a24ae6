/**
 * The built `tsbridge` command writing into a real pipe read by another process that is slower
 * than the command: every byte arrives (5,000 published mappings; the table and --json), and a
 * reader that stops early (`| head`) ends the command quietly. Needs the build (npm run build),
 * not root.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCli } from '../../src/cli.js';
import { emptyState, type State } from '../../src/state/types.js';
import { encodeState } from '../../src/state/disk.js';
import { bridgeKind } from '../../src/kinds/bridge/index.js';
import { REPO_ROOT } from '../lib/plugin.js';

const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli.js');
const NET = 'aaaa000000000000000000000000000000000000000000000000000000000001';

/** 50 containers with 100 ports each, on TCP and UDP: 5,000 mappings (10,000 rows, both families). */
function bigState(): State {
  const s = emptyState();
  const common = { id: NET, mtu: 1500, internal: false, ifacePrefix: 'eth', enableIpv6: true, ipv4: [{ subnet: '10.216.0.0/16', gateway: '10.216.0.1/16' }], ipv6: [] };
  s.networks[NET] = { ...common, kind: 'bridge', phase: 'ready', settings: bridgeKind.parse({ 'com.docker.network.bridge.name': 'br-pipe-test' }, common) };
  for (let c = 0; c < 50; c++) {
    const id = `${String(c).padStart(4, '0')}${'0'.repeat(60)}`;
    s.endpoints[id] = {
      id, networkId: NET, phase: 'ready', hostVeth: `tsv${id.slice(0, 12)}`, peerVeth: `tsc${id.slice(0, 12)}`, mac: '02:00:00:00:00:01',
      ipv4: `10.216.${c}.2/16`, ipv6: `fd5e::${c}:2/64`, joined: true,
      ports: Array.from({ length: 100 }, (_, i) => ({ proto: i % 2 ? ('udp' as const) : ('tcp' as const), hostIp: '', hostPort: 20000 + c * 100 + i, containerPort: 8000 + i })),
    };
  }
  return s;
}

/**
 * Runs the built command with its stdout connected straight to a consumer process, which waits
 * a moment before reading (so the pipe fills) and then reports how many bytes it got.
 */
function throughPipe(args: string[], env: NodeJS.ProcessEnv, consumer: string): Promise<{ code: number | null; report: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const reader = spawn(process.execPath, ['-e', consumer], { stdio: ['pipe', 'pipe', 'inherit'] });
    let report = '';
    reader.stdout.setEncoding('utf8').on('data', (d: string) => (report += d));
    const cli = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', reader.stdin, 'pipe'], env: { PATH: process.env.PATH, ...env } });
    reader.stdin.destroy(); // the command holds the write end now; ours would keep the pipe open
    let stderr = '';
    cli.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    cli.on('error', reject);
    reader.on('error', reject);
    const cliExited = new Promise<number | null>((r) => cli.on('exit', (c) => r(c)));
    reader.on('close', () => void cliExited.then((code) => resolve({ code, report, stderr })));
  });
}

/** Waits until the command has surely finished writing (and, before the fix, exited), then reads all. */
const SLOW_READER = `
setTimeout(() => {
  const chunks = [];
  process.stdin.on('data', (c) => chunks.push(c));
  process.stdin.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8');
    let json = null;
    try { json = JSON.parse(text).length; } catch {}
    process.stdout.write(JSON.stringify({ bytes: Buffer.byteLength(text), lines: text.split('\\n').length - 1, json }));
  });
}, 1500);`;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tsbridge-pipe-'));
  writeFileSync(path.join(dir, 'state.json'), JSON.stringify(encodeState(bigState())));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function expected(args: string[]): Promise<string> {
  let out = '';
  expect(await runCli(args, { out: (s) => void (out += s), err: () => undefined, env: { TSBRIDGE_STATE_DIR: dir }, docker: null })).toBe(0);
  return out;
}

test('the table: every byte of 10,000 rows reaches a slow reader', async () => {
  const want = await expected(['ports', '--no-docker']);
  expect(Buffer.byteLength(want)).toBeGreaterThan(10 * 65536);
  const r = await throughPipe(['ports', '--no-docker'], { TSBRIDGE_STATE_DIR: dir }, SLOW_READER);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(JSON.parse(r.report)).toEqual({ bytes: Buffer.byteLength(want), lines: 10_001, json: null });
});

test('--json: the whole array arrives and parses', async () => {
  const want = await expected(['ports', '--json', '--no-docker']);
  const r = await throughPipe(['ports', '--json', '--no-docker'], { TSBRIDGE_STATE_DIR: dir }, SLOW_READER);
  expect(r.code).toBe(0);
  expect(JSON.parse(r.report)).toEqual({ bytes: Buffer.byteLength(want), lines: want.split('\n').length - 1, json: 10_000 });
});

test('a reader that stops after one line (| head -1) ends the command quietly, exit 0', async () => {
  const head = `process.stdin.once('data', (c) => { process.stdout.write(String(c).split('\\n')[0]); process.exit(0); });`;
  const r = await throughPipe(['ports', '--no-docker'], { TSBRIDGE_STATE_DIR: dir }, head);
  expect(r.report).toMatch(/^NETWORK +BRIDGE +ENDPOINT +PROTO +HOST +CONTAINER$/);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
});
