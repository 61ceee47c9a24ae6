/**
 * `npm run bench` (through scripts/bench.sh, which starts what is missing): tsbridge against
 * Docker's built-in bridge on the engine that answers, every figure of issue 14 in one run, the
 * two drivers measured in the same run and interleaved (run i of one, then run i of the other) so
 * that drift on the machine hits both alike:
 *
 *   1. `docker run --rm IMAGE true`: median and p90 wall time, both drivers; the plugin's own
 *      median per call (from its log) and per container lifecycle (the sum of RequestAddress …
 *      ReleaseAddress of one container);
 *   2. `docker run --rm -p 21000-21099:21000-21099`: both drivers, and tsbridge against its own
 *      no-port run;
 *   3. TCP throughput (iperf3, the host's binary in the containers' network namespaces):
 *      container to container, and to a published port on 127.0.0.1, both drivers;
 *   4. N `docker run --rm` at once (default 50), both drivers: wall time, and the share of it
 *      during which the plugin was answering a call at all (a single lock that were the
 *      bottleneck would be busy nearly all of it);
 *   5. N live endpoints (default 200, `docker run -d` alternating between the drivers): the first
 *      40 starts against the last 40, both drivers; the plugin's per-call medians at zero against
 *      with N live, wall time and its CPU time during the call; the node process's RSS;
 *   6. publishing one port with 0 and with 1,000 ports already published (tsbridge alone: map
 *      elements, not rules).
 *
 * Needs root, a running dockerd, the test image (scripts/test-image.sh) and iperf3. Starts its
 * own tsbridge as the driver `tsbridge-bench`. Uses 10.214.0.0/22 and 10.214.4.0/22, host ports
 * 21000-21099 (0.0.0.0 and 127.0.0.2-11) and 25201-25202 on 127.0.0.1.
 *
 * Usage: node dist/bench/run.js [--runs N] [--port-runs N] [--transfer-runs N] [--seconds S]
 *          [--parallel N] [--endpoints N] [--scale-runs N] [--skip-scale]
 */
import { execa } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import { totalmem, tmpdir } from 'node:os';
import path from 'node:path';
import { instanceFromSocket, ownerFor } from '../src/kernel/owner.js';
import { arg, BenchPlugin, docker, flag, fmt, LAUNCHER_NODE_FLAGS, LIFECYCLE, machine, median, p90, removeNetwork, sum, timeRun } from './lib.js';

const IMAGE = process.env.TSBRIDGE_TEST_IMAGE ?? 'tsbridge-test:latest';
const DRIVER = 'tsbridge-bench';
const SOCKET = `/run/docker/plugins/${DRIVER}.sock`;
const TABLE = ownerFor(instanceFromSocket(SOCKET)).table;
const TAG = `bench-${process.pid}`;

const short = (c: string) => c.replace(/^(NetworkDriver|IpamDriver)\./, '');

let plugin: BenchPlugin;

const ms = (x: number) => x.toFixed(0);
const row = (cells: string[], widths: number[]) => '  ' + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('');

/** The plugin's calls logged since `from`, of the lifecycle, as per-call lists (in order). */
function callsSince(from: number, what: 'ms' | 'cpuMs' = 'ms'): Map<string, number[]> {
  const m = new Map<string, number[]>();
  for (const c of LIFECYCLE) m.set(c, what === 'ms' ? plugin.ms(c, from) : plugin.callCpuMs(c, from));
  return m;
}

/** Medians per call, and the median over lifecycles of the sum of one lifecycle's calls. */
function lifecycle(calls: Map<string, number[]>): { perCall: Map<string, number>; perLifecycle: number; lifecycles: number } {
  const perCall = new Map<string, number>();
  for (const [c, xs] of calls) perCall.set(c, xs.length ? median(xs) : NaN);
  // Containers run one after another: the k-th of each call is the k-th container's.
  const n = Math.min(...[...calls.values()].map((xs) => xs.length));
  const sums: number[] = [];
  for (let k = 0; k < n; k++) sums.push(sum(LIFECYCLE.map((c) => calls.get(c)![k]!)));
  return { perCall, perLifecycle: sums.length ? median(sums) : NaN, lifecycles: n };
}

