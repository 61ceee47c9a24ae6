/**
 * The plugin's own time for one ProgramExternalConnectivity carrying many port bindings, without
 * the kernel (the nft transaction is measured by bench/run.ts): parsing Docker's body, choosing
 * the host ports, and copying and serialising the state document that then holds them (what
 * every transaction and every save does). No root, no Docker.
 *
 * Usage: node dist/bench/ports-alloc.js [--bindings N] [--taken N] [--runs N]
 * Default: 4,000 bindings with HostPort 0 (`docker run -p 20000-23999` of an image exposing
 * them, or -P), 1,000 ports already published by other containers, 50 host listeners, 9 runs.
 */
import { performance } from 'node:perf_hooks';
import { allocatePorts, type PortContext } from '../src/driver/ports.js';
import { parsePortBindings } from '../src/protocol/network.js';
import { OPT_PORTMAP } from '../src/protocol/wire.js';
import { emptyState } from '../src/state/types.js';
import { bridgeKind } from '../src/kinds/bridge/index.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const bindings = arg('--bindings', 4000);
const takenCount = arg('--taken', 1000);
const runs = arg('--runs', 9);

// Docker's body: one binding per port, container ports 20000.., host port 0 (pick one).
const body = JSON.stringify({
  NetworkID: 'a'.repeat(64),
  EndpointID: 'b'.repeat(64),
  Options: {
    [OPT_PORTMAP]: Array.from({ length: bindings }, (_, i) => ({ Proto: 6, IP: '', Port: 20000 + i, HostIP: '', HostPort: 0, HostPortEnd: 0 })),
  },
});

// Already published: ten containers with 100 ports each on 127.0.0.2-11, and some at the start
// of the ephemeral range on every address, so the search has something to step over.
const taken: PortContext['taken'] = Array.from({ length: takenCount }, (_, i) => ({
  mapping: { proto: 'tcp' as const, hostIp: i < 100 ? '' : `127.0.0.${2 + (i % 10)}`, hostPort: i < 100 ? 32768 + i : 21000 + (i % 100), containerPort: 80 },
  owner: `endpoint ${String(i).padStart(12, '0')}`,
}));
const listening = Array.from({ length: 50 }, (_, i) => ({ proto: 'tcp' as const, ip: i % 2 ? '' : '127.0.0.1', port: 32868 + i * 3 }));
const ctx: PortContext = { taken, listening, ephemeral: [32768, 60999], defaultHostIp: '' };

const state = emptyState();
const common = { id: 'a'.repeat(64), ipv4: [{ subnet: '10.210.0.0/24', gateway: '10.210.0.1/24' }], ipv6: [], enableIpv6: false, internal: false, mtu: 1500, ifacePrefix: 'eth' };
state.networks[common.id] = { ...common, kind: 'bridge', phase: 'ready', settings: bridgeKind.parse({}, common) };

const rows: { parse: number; allocate: number; state: number; total: number }[] = [];
for (let r = 0; r < runs + 1; r++) {
  const t0 = performance.now();
  const reqs = parsePortBindings((JSON.parse(body) as { Options: unknown }).Options);
  const t1 = performance.now();
  const mappings = allocatePorts(reqs, ctx);
  const t2 = performance.now();
  state.endpoints['b'.repeat(64)] = {
    id: 'b'.repeat(64), networkId: 'a'.repeat(64), phase: 'ready', hostVeth: 'tsvbbbbbbbbbbbb', peerVeth: 'tscbbbbbbbbbbbb',
    mac: '02:00:00:00:00:02', ipv4: '10.210.0.2/24', ipv6: null, joined: true, ports: mappings,
  };
  structuredClone(state); // Db.tx keeps a copy to roll back to
  JSON.stringify(state, null, 1); // FileStore.save
  const t3 = performance.now();
  if (mappings.length !== bindings || new Set(mappings.map((m) => m.hostPort)).size !== bindings) throw new Error('allocation went wrong');
  if (r > 0) rows.push({ parse: t1 - t0, allocate: t2 - t1, state: t3 - t2, total: t3 - t0 }); // run 0 warms the JIT
}

const fmt = (xs: number[]) => `${median(xs).toFixed(1)} ms (min ${Math.min(...xs).toFixed(1)}, max ${Math.max(...xs).toFixed(1)})`;
console.log(`${bindings} bindings with HostPort 0, ${takenCount} ports already published, ${listening.length} listeners; median of ${runs} runs, node ${process.version}`);
console.log(`  parse body + validate: ${fmt(rows.map((x) => x.parse))}`);
console.log(`  allocate host ports:   ${fmt(rows.map((x) => x.allocate))}`);
console.log(`  copy + serialise state: ${fmt(rows.map((x) => x.state))}`);
console.log(`  plugin time, total:    ${fmt(rows.map((x) => x.total))}`);
