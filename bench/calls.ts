/**
 * The plugin driven through the protocol alone, as Docker drives it, with nothing else running:
 * what each call costs at zero and with many endpoints and published ports live — in
 * milliseconds (as the plugin logs them), and in what does not depend on the machine's load:
 * processes started, state writes, bytes written and fsyncs per call (from the plugin's own
 * metrics; after them, the time each call waited for `ip`/`nft`, from the same counted runs) and
 * the plugin's CPU time per lifecycle. Then the plugin's RSS, and N container
 * lifecycles at once.
 *
 * Runs in a throwaway network namespace (it re-runs itself under `ip netns exec`), with the
 * chains Docker's firewall makes (DOCKER-USER, DOCKER-ISOLATION-STAGE-1/2, FORWARD policy DROP)
 * written there first, unless --no-docker-chains: nothing on the host is touched, no Docker is
 * needed. Needs root.
 *
 * Usage: node dist/bench/calls.js [--runs N] [--warm N] [--endpoints N] [--networks N] [--ports N]
 *          [--parallel N] [--no-docker-chains] [--node-args "ARGS"]
 *   --runs N          lifecycles measured at zero and at scale (default 40)
 *   --warm N          lifecycles run and not measured first, at zero (default 100: V8 optimises
 *                     the code on the way; the plugin is long-lived)
 *   --endpoints N     live endpoints for the scale figures (default 1000; 0 skips them); the
 *                     lifecycles at scale run on the first of their networks
 *   --networks N      networks they are spread over (default 4)
 *   --ports N         ports published by ten of them, N/10 each (default 1000)
 *   --parallel N      lifecycles run at once for the time-share figure (default 50; 0 skips it)
 *   --node-args "A B" node's own options for the plugin, space-separated (default: the launchers'
 *                     flags, LAUNCHER_NODE_FLAGS in bench/lib.ts; "" for none, e.g. to compare)
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { arg, BenchPlugin, LAUNCHER_NODE_FLAGS, deltaBy, delta, flag, fmt, LIFECYCLE, machine, median, p90, ratio, run, strArg, sum } from './lib.js';


const id = () => randomBytes(32).toString('hex');
const short = (c: string) => c.replace(/^(NetworkDriver|IpamDriver)\./, '');

interface Net {
  id: string;
  poolId: string;
}

/** What Docker's firewall leaves in iptables before any container runs (enough for the shim to settle). */
const DOCKER_CHAINS = [
  '*filter',
  ':INPUT ACCEPT [0:0]',
  ':FORWARD DROP [0:0]',
  ':OUTPUT ACCEPT [0:0]',
  ':DOCKER-USER - [0:0]',
  ':DOCKER-ISOLATION-STAGE-1 - [0:0]',
  ':DOCKER-ISOLATION-STAGE-2 - [0:0]',
  '-A FORWARD -j DOCKER-USER',
  '-A FORWARD -j DOCKER-ISOLATION-STAGE-1',
  '-A DOCKER-USER -j RETURN',
  '-A DOCKER-ISOLATION-STAGE-1 -j RETURN',
  '-A DOCKER-ISOLATION-STAGE-2 -j RETURN',
  'COMMIT',
  '',
].join('\n');