// ------------------------------------------------------------------------------- 1. plain runs

async function plainRuns(runs: number, ts: string, br: string): Promise<{ ts: number[]; br: number[]; calls: Map<string, number[]>; cpu: Map<string, number[]> }> {
  const t: number[] = [];
  const b: number[] = [];
  await timeRun(['run', '--rm', '--network', ts, IMAGE, 'true']); // warm both paths once
  await timeRun(['run', '--rm', '--network', br, IMAGE, 'true']);
  const from = plugin.calls.length;
  for (let i = 0; i < runs; i++) {
    t.push(await timeRun(['run', '--rm', '--network', ts, IMAGE, 'true']));
    b.push(await timeRun(['run', '--rm', '--network', br, IMAGE, 'true']));
  }
  return { ts: t, br: b, calls: callsSince(from), cpu: callsSince(from, 'cpuMs') };
}

function printRuns(title: string, ts: number[], br: number[]): void {
  console.log(`\n${title} (${ts.length} runs each, interleaved)`);
  const w = [18, 11, 9, 9, 9];
  console.log(row(['driver', 'median ms', 'p90', 'min', 'max'], w));
  for (const [name, xs] of [['tsbridge', ts], ['built-in bridge', br]] as const) {
    console.log(row([name, ms(median(xs)), ms(p90(xs)), ms(Math.min(...xs)), ms(Math.max(...xs))], w));
  }
  console.log(`  tsbridge / built-in: ${(median(ts) / median(br)).toFixed(2)}x (median), ${(p90(ts) / p90(br)).toFixed(2)}x (p90)`);
}

function printCalls(title: string, cols: { label: string; calls: Map<string, number[]> }[]): void {
  console.log(`\n${title}`);
  const w = [30, ...cols.map(() => 16)];
  console.log(row(['call (median ms)', ...cols.map((c) => c.label)], w));
  const lc = cols.map((c) => lifecycle(c.calls));
  for (const c of LIFECYCLE) console.log(row([short(c), ...lc.map((l) => fmt(l.perCall.get(c)!))], w));
  console.log(row(['sum of the medians', ...lc.map((l) => fmt(sum([...l.perCall.values()])))], w));
  console.log(row(['per lifecycle (median of sums)', ...lc.map((l) => `${fmt(l.perLifecycle)} (n=${l.lifecycles})`)], w));
}

// ------------------------------------------------------------------------------- 2. 100 ports

async function hundredPorts(runs: number, ts: string, br: string): Promise<void> {
  const ports = ['-p', '21000-21099:21000-21099'];
  const a: number[] = [];
  const b: number[] = [];
  const z: number[] = [];
  const from = plugin.calls.length;
  for (let i = 0; i < runs; i++) {
    a.push(await timeRun(['run', '--rm', '--network', ts, ...ports, IMAGE, 'true']));
    b.push(await timeRun(['run', '--rm', '--network', br, ...ports, IMAGE, 'true']));
    z.push(await timeRun(['run', '--rm', '--network', ts, IMAGE, 'true']));
  }
  console.log(`\ndocker run --rm -p 21000-21099:21000-21099 (100 ports; ${runs} runs each, interleaved with a no-port run on tsbridge)`);
  const w = [30, 11, 9];
  console.log(row(['', 'median ms', 'p90'], w));
  console.log(row(['tsbridge, 100 ports', ms(median(a)), ms(p90(a))], w));
  console.log(row(['built-in bridge, 100 ports', ms(median(b)), ms(p90(b))], w));
  console.log(row(['tsbridge, no ports', ms(median(z)), ms(p90(z))], w));
  console.log(`  built-in / tsbridge with 100 ports: ${(median(b) / median(a)).toFixed(1)}x faster on tsbridge`);
  console.log(`  tsbridge 100 ports / no ports: ${(median(a) / median(z)).toFixed(2)}x`);
  const prog = plugin.ms('NetworkDriver.ProgramExternalConnectivity', from);
  const rev = plugin.ms('NetworkDriver.RevokeExternalConnectivity', from);
  console.log(`  the plugin's ProgramExternalConnectivity / RevokeExternalConnectivity medians over these runs: ${fmt(median(prog))} / ${fmt(median(rev))} ms`);
}

