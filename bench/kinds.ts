/**
 * The kinds of network side by side, in one run: the NAT bridge, the bridge in routed gateway mode
 * and point-to-point. For each, `docker run --rm IMAGE true` (wall time, and the plugin's own
 * share from its log) and a container-to-container TCP transfer inside the network (iperf3 on the
 * host's binary, run in the two containers' network namespaces with nsenter). Runs are
 * interleaved so drift on the machine hits every kind alike; medians are printed with the
 * machine, the engine and the date.
 *
 * Needs root, a running dockerd, the test image (scripts/test-image.sh) and iperf3 (Debian's
 * package: apt-get install iperf3). Starts its own tsbridge as the driver `tsbridge-bench-kinds`.
 * Usage: node dist/bench/kinds.js [--runs N] [--transfer-runs N] [--seconds S]
 * Addresses: 10.225.1-3.0/24.
 */
import { execa, type ResultPromise } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { docker, median, removeNetwork, ROOT, timeRun } from './lib.js';

const IMAGE = process.env.TSBRIDGE_TEST_IMAGE ?? 'tsbridge-test:latest';
const DRIVER = 'tsbridge-bench-kinds';

interface KindUnderTest {
  label: string;
  subnet: string;
  options: string[];
}

const KINDS: KindUnderTest[] = [
  { label: 'NAT bridge', subnet: '10.225.1.0/24', options: [] },
  { label: 'routed', subnet: '10.225.2.0/24', options: ['-o', 'com.docker.network.bridge.gateway_mode_ipv4=routed'] },
  { label: 'p2p', subnet: '10.225.3.0/24', options: ['-o', 'io.tsbridge.mode=p2p'] },
];

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

/** Plugin log lines (JSON) of the calls it answered: call name and milliseconds. */
const calls: { call: string; ms: number }[] = [];

function pluginPerRun(from: number, to: number): number {
  const slice = calls.slice(from, to);
  const runs = slice.filter((c) => c.call === 'NetworkDriver.Join').length;
  return runs ? slice.reduce((a, c) => a + c.ms, 0) / runs : NaN;
}

async function pidOf(ctr: string): Promise<string> {
  return docker(['inspect', '-f', '{{.State.Pid}}', ctr]);
}

/** One iperf3 run from `client` to `server` (both containers' namespaces): received Gbit/s. */
async function transfer(clientPid: string, serverIp: string, seconds: number): Promise<number> {
  const r = await execa('nsenter', ['-t', clientPid, '-n', 'iperf3', '-c', serverIp, '-p', '5201', '-t', String(seconds), '-J'], { reject: false });
  const doc = JSON.parse(r.stdout || '{}') as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
  const bps = doc.end?.sum_received?.bits_per_second;
  if (!bps) throw new Error(`iperf3 to ${serverIp} failed: ${doc.error ?? r.stderr}`);
  return bps / 1e9;
}