async function createNetwork(p: BenchPlugin, subnet: string): Promise<Net> {
  const pool = await p.ok<{ PoolID: string; Pool: string }>('IpamDriver.RequestPool', { AddressSpace: 'local', Pool: subnet, SubPool: '', Options: {}, V6: false });
  const gw = await p.ok<{ Address: string }>('IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
  const netId = id();
  await p.ok('NetworkDriver.CreateNetwork', {
    NetworkID: netId,
    Options: { 'com.docker.network.enable_ipv4': true, 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': {} },
    IPv4Data: [{ AddressSpace: 'local', Pool: pool.Pool, Gateway: gw.Address, AuxAddresses: {} }],
    IPv6Data: [],
  });
  return { id: netId, poolId: pool.PoolID };
}

function portmap(ports: { hostIp: string; from: number; count: number } | null): Record<string, unknown> {
  if (!ports) return { 'com.docker.network.driver.private.no_proxy_6to4': false };
  return {
    'com.docker.network.driver.private.no_proxy_6to4': false,
    'com.docker.network.portmap': Array.from({ length: ports.count }, (_, i) => ({
      Proto: 6, IP: '', Port: ports.from + i, HostIP: ports.hostIp, HostPort: ports.from + i, HostPortEnd: ports.from + i,
    })),
  };
}

/** The calls of `docker run` up to the container's start; returns what the teardown needs. */
async function up(p: BenchPlugin, net: Net, ports: Parameters<typeof portmap>[0] = null, each?: () => Promise<void>): Promise<{ ep: string; addr: string }> {
  const step = each ?? (async () => undefined);
  const { Address } = await p.ok<{ Address: string }>('IpamDriver.RequestAddress', { PoolID: net.poolId, Address: '', Options: {} });
  await step();
  const ep = id();
  await p.ok('NetworkDriver.CreateEndpoint', { NetworkID: net.id, EndpointID: ep, Interface: { Address, AddressIPv6: '', MacAddress: '' }, Options: {} });
  await step();
  await p.ok('NetworkDriver.Join', { NetworkID: net.id, EndpointID: ep, SandboxKey: `/var/run/docker/netns/${ep.slice(0, 12)}`, Options: {} });
  await step();
  await p.ok('NetworkDriver.ProgramExternalConnectivity', { NetworkID: net.id, EndpointID: ep, Options: portmap(ports) });
  await step();
  return { ep, addr: Address };
}

/** The calls of the container's end (`--rm`). */
async function down(p: BenchPlugin, net: Net, c: { ep: string; addr: string }, each?: () => Promise<void>): Promise<void> {
  const step = each ?? (async () => undefined);
  const ids = { NetworkID: net.id, EndpointID: c.ep };
  await p.ok('NetworkDriver.RevokeExternalConnectivity', ids);
  await step();
  await p.ok('NetworkDriver.Leave', ids);
  await step();
  await p.ok('NetworkDriver.DeleteEndpoint', ids);
  await step();
  await p.ok('IpamDriver.ReleaseAddress', { PoolID: net.poolId, Address: c.addr.split('/')[0] });
  await step();
}

interface Phase {
  /** Logged ms per call, by call. */
  ms: Record<string, number[]>;
  /** Per lifecycle: the sum of its calls' logged ms. */
  lifecycle: number[];
  /** Per call: processes started (by program), state syncs, state bytes, state writes — averaged over the counted runs. */
  counts: Record<string, { processes: Record<string, number>; syncs: number; bytes: number; writes: number; kernelMs: Record<string, number> }>;
  rss: number;
  /** The plugin's CPU time (user + system) per lifecycle over the timed runs, ms. */
  cpu: number;
  /** V8's heap, MiB, from the plugin's process metrics. */
  heap: { used: number; total: number; external: number };
}

/**
 * `runs` lifecycles timed (no scrapes in between), then `counted` more with a metrics scrape
 * after every call (the counts do not depend on timing).
 */
async function measure(p: BenchPlugin, net: Net, runs: number, counted: number, ports: Parameters<typeof portmap>[0] = null, warm = 1): Promise<Phase> {
  // Warm: the first lifecycles after start run on code V8 has not optimised yet (the plugin is
  // long-lived; Docker's calls meet warm code).
  for (let i = 0; i < warm; i++) await down(p, net, await up(p, net, ports));
  const from = p.calls.length;
  const lifecycle: number[] = [];
  const cpu0 = p.cpuMs();
  for (let i = 0; i < runs; i++) {
    const at = p.calls.length;
    await down(p, net, await up(p, net, ports));
    lifecycle.push(sum(p.calls.slice(at).filter((c) => (LIFECYCLE as readonly string[]).includes(c.call)).map((c) => c.ms)));
  }
  const cpu = (p.cpuMs() - cpu0) / runs;
  const ms: Record<string, number[]> = {};
  for (const c of LIFECYCLE) ms[c] = p.ms(c, from);

  const counts: Phase['counts'] = {};
  for (const c of LIFECYCLE) counts[c] = { processes: {}, syncs: 0, bytes: 0, writes: 0, kernelMs: {} };
  for (let i = 0; i < counted; i++) {
    let before = await p.metrics();
    let k = 0;
    const each = async () => {
      const after = await p.metrics();
      const c = counts[LIFECYCLE[k++]!]!;
      for (const [prog, n] of Object.entries(deltaBy(before, after, 'tsbridge_processes_started_total', 'command'))) c.processes[prog] = (c.processes[prog] ?? 0) + n / counted;
      c.syncs += delta(before, after, 'tsbridge_state_syncs_total') / counted;
      c.bytes += delta(before, after, 'tsbridge_state_written_bytes_total') / counted;
      c.writes += delta(before, after, 'tsbridge_state_writes_total') / counted;
      // Time spent waiting for ip/nft (long-lived or started), by program.
      for (const [prog, s] of Object.entries(deltaBy(before, after, 'tsbridge_kernel_command_duration_seconds_sum', 'command'))) c.kernelMs[prog] = (c.kernelMs[prog] ?? 0) + (s * 1000) / counted;
      before = after;
    };
    await down(p, net, await up(p, net, ports, each), each);
  }
  const m = await p.metrics();
  const mib = (k: string) => (m.get(k) ?? NaN) / 1048576;
  return { ms, lifecycle, counts, rss: p.rssMiB(), cpu, heap: { used: mib('nodejs_heap_size_used_bytes'), total: mib('nodejs_heap_size_total_bytes'), external: mib('nodejs_external_memory_bytes') } };
}

function printPhase(title: string, ph: Phase, base?: Phase): void {
  console.log(`\n${title}`);
  const head = `  ${'call'.padEnd(28)}${'median'.padStart(8)}${'p90'.padStart(8)}${base ? 'x zero'.padStart(8) : ''}${'procs'.padStart(7)}  ${'syncs'.padStart(6)}${'writes'.padStart(7)}${'bytes'.padStart(9)}`;
  console.log(head);
  for (const c of LIFECYCLE) {
    const xs = ph.ms[c]!;
    const n = ph.counts[c]!;
    const procs = [
      ...Object.entries(n.processes).map(([k, v]) => `${fmt(v, 1)} ${k}`),
      ...Object.entries(n.kernelMs).map(([k, v]) => `${k} ${fmt(v, 2)} ms`),
    ].join(', ');
    const x = base ? ratio(median(xs), median(base.ms[c]!)).padStart(8) : '';
    console.log(`  ${short(c).padEnd(28)}${fmt(median(xs), 2).padStart(8)}${fmt(p90(xs), 2).padStart(8)}${x}${fmt(sum(Object.values(n.processes)), 1).padStart(7)}  ${fmt(n.syncs, 1).padStart(6)}${fmt(n.writes, 1).padStart(7)}${fmt(n.bytes, 0).padStart(9)}${procs ? `   (${procs})` : ''}`);
  }
  const tot = (f: (n: Phase['counts'][string]) => number) => sum(LIFECYCLE.map((c) => f(ph.counts[c]!)));
  const x = base ? ratio(median(ph.lifecycle), median(base.lifecycle)).padStart(8) : '';
  console.log(`  ${'lifecycle (sum of the 8)'.padEnd(28)}${fmt(median(ph.lifecycle), 2).padStart(8)}${fmt(p90(ph.lifecycle), 2).padStart(8)}${x}${fmt(tot((n) => sum(Object.values(n.processes))), 1).padStart(7)}  ${fmt(tot((n) => n.syncs), 1).padStart(6)}${fmt(tot((n) => n.writes), 1).padStart(7)}${fmt(tot((n) => n.bytes), 0).padStart(9)}`);
  console.log(`  plugin CPU per lifecycle (user + system, its node process): ${fmt(ph.cpu, 1)} ms${base ? ` (${ratio(ph.cpu, base.cpu)} zero)` : ''}`);
  console.log(`  plugin RSS: ${fmt(ph.rss, 1)} MiB (V8 heap: ${fmt(ph.heap.used, 1)} MiB used of ${fmt(ph.heap.total, 1)}; external ${fmt(ph.heap.external, 1)})`);
}

async function inside(): Promise<void> {
  const runs = arg('--runs', 40);
  const endpoints = arg('--endpoints', 1000);
  const networks = Math.max(1, arg('--networks', 4));
  const ports = arg('--ports', 1000);
  const parallel = arg('--parallel', 50);
  const counted = 3;
  const nodeArgs = strArg('--node-args', LAUNCHER_NODE_FLAGS.join(' ')).split(' ').filter(Boolean);
  await run('ip', ['link', 'set', 'lo', 'up']);
  if (!flag('--no-docker-chains')) await run('iptables-nft-restore', [], { input: DOCKER_CHAINS });
  const dir = await mkdtemp(path.join(tmpdir(), 'tsbridge-calls-'));
  const p = new BenchPlugin({
    socket: path.join(dir, 'tsbcalls.sock'),
    stateDir: path.join(dir, 'state'),
    nodeArgs,
    env: { TSBRIDGE_METRICS_ADDR: '127.0.0.1:0', TSBRIDGE_GC_INTERVAL: '0' },
  });
  try {
    await p.start();
    for (let i = 0; i < 50 && !p.metricsAddress; i++) await new Promise((r) => setTimeout(r, 100));
    console.log(`tsbridge through the protocol alone (bench/calls.ts), in a network namespace${flag('--no-docker-chains') ? ' without' : ' with'} Docker's chains`);
    console.log(`machine: ${machine()}`);
    console.log(`plugin: node ${nodeArgs.length ? nodeArgs.join(' ') + ' ' : ''}dist/src/main.js`);
    console.log(`nft ${await run('nft', ['--version'])}; ${await run('ip', ['-V'])}`);
    const probe = await createNetwork(p, '10.230.0.0/24');
    const zero = await measure(p, probe, runs, counted, null, arg('--warm', 100));
    printPhase(`Lifecycle at zero (${runs} runs after ${arg('--warm', 100)} unmeasured; ms as logged by the plugin; procs, syncs, writes, bytes per call)`, zero);
    const zeroPorts = await measure(p, probe, Math.max(5, runs >> 2), counted, { hostIp: '', from: 22000, count: 100 });
    printPhase(`Lifecycle with 100 published ports, at zero (${Math.max(5, runs >> 2)} runs)`, zeroPorts, zero);

    let scale: Phase | null = null;
    if (endpoints > 0) {
      const nets: Net[] = [];
      for (let n = 0; n < networks; n++) nets.push(await createNetwork(p, `10.231.${n}.0/24`));
      const per = Math.ceil(endpoints / networks);
      if (per > 250) throw new Error(`--endpoints ${endpoints} over ${networks} networks: at most 250 per network (/24)`);
      const fillFrom = p.calls.length;
      const t0 = Date.now();
      let made = 0;
      const publishers = ports > 0 ? 10 : 0;
      for (let i = 0; i < endpoints; i++) {
        const net = nets[i % networks]!;
        const pub = i < publishers ? { hostIp: `127.0.0.${2 + i}`, from: 21000, count: Math.ceil(ports / publishers) } : null;
        await up(p, net, pub);
        made++;
      }
      const fillMs = Date.now() - t0;
      const creates = p.ms('NetworkDriver.CreateEndpoint', fillFrom);
      const st = await stat(path.join(dir, 'state', 'state.json')).catch(() => null);
      console.log(`\nFilling: ${made} endpoints on ${networks} networks (${publishers} of them publishing ${ports} ports) in ${(fillMs / 1000).toFixed(1)} s;` +
        ` CreateEndpoint median first 40 ${fmt(median(creates.slice(0, 40)), 2)} ms, last 40 ${fmt(median(creates.slice(-40)), 2)} ms; state.json ${st ? (st.size / 1024).toFixed(0) : '?'} KiB`);
      // On a network holding its share of the live endpoints (as a container joins a busy network):
      // its pool holds them too, and what a call does per address the pool holds shows.
      scale = await measure(p, nets[0]!, runs, counted);
      printPhase(`Lifecycle with ${endpoints} endpoints and ${ports} published ports live, on a network holding ${per} of them (${runs} runs)`, scale, zero);
      const scalePorts = await measure(p, nets[0]!, Math.max(5, runs >> 2), counted, { hostIp: '', from: 22000, count: 100 });
      printPhase(`Lifecycle with 100 published ports, ${endpoints} endpoints live (${Math.max(5, runs >> 2)} runs)`, scalePorts, zeroPorts);
    }

    if (parallel > 0) {
      const from = p.calls.length;
      const t0 = process.hrtime.bigint();
      await Promise.all(Array.from({ length: parallel }, async () => down(p, probe, await up(p, probe))));
      const wall = Number(process.hrtime.bigint() - t0) / 1e6;
      const busy = sum(p.calls.slice(from).map((c) => c.ms));
      const per = LIFECYCLE.map((c) => `${short(c)} ${fmt(median(p.ms(c, from)), 1)}`).join(', ');
      console.log(`\n${parallel} lifecycles at once: ${fmt(wall, 0)} ms wall; sum of logged call times ${fmt(busy, 0)} ms (calls queue on the state lock, so each call's time includes its wait)`);
      console.log(`  call medians: ${per}`);
    }
  } finally {
    await p.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (flag('--inside')) return inside();
  if (process.getuid?.() !== 0) throw new Error('bench/calls.ts needs root (it makes a network namespace)');
  const ns = `tsbcalls${process.pid}`;
  await run('ip', ['netns', 'add', ns]);
  try {
    const r = await execa('ip', ['netns', 'exec', ns, process.execPath, ...process.execArgv, process.argv[1]!, '--inside', ...process.argv.slice(2)], { stdio: 'inherit', reject: false });
    if (r.exitCode !== 0) process.exitCode = r.exitCode ?? 1;
  } finally {
    await run('ip', ['netns', 'del', ns]);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