// ------------------------------------------------------------------------------- 3. throughput

async function pidOf(name: string): Promise<string> {
  return docker(['inspect', '-f', '{{.State.Pid}}', name]);
}

async function ipOf(name: string, net: string): Promise<string> {
  return docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, name]);
}

/** One iperf3 run (client in namespace of pid, or on the host when null): Gbit/s received. */
async function iperf(clientPid: string | null, host: string, port: number, seconds: number): Promise<number> {
  const args = ['-c', host, '-p', String(port), '-t', String(seconds), '-J'];
  const r = clientPid ? await execa('nsenter', ['-t', clientPid, '-n', 'iperf3', ...args], { reject: false }) : await execa('iperf3', args, { reject: false });
  const doc = JSON.parse(r.stdout || '{}') as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
  const bps = doc.end?.sum_received?.bits_per_second;
  if (!bps) throw new Error(`iperf3 to ${host}:${port} failed: ${doc.error ?? r.stderr}`);
  return bps / 1e9;
}

async function throughput(runs: number, seconds: number, nets: { ts: string; br: string }): Promise<void> {
  const made: string[] = [];
  const servers: ReturnType<typeof execa>[] = [];
  const res: Record<string, { c2c: number[]; pub: number[] }> = { ts: { c2c: [], pub: [] }, br: { c2c: [], pub: [] } };
  try {
    const setup: Record<string, { srvPid: string; cliPid: string; srvIp: string; port: number }> = {};
    for (const [k, net, port] of [['ts', nets.ts, 25201], ['br', nets.br, 25202]] as const) {
      const srv = `${TAG}-srv-${k}`;
      const cli = `${TAG}-cli-${k}`;
      made.push(srv, cli);
      await docker(['run', '-d', '--network', net, '--name', srv, '-p', `127.0.0.1:${port}:5201`, IMAGE, 'sleep', '3600']);
      await docker(['run', '-d', '--network', net, '--name', cli, IMAGE, 'sleep', '3600']);
      const srvPid = await pidOf(srv);
      servers.push(execa('nsenter', ['-t', srvPid, '-n', 'iperf3', '-s', '-p', '5201'], { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'ignore' }));
      setup[k] = { srvPid, cliPid: await pidOf(cli), srvIp: await ipOf(srv, net), port };
    }
    await new Promise((r) => setTimeout(r, 500));
    for (let i = 0; i < runs; i++) {
      for (const k of ['ts', 'br']) {
        const s = setup[k]!;
        res[k]!.c2c.push(await iperf(s.cliPid, s.srvIp, 5201, seconds));
        res[k]!.pub.push(await iperf(null, '127.0.0.1', s.port, seconds));
      }
    }
  } finally {
    for (const s of servers) s.kill('SIGTERM');
    await Promise.allSettled(servers);
    if (made.length) await execa('docker', ['rm', '-f', ...made], { reject: false });
  }
  console.log(`\nTCP throughput, iperf3 ${seconds} s, Gbit/s (median of ${runs}, interleaved)`);
  const w = [40, 10, 17, 9];
  console.log(row(['', 'tsbridge', 'built-in bridge', 'ratio'], w));
  const g = (xs: number[]) => median(xs).toFixed(2);
  console.log(row(['container to container (same network)', g(res.ts!.c2c), g(res.br!.c2c), (median(res.ts!.c2c) / median(res.br!.c2c)).toFixed(2)], w));
  console.log(row(['host to published port on 127.0.0.1', g(res.ts!.pub), g(res.br!.pub), (median(res.ts!.pub) / median(res.br!.pub)).toFixed(2)], w));
}

// ------------------------------------------------------------------------------- 4. parallel

/** Length of the union of the intervals (ms). */
function covered(intervals: [number, number][]): number {
  const s = [...intervals].sort((a, b) => a[0] - b[0]);
  let total = 0;
  let end = -Infinity;
  for (const [a, b] of s) {
    if (b <= end) continue;
    total += b - Math.max(a, end);
    end = b;
  }
  return total;
}