async function main(): Promise<void> {
  const runs = arg('--runs', 15);
  const transferRuns = arg('--transfer-runs', 3);
  const seconds = arg('--seconds', 5);
  if ((await execa('iperf3', ['--version'], { reject: false }).catch(() => ({ exitCode: 1 }))).exitCode !== 0) {
    throw new Error('iperf3 is needed for the transfer (apt-get install iperf3)');
  }
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'tsbridge-bench-kinds-'));
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
        const o = JSON.parse(l) as { call?: string; ms?: number; level?: string };
        if (o.call && typeof o.ms === 'number') calls.push({ call: o.call, ms: o.ms });
        if (o.level === 'error' || o.level === 'warn') console.error(`[plugin] ${l}`);
      } catch {
        console.error(`[plugin] ${l}`);
      }
    }
  });
  const nets: string[] = [];
  const ctrs: string[] = [];
  const servers: ResultPromise[] = [];
  try {
    for (let i = 0; i < 50; i++) {
      if ((await execa('test', ['-S', `/run/docker/plugins/${DRIVER}.sock`], { reject: false })).exitCode === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const names = KINDS.map((_, i) => `bench-kind${i}-${process.pid}`);
    for (const [i, k] of KINDS.entries()) {
      await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', k.subnet, ...k.options, names[i]!]);
      nets.push(names[i]!);
    }
    const engine = await docker(['version', '--format', '{{.Server.Version}}']);
    const cpu = os.cpus();
    console.log(`tsbridge kinds, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`);
    console.log(`machine: ${cpu.length} x ${cpu[0]?.model ?? '?'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, kernel ${os.release()}; Docker ${engine}; image ${IMAGE}`);
    const load = () => os.loadavg().map((x) => x.toFixed(1)).join(' ');
    console.log(`load average at start: ${load()}`);

    // docker run --rm, interleaved.
    const wall: number[][] = KINDS.map(() => []);
    const plug: number[][] = KINDS.map(() => []);
    for (const n of names) await timeRun(['run', '--rm', '--network', n, IMAGE, 'true']); // warm each path once
    for (let r = 0; r < runs; r++) {
      for (const [i, n] of names.entries()) {
        const from = calls.length;
        wall[i]!.push(await timeRun(['run', '--rm', '--network', n, IMAGE, 'true']));
        await new Promise((res) => setTimeout(res, 50)); // the log line of the last call
        plug[i]!.push(pluginPerRun(from, calls.length));
      }
    }

    // Container to container, in each network.
    const peers: { client: string; serverIp: string }[] = [];
    for (const n of names) {
      const srv = `${n}-srv`;
      const cli = `${n}-cli`;
      ctrs.push(srv, cli);
      await docker(['run', '-d', '--network', n, '--name', srv, IMAGE, 'sleep', '3600']);
      await docker(['run', '-d', '--network', n, '--name', cli, IMAGE, 'sleep', '3600']);
      const serverIp = await docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${n}").IPAddress}}`, srv]);
      const server = execa('nsenter', ['-t', await pidOf(srv), '-n', 'iperf3', '-s', '-p', '5201'], { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'ignore' });
      servers.push(server);
      peers.push({ client: await pidOf(cli), serverIp });
    }
    await new Promise((r) => setTimeout(r, 500));
    const gbps: number[][] = KINDS.map(() => []);
    for (const p of peers) await transfer(p.client, p.serverIp, 1); // warm
    for (let r = 0; r < transferRuns; r++) {
      for (const [i, p] of peers.entries()) gbps[i]!.push(await transfer(p.client, p.serverIp, seconds));
    }

    const col = (s: string) => s.padStart(14);
    const row = (label: string, cells: string[]) => console.log(`  ${label.padEnd(44)}${cells.map(col).join('')}`);
    console.log('');
    row('', KINDS.map((k) => k.label));
    row(`docker run --rm IMAGE true, median ms (${runs} runs)`, wall.map((w) => median(w).toFixed(0)));
    row('  min – max ms', wall.map((w) => `${Math.min(...w).toFixed(0)}–${Math.max(...w).toFixed(0)}`));
    row('  plugin ms per run (all its calls, median)', plug.map((p) => median(p).toFixed(1)));
    row(`container to container TCP, Gbit/s (${transferRuns} x ${seconds} s)`, gbps.map((g) => median(g).toFixed(2)));
    row('  min – max Gbit/s', gbps.map((g) => `${Math.min(...g).toFixed(2)}–${Math.max(...g).toFixed(2)}`));
    console.log(`\n  load average at the end: ${load()}`);
    console.log(`  ratios to the NAT bridge: docker run ${KINDS.map((_, i) => (median(wall[i]!) / median(wall[0]!)).toFixed(2)).join(' / ')}, TCP ${KINDS.map((_, i) => (median(gbps[i]!) / median(gbps[0]!)).toFixed(2)).join(' / ')}`);
  } finally {
    for (const s of servers) s.kill('SIGTERM');
    await Promise.all(servers);
    if (ctrs.length) await execa('docker', ['rm', '-f', ...ctrs], { reject: false });
    for (const n of nets) await removeNetwork(n);
    plugin.kill('SIGTERM');
    await plugin;
    await rm(stateDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
