/**
 * tsbridge against Docker's built-in bridge, measured in the same run,
 * interleaved so drift on the machine hits both alike. Prints medians and the
 * ratio. Then, tsbridge alone: the cost of publishing a port with none and with
 * about a thousand ports already published (by other containers) — map
 * elements, so it should not change. Needs root, a running dockerd and the test
 * image (scripts/test.sh sets those up).
 * Usage: node dist/bench/run.js [--runs N] [--port-runs N] [--scale-runs N] [--skip-scale]
 * Host ports used: 21000-21099 only (the thousand are 21000-21099 on ten
 * loopback addresses 127.0.0.2-11).
 */
import { execa } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const IMAGE = process.env.TSBRIDGE_TEST_IMAGE ?? 'tsbridge-test:latest';
const DRIVER = 'tsbridge-bench';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

/** Plugin log lines (JSON) of the calls it answered: call name and milliseconds. */
const calls: { call: string; ms: number }[] = [];

function pluginMs(call: string, from: number): number[] {
  return calls.slice(from).filter((c) => c.call === call).map((c) => c.ms);
}

/** Plugin milliseconds per `docker run` since log entry `from` (a run = one Join). */
function pluginPerRun(from: number): number {
  const slice = calls.slice(from);
  const runs = slice.filter((c) => c.call === 'NetworkDriver.Join').length;
  return runs ? slice.reduce((a, c) => a + c.ms, 0) / runs : 0;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function docker(args: string[]): Promise<string> {
  return (await execa('docker', args)).stdout.trim();
}

async function timeRun(args: string[]): Promise<number> {
  const t = process.hrtime.bigint();
  await execa('docker', args);
  return Number(process.hrtime.bigint() - t) / 1e6;
}

async function compare(title: string, runs: number, tsArgs: string[], brArgs: string[]): Promise<{ ts: number; br: number }> {
  const ts: number[] = [];
  const br: number[] = [];
  await timeRun(tsArgs); // warm both paths once
  await timeRun(brArgs);
  for (let i = 0; i < runs; i++) {
    ts.push(await timeRun(tsArgs));
    br.push(await timeRun(brArgs));
  }
  const mt = median(ts);
  const mb = median(br);
  console.log(`\n${title} (${runs} runs each, interleaved)`);
  console.log(`  ${'driver'.padEnd(16)}${'median ms'.padStart(11)}${'min'.padStart(9)}${'max'.padStart(9)}`);
  console.log(`  ${'tsbridge'.padEnd(16)}${mt.toFixed(0).padStart(11)}${Math.min(...ts).toFixed(0).padStart(9)}${Math.max(...ts).toFixed(0).padStart(9)}`);
  console.log(`  ${'built-in bridge'.padEnd(16)}${mb.toFixed(0).padStart(11)}${Math.min(...br).toFixed(0).padStart(9)}${Math.max(...br).toFixed(0).padStart(9)}`);
  console.log(`  ratio built-in / tsbridge: ${(mb / mt).toFixed(2)}x`);
  return { ts: mt, br: mb };
}

/**
 * Publishing cost with 0 and with ~1000 ports already published on the host: `docker run --rm
 * -p 127.0.0.1:21000:80` timed as a whole, and the plugin's own ProgramExternalConnectivity /
 * RevokeExternalConnectivity times from its log. The thousand are held by ten containers, each
 * publishing 21000-21099 on its own loopback address (127.0.0.2 … 127.0.0.11).
 */
async function scale(tsNet: string, runs: number): Promise<string[]> {
  const probe = ['run', '--rm', '--network', tsNet, '-p', '127.0.0.1:21000:80', IMAGE, 'true'];
  const measure = async () => {
    const from = calls.length;
    const wall: number[] = [];
    await timeRun(probe); // warm
    for (let i = 0; i < runs; i++) wall.push(await timeRun(probe));
    const prog = pluginMs('NetworkDriver.ProgramExternalConnectivity', from).slice(-runs);
    const rev = pluginMs('NetworkDriver.RevokeExternalConnectivity', from).slice(-runs);
    return { wall, prog, rev, rules: await ruleCount(), elements: await elementCount() };
  };
  const fillers: string[] = [];
  const rows: string[] = [];
  try {
    const empty = await measure();
    const t0 = process.hrtime.bigint();
    const fillMs: number[] = [];
    for (let i = 2; i <= 11; i++) {
      const name = `bench-fill-${process.pid}-${i}`;
      fillers.push(name);
      fillMs.push(await timeRun(['run', '-d', '--network', tsNet, '--name', name, '-p', `127.0.0.${i}:21000-21099:21000-21099`, IMAGE, 'sleep', '3600']));
    }
    const fillTotal = Number(process.hrtime.bigint() - t0) / 1e6;
    const full = await measure();
    const fmt = (label: string, m: typeof empty) =>
      `  ${label.padEnd(22)}${String(m.elements).padStart(9)}${String(m.rules).padStart(7)}${median(m.wall).toFixed(0).padStart(14)}${median(m.prog).toFixed(1).padStart(13)}${median(m.rev).toFixed(1).padStart(10)}`;
    rows.push(`\nPublishing one port with 0 vs ~1000 ports already published (tsbridge, ${runs} runs each; medians)`);
    rows.push(`  ${'already published'.padEnd(22)}${'elements'.padStart(9)}${'rules'.padStart(7)}${'docker run ms'.padStart(14)}${'Program ms'.padStart(13)}${'Revoke ms'.padStart(10)}`);
    rows.push(fmt('0', empty));
    rows.push(fmt(String(full.elements - empty.elements), full));
    rows.push(`  ratio (1000 / 0): docker run ${(median(full.wall) / median(empty.wall)).toFixed(2)}x, ProgramExternalConnectivity ${(median(full.prog) / median(empty.prog)).toFixed(2)}x`);
    rows.push(`  publishing the thousand: 10 x docker run -d -p 127.0.0.N:21000-21099:21000-21099 took ${(fillTotal / 1000).toFixed(1)} s (median ${median(fillMs).toFixed(0)} ms per 100-port container)`);
  } finally {
    if (fillers.length) await execa('docker', ['rm', '-f', ...fillers], { reject: false });
  }
  return rows;
}

/** Rules in table inet tsbridge (what every packet may walk; map elements are not rules). */
async function ruleCount(): Promise<number> {
  const r = await execa('nft', ['-j', 'list', 'table', 'inet', 'tsbridge'], { reject: false });
  if (r.exitCode !== 0) return 0;
  return (JSON.parse(r.stdout) as { nftables: Record<string, unknown>[] }).nftables.filter((o) => 'rule' in o).length;
}

/** Elements in the four port maps. */
async function elementCount(): Promise<number> {
  let n = 0;
  for (const m of ['ports4', 'ports4_addr', 'ports6', 'ports6_addr']) {
    const r = await execa('nft', ['-j', 'list', 'map', 'inet', 'tsbridge', m], { reject: false });
    if (r.exitCode !== 0) continue;
    const doc = JSON.parse(r.stdout) as { nftables: { map?: { elem?: unknown[] } }[] };
    n += doc.nftables.find((o) => o.map)?.map?.elem?.length ?? 0;
  }
  return n;
}

async function main(): Promise<void> {
  const runs = arg('--runs', 15);
  const portRuns = arg('--port-runs', 3);
  const scaleRuns = arg('--scale-runs', 7);
  const stateDir = await mkdtemp(path.join(tmpdir(), 'tsbridge-bench-'));
  const plugin = execa(process.execPath, [path.join(ROOT, 'dist', 'src', 'main.js')], {
    env: { TSBRIDGE_SOCKET: `/run/docker/plugins/${DRIVER}.sock`, TSBRIDGE_STATE_DIR: stateDir, TSBRIDGE_LOG_LEVEL: 'info' },
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'inherit',
    buffer: false,
    reject: false,
  });
  let partial = '';
  plugin.stdout!.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop()!;
    for (const l of lines) {
      try {
        const o = JSON.parse(l) as { call?: string; ms?: number; level?: string; message?: string };
        if (o.call && typeof o.ms === 'number') calls.push({ call: o.call, ms: o.ms });
        if (o.level === 'error' || o.level === 'warn') console.error(`[plugin] ${l}`);
      } catch {
        console.error(`[plugin] ${l}`);
      }
    }
  });
  const nets: string[] = [];
  try {
    for (let i = 0; i < 50; i++) {
      if ((await execa('test', ['-S', `/run/docker/plugins/${DRIVER}.sock`], { reject: false })).exitCode === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const tsNet = `bench-ts-${process.pid}`;
    const brNet = `bench-br-${process.pid}`;
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.214.1.0/24', tsNet]);
    nets.push(tsNet);
    await docker(['network', 'create', '-d', 'bridge', '--subnet', '10.214.2.0/24', brNet]);
    nets.push(brNet);
    console.log(`docker ${await docker(['version', '--format', '{{.Server.Version}}'])}, image ${IMAGE}`);
    const plainFrom = calls.length;
    const plain = await compare('docker run --rm (no ports)', runs, ['run', '--rm', '--network', tsNet, IMAGE, 'true'], ['run', '--rm', '--network', brNet, IMAGE, 'true']);
    const plainPlugin = pluginPerRun(plainFrom);
    const ports = ['-p', '21000-21099:21000-21099'];
    const from = calls.length;
    const hundred = await compare('docker run --rm -p 21000-21099:21000-21099 (100 ports)', portRuns,
      ['run', '--rm', '--network', tsNet, ...ports, IMAGE, 'true'], ['run', '--rm', '--network', brNet, ...ports, IMAGE, 'true']);
    const prog = pluginMs('NetworkDriver.ProgramExternalConnectivity', from);
    const rev = pluginMs('NetworkDriver.RevokeExternalConnectivity', from);
    console.log(`  tsbridge's own share: ProgramExternalConnectivity median ${median(prog).toFixed(1)} ms, RevokeExternalConnectivity median ${median(rev).toFixed(1)} ms (100 ports, one nft transaction each)`);
    console.log(`  plugin time per docker run (all calls): ${plainPlugin.toFixed(0)} ms without ports, ${pluginPerRun(from).toFixed(0)} ms with 100`);
    const tsCost = hundred.ts - plain.ts;
    const brCost = hundred.br - plain.br;
    console.log(`  cost of the 100 ports themselves (median with - median without): tsbridge ${tsCost.toFixed(0)} ms, built-in ${brCost.toFixed(0)} ms (${(brCost / Math.max(tsCost, 1)).toFixed(0)}x)`);
    console.log(`  ceiling of the whole-run ratio on this machine (built-in with ports / tsbridge without): ${(hundred.br / plain.ts).toFixed(2)}x`);
    if (!process.argv.includes('--skip-scale')) for (const l of await scale(tsNet, scaleRuns)) console.log(l);
  } finally {
    for (const n of nets) await execa('docker', ['network', 'rm', n], { reject: false });
    plugin.kill('SIGTERM');
    await plugin;
    await rm(stateDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