async function parallel(n: number, nets: { ts: string; br: string }): Promise<void> {
  const out: string[] = [];
  for (const [label, net] of [['tsbridge', nets.ts], ['built-in bridge', nets.br]] as const) {
    const from = plugin.calls.length;
    const t0 = Date.now();
    const rs = await Promise.allSettled(Array.from({ length: n }, () => timeRun(['run', '--rm', '--network', net, IMAGE, 'true'])));
    const t1 = Date.now();
    const failed = rs.filter((r) => r.status === 'rejected').length;
    const each = rs.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    let line = `  ${label.padEnd(16)} all ${n} done in ${ms(t1 - t0)} ms; each run median ${ms(median(each))} ms, p90 ${ms(p90(each))} ms${failed ? `; ${failed} failed` : ''}`;
    if (label === 'tsbridge') {
      // Each logged call as [end - ms, end] (its line arrives as it ends).
      const calls = plugin.calls.slice(from).filter((c) => c.at >= t0 && c.at <= t1 + 1000);
      const busy = covered(calls.map((c) => [c.at - c.ms, c.at]));
      const total = sum(calls.map((c) => c.ms));
      line += `\n  ${''.padEnd(16)} plugin: ${calls.length} calls, ${ms(total)} ms of call time in all; answering at least one call during ${ms(busy)} ms = ${((100 * busy) / (t1 - t0)).toFixed(0)}% of the wall time`;
      const byCall = LIFECYCLE.map((c) => `${short(c)} ${fmt(median(calls.filter((x) => x.call === c).map((x) => x.ms)))}`).join(', ');
      line += `\n  ${''.padEnd(16)} per-call medians under this load (ms): ${byCall}`;
    }
    out.push(line);
  }
  console.log(`\n${n} docker run --rm at once (each driver in turn)`);
  for (const l of out) console.log(l);
}

// ------------------------------------------------------------------------------- 5. live endpoints

async function liveEndpoints(n: number, runs: number, nets: { ts: string; br: string }, zero: { calls: Map<string, number[]>; cpu: Map<string, number[]> }): Promise<void> {
  const made: string[] = [];
  const start: Record<'ts' | 'br', number[]> = { ts: [], br: [] };
  const rssBefore = plugin.rssMiB();
  try {
    const from = plugin.calls.length;
    for (let i = 0; i < n; i++) {
      for (const [k, net] of [['ts', nets.ts], ['br', nets.br]] as const) {
        const name = `${TAG}-live-${k}-${i}`;
        made.push(name);
        start[k].push(await timeRun(['run', '-d', '--network', net, '--name', name, IMAGE, 'sleep', '36000']));
      }
      if ((i + 1) % 50 === 0) console.error(`  (${i + 1} of ${n} per driver started)`);
    }
    const creates = ['IpamDriver.RequestAddress', 'NetworkDriver.CreateEndpoint', 'NetworkDriver.Join', 'NetworkDriver.ProgramExternalConnectivity'];
    const k = Math.min(40, Math.floor(n / 2));
    const first = (xs: number[]) => xs.slice(0, k);
    const last = (xs: number[]) => xs.slice(-k);
    const rssFull = plugin.rssMiB();
    const lines = [`\n${n} live endpoints per driver (docker run -d, alternating): first ${k} starts against the last ${k}, median ms`];
    const w = [30, 11, 11, 9];
    lines.push(row(['', `first ${k}`, `last ${k}`, 'ratio'], w));
    for (const [label, key] of [['tsbridge', 'ts'], ['built-in bridge', 'br']] as const) {
      const xs = start[key];
      lines.push(row([`docker run -d, ${label}`, ms(median(first(xs))), ms(median(last(xs))), (median(last(xs)) / median(first(xs))).toFixed(2)], w));
    }
    for (const c of creates) {
      const xs = plugin.ms(c, from);
      lines.push(row([`  plugin ${short(c)}`, fmt(median(first(xs))), fmt(median(last(xs))), (median(last(xs)) / median(first(xs))).toFixed(2)], w));
    }
    lines.push(`  plugin RSS (node itself): ${rssBefore.toFixed(0)} MiB before, ${rssFull.toFixed(0)} MiB with ${n} endpoints live`);
    for (const l of lines) console.log(l);
    // Whole lifecycles with the N live, against the same at zero (section 1).
    const plain = await plainRuns(runs, nets.ts, nets.br);
    printRuns(`docker run --rm with ${n} live endpoints per driver`, plain.ts, plain.br);
    printCalls(`The plugin's own time per call, at zero against with ${n} live (median ms)`, [
      { label: 'zero', calls: zero.calls },
      { label: `${n} live`, calls: plain.calls },
    ]);
    const z = lifecycle(zero.calls);
    const s = lifecycle(plain.calls);
    const worst = Math.max(...LIFECYCLE.map((c) => s.perCall.get(c)! / z.perCall.get(c)!));
    console.log(`  largest per-call ratio (${n} live / zero): ${worst.toFixed(2)}x; per lifecycle ${(s.perLifecycle / z.perLifecycle).toFixed(2)}x`);
    // Where a call's time grows, whether the plugin works more or waits more (for the lock, a
    // command, the disk, or a CPU busy with Docker's own work).
    printCalls(`The plugin process's CPU time during each call, at zero against with ${n} live (median ms)`, [
      { label: 'zero', calls: zero.cpu },
      { label: `${n} live`, calls: plain.cpu },
    ]);
  } finally {
    const t0 = Date.now();
    for (let i = 0; i < made.length; i += 50) await execa('docker', ['rm', '-f', ...made.slice(i, i + 50)], { reject: false });
    if (made.length) console.error(`  (${made.length} containers removed in ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
}

// ------------------------------------------------------------------------------- 6. 1,000 ports

/** Rules in tsbridge's inet table (what every packet may walk; map elements are not rules). */
async function ruleCount(): Promise<number> {
  const r = await execa('nft', ['-j', 'list', 'table', 'inet', TABLE], { reject: false });
  if (r.exitCode !== 0) return 0;
  return (JSON.parse(r.stdout) as { nftables: Record<string, unknown>[] }).nftables.filter((o) => 'rule' in o).length;
}

/** Elements in the four port maps. */
async function elementCount(): Promise<number> {
  let n = 0;
  for (const m of ['ports4', 'ports4_addr', 'ports6', 'ports6_addr']) {
    const r = await execa('nft', ['-j', 'list', 'map', 'inet', TABLE, m], { reject: false });
    if (r.exitCode !== 0) continue;
    const doc = JSON.parse(r.stdout) as { nftables: { map?: { elem?: unknown[] } }[] };
    n += doc.nftables.find((o) => o.map)?.map?.elem?.length ?? 0;
  }
  return n;
}

async function thousandPorts(tsNet: string, runs: number): Promise<void> {
  const probe = ['run', '--rm', '--network', tsNet, '-p', '127.0.0.1:21000:80', IMAGE, 'true'];
  const measure = async () => {
    const from = plugin.calls.length;
    const wall: number[] = [];
    await timeRun(probe); // warm
    for (let i = 0; i < runs; i++) wall.push(await timeRun(probe));
    const calls = callsSince(from);
    return { wall, calls, rules: await ruleCount(), elements: await elementCount() };
  };
  const fillers: string[] = [];
  try {
    const empty = await measure();
    const t0 = Date.now();
    for (let i = 2; i <= 11; i++) {
      const name = `${TAG}-fill-${i}`;
      fillers.push(name);
      await docker(['run', '-d', '--network', tsNet, '--name', name, '-p', `127.0.0.${i}:21000-21099:21000-21099`, IMAGE, 'sleep', '3600']);
    }
    const fill = Date.now() - t0;
    const full = await measure();
    console.log(`\nPublishing one port with 0 and with ${full.elements - empty.elements} ports already published (tsbridge; ${runs} runs each; medians)`);
    const w = [22, 9, 7, 14, 13, 10];
    console.log(row(['already published', 'elements', 'rules', 'docker run ms', 'Program ms', 'Revoke ms'], w));
    for (const [label, m] of [['0', empty], [String(full.elements - empty.elements), full]] as const) {
      const p = m.calls.get('NetworkDriver.ProgramExternalConnectivity')!;
      const r = m.calls.get('NetworkDriver.RevokeExternalConnectivity')!;
      console.log(row([label, String(m.elements), String(m.rules), ms(median(m.wall)), fmt(median(p)), fmt(median(r))], w));
    }
    const lz = lifecycle(empty.calls);
    const lf = lifecycle(full.calls);
    console.log(`  ratio (1,000 / 0): docker run ${(median(full.wall) / median(empty.wall)).toFixed(2)}x, plugin per lifecycle ${(lf.perLifecycle / lz.perLifecycle).toFixed(2)}x, largest per-call ${Math.max(...LIFECYCLE.map((c) => lf.perCall.get(c)! / lz.perCall.get(c)!)).toFixed(2)}x`);
    console.log(`  publishing the thousand: 10 x docker run -d -p 127.0.0.N:21000-21099:21000-21099 took ${(fill / 1000).toFixed(1)} s`);
  } finally {
    if (fillers.length) await execa('docker', ['rm', '-f', ...fillers], { reject: false });
  }
}

// ------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const runs = arg('--runs', 15);
  const portRuns = arg('--port-runs', 3);
  const transferRuns = arg('--transfer-runs', 3);
  const seconds = arg('--seconds', 5);
  const par = arg('--parallel', 50);
  const endpoints = arg('--endpoints', 200);
  const scaleRuns = arg('--scale-runs', 7);
  if ((await execa('iperf3', ['--version'], { reject: false }).catch(() => ({ exitCode: 1 }))).exitCode !== 0) {
    throw new Error('iperf3 is needed for the throughput figures (scripts/install-deps.sh installs it)');
  }
  const stateDir = await mkdtemp(path.join(tmpdir(), 'tsbridge-bench-'));
  plugin = new BenchPlugin({ socket: SOCKET, stateDir, nodeArgs: LAUNCHER_NODE_FLAGS });
  await plugin.start();
  const nets: string[] = [];
  const failed: string[] = [];
  try {
    const ts = `${TAG}-ts`;
    const br = `${TAG}-br`;
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.214.0.0/22', ts]);
    nets.push(ts);
    await docker(['network', 'create', '-d', 'bridge', '--subnet', '10.214.4.0/22', br]);
    nets.push(br);
    const engine = await docker(['version', '--format', '{{.Server.Version}}']);
    console.log(`tsbridge bench — Docker Engine ${engine}, image ${IMAGE}`);
    console.log(`machine: ${machine()}, ${Math.round(totalmem() / 2 ** 30)} GiB`);
    console.log(`plugin RSS (node itself) after start: ${plugin.rssMiB().toFixed(0)} MiB`);

    const plain = await plainRuns(runs, ts, br);
    printRuns('docker run --rm IMAGE true', plain.ts, plain.br);
    printCalls("The plugin's own time per call over those runs (from its log)", [{ label: 'median ms', calls: plain.calls }]);

    // A section that fails says so and the others still run (what they print stands alone).
    const section = async (name: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (e) {
        failed.push(name);
        console.log(`\n${name}: FAILED — ${e instanceof Error ? e.message : String(e)}`);
      }
    };
    await section('100 ports', () => hundredPorts(portRuns, ts, br));
    if (transferRuns > 0) await section('throughput', () => throughput(transferRuns, seconds, { ts, br }));
    if (par > 0) await section('parallel runs', () => parallel(par, { ts, br }));
    if (endpoints > 0) await section('live endpoints', () => liveEndpoints(endpoints, Math.min(runs, 10), { ts, br }, plain));
    if (!flag('--skip-scale')) await section('1,000 ports', () => thousandPorts(ts, scaleRuns));
    console.log(`\nplugin RSS (node itself) at the end: ${plugin.rssMiB().toFixed(0)} MiB; load ${machine().replace(/.*load ([^,]+),.*/, '$1')}`);
  } finally {
    for (const n of nets) await removeNetwork(n);
    await plugin.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
  if (failed.length) throw new Error(`sections that failed: ${failed.join(', ')}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
