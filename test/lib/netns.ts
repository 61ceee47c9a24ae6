/**
 * Throwaway network namespaces for integration and e2e tests, and an "outside world": a netns
 * reached from the host over a veth pair on a small private range (198.18.x.0/30 and a
 * fd5e:…/64), standing in for a remote host. Needs root and iproute2.
 *
 * Names: namespaces are `tsbt-<prefix>-<id>`, veth ends `tsbo<id>` (host) / `tsbi<id>` (ns),
 * where <id> is 6 random hex digits — every link name stays within the kernel's 15 characters.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { execa } from 'execa';
import { sh, shOk, type RunOptions, type RunResult } from './run.js';

/** 6 random hex digits. */
export function randomId(): string {
  return randomBytes(3).toString('hex');
}

function spawnInNetns(netns: string, cmd: string, args: readonly string[]) {
  return execa('ip', ['netns', 'exec', netns, cmd, ...args], {
    reject: false,
    buffer: false,
    stdin: 'ignore',
  });
}

/** A long-running process started inside a namespace (an execa subprocess). */
export type NetnsProcess = ReturnType<typeof spawnInNetns>;

export interface Netns {
  /** The namespace name, `tsbt-<prefix>-<id>`. */
  readonly name: string;
  /** The 6-hex-digit id in the name: use it to derive link names. */
  readonly id: string;
  /** Runs a command inside the namespace; returns stdout, throws on failure. */
  exec(cmd: string, args: readonly string[], opts?: RunOptions): Promise<string>;
  /** Runs a command inside the namespace; never throws. */
  execOk(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Starts a long-running process inside the namespace; {@link delete} kills it. */
  spawn(cmd: string, args: readonly string[]): NetnsProcess;
  /** Kills processes started with {@link spawn}, then deletes the namespace. Idempotent. */
  delete(): Promise<void>;
}

/** Stops a subprocess: SIGTERM, then SIGKILL after `graceMs`. Resolves once it has exited. */
export async function stopProcess(p: NetnsProcess, graceMs = 3000): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = p.then(() => undefined);
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), graceMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

/** Names of the network namespaces that `ip netns` knows. */
export async function listNetns(): Promise<string[]> {
  const out = await sh('ip', ['netns', 'list']);
  return out.split('\n').filter(Boolean).map((l) => l.split(' ')[0]!);
}

/** True when a link of that name exists in the host namespace. */
export async function linkExists(name: string): Promise<boolean> {
  return (await shOk('ip', ['link', 'show', 'dev', name])).exitCode === 0;
}

/** Creates a namespace `tsbt-<prefix>-<rand6>` with `lo` up. */
export async function createNetns(prefix: string): Promise<Netns> {
  if (!/^[a-z0-9]{1,8}$/.test(prefix)) throw new Error(`netns prefix must be 1-8 of [a-z0-9]: ${prefix}`);
  const id = randomId();
  const name = `tsbt-${prefix}-${id}`;
  const procs = new Set<NetnsProcess>();
  await sh('ip', ['netns', 'add', name]);
  const ns: Netns = {
    name,
    id,
    exec: (cmd, args, opts) => sh('ip', ['netns', 'exec', name, cmd, ...args], opts),
    execOk: (cmd, args, opts) => shOk('ip', ['netns', 'exec', name, cmd, ...args], opts),
    spawn(cmd, args) {
      const p = spawnInNetns(name, cmd, args);
      procs.add(p);
      void p.then(() => procs.delete(p));
      return p;
    },
    async delete() {
      await Promise.all([...procs].map((p) => stopProcess(p)));
      if (!existsSync(`/run/netns/${name}`)) return;
      await sh('ip', ['netns', 'del', name]);
    },
  };
  try {
    await sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (e) {
    await ns.delete();
    throw e;
  }
  return ns;
}

// ---- address maths, just enough to find a free prefix --------------------------------------

interface Prefix {
  bits: 32 | 128;
  value: bigint;
  len: number;
}

function parseAddr(s: string): { bits: 32 | 128; value: bigint } | undefined {
  if (/^\d+\.\d+\.\d+\.\d+$/.test(s)) {
    const parts = s.split('.').map(Number);
    if (parts.some((p) => p > 255)) return undefined;
    return { bits: 32, value: parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n) };
  }
  if (!s.includes(':') || !/^[0-9a-fA-F:]+$/.test(s)) return undefined;
  const [head, tail, ...rest] = s.split('::');
  if (rest.length) return undefined;
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  if (fill < 0) return undefined;
  const groups = [...h, ...Array<string>(fill).fill('0'), ...t];
  if (groups.length !== 8) return undefined;
  return { bits: 128, value: groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n) };
}

function parsePrefix(s: string): Prefix | undefined {
  const [addr, len] = s.split('/');
  const a = parseAddr(addr!);
  if (!a) return undefined;
  return { ...a, len: len === undefined ? a.bits : Number(len) };
}

function overlaps(a: Prefix, b: Prefix): boolean {
  if (a.bits !== b.bits) return false;
  const shift = BigInt(a.bits - Math.min(a.len, b.len));
  return a.value >> shift === b.value >> shift;
}

const ROUTE_TYPES = new Set(['unicast', 'local', 'broadcast', 'multicast', 'anycast', 'unreachable', 'blackhole', 'prohibit', 'throw', 'nat']);

/** Every destination in the host's routing tables plus its nameservers: what a test range must avoid. */
async function takenPrefixes(family: '-4' | '-6'): Promise<Prefix[]> {
  const out = await sh('ip', [family, 'route', 'show', 'table', 'all']);
  const taken: Prefix[] = [];
  for (const line of out.split('\n')) {
    const tok = line.trim().split(/\s+/);
    const dest = ROUTE_TYPES.has(tok[0]!) ? tok[1] : tok[0];
    const p = dest && dest !== 'default' ? parsePrefix(dest) : undefined;
    if (p) taken.push(p);
  }
  const resolv = existsSync('/etc/resolv.conf') ? readFileSync('/etc/resolv.conf', 'utf8') : '';
  for (const m of resolv.matchAll(/^\s*nameserver\s+(\S+)/gm)) {
    const p = parsePrefix(m[1]!);
    if (p) taken.push(p);
  }
  return taken;
}

function randomInt(n: number): number {
  return randomBytes(4).readUInt32BE() % n;
}

async function pickFree(family: '-4' | '-6', candidate: () => string): Promise<string> {
  const taken = await takenPrefixes(family);
  for (let i = 0; i < 64; i++) {
    const c = candidate();
    if (!taken.some((t) => overlaps(t, parsePrefix(c)!))) return c;
  }
  throw new Error(`no free ${family === '-4' ? 'IPv4' : 'IPv6'} test prefix found`);
}

// ---- the outside world ----------------------------------------------------------------------

export interface OutsideWorld {
  /** The namespace playing the remote host. */
  readonly ns: Netns;
  /** Host end of the veth pair (`tsbo<id>`), and the end inside the namespace (`tsbi<id>`). */
  readonly hostIf: string;
  readonly nsIf: string;
  /** 198.18.x.0/30 and fd5e:…::/64. */
  readonly prefix4: string;
  readonly prefix6: string;
  /** Addresses without prefix length: host side .1 / ::1, namespace side .2 / ::2. */
  readonly hostAddr: string;
  readonly nsAddr: string;
  readonly hostAddr6: string;
  readonly nsAddr6: string;
  /** Removes the veth pair and the namespace (and processes in it). Idempotent. */
  delete(): Promise<void>;
}

async function deleteLink(name: string): Promise<void> {
  const r = await shOk('ip', ['link', 'del', 'dev', name]);
  if (r.exitCode !== 0 && (await linkExists(name))) throw new Error(`ip link del ${name}: ${r.stderr}`);
}

async function buildOutsideWorld(prefix: string): Promise<OutsideWorld> {
  const p4 = await pickFree('-4', () => `198.18.${randomInt(256)}.0/30`);
  const p6 = await pickFree('-6', () => `fd5e:${(randomInt(0xffff) + 1).toString(16)}:${randomInt(0x10000).toString(16)}::/64`);
  const net4 = p4.slice(0, p4.lastIndexOf('.'));
  const net6 = p6.slice(0, -'::/64'.length);
  const ns = await createNetns(prefix);
  const world: OutsideWorld = {
    ns,
    hostIf: `tsbo${ns.id}`,
    nsIf: `tsbi${ns.id}`,
    prefix4: p4,
    prefix6: p6,
    hostAddr: `${net4}.1`,
    nsAddr: `${net4}.2`,
    hostAddr6: `${net6}::1`,
    nsAddr6: `${net6}::2`,
    async delete() {
      await deleteLink(world.hostIf);
      await ns.delete();
    },
  };
  const { hostIf, nsIf } = world;
  const inNs = (args: string[]) => sh('ip', ['-n', ns.name, ...args]);
  try {
    await sh('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf, 'netns', ns.name]);
    await sh('ip', ['addr', 'add', `${world.hostAddr}/30`, 'dev', hostIf]);
    await sh('ip', ['-6', 'addr', 'add', `${world.hostAddr6}/64`, 'dev', hostIf, 'nodad']);
    await sh('ip', ['link', 'set', hostIf, 'up']);
    await inNs(['addr', 'add', `${world.nsAddr}/30`, 'dev', nsIf]);
    await inNs(['-6', 'addr', 'add', `${world.nsAddr6}/64`, 'dev', nsIf, 'nodad']);
    await inNs(['link', 'set', nsIf, 'up']);
    await inNs(['route', 'add', 'default', 'via', world.hostAddr]);
    await inNs(['-6', 'route', 'add', 'default', 'via', world.hostAddr6]);
  } catch (e) {
    await world.delete();
    throw e;
  }
  return world;
}

/** True when only our own link routes the prefix (a parallel run may have picked the same one). */
async function routedOnlyBy(prefix: string, dev: string, family: '-4' | '-6'): Promise<boolean> {
  const lines = (await sh('ip', [family, 'route', 'show', prefix])).split('\n').filter(Boolean);
  return lines.length === 1 && lines[0]!.includes(`dev ${dev} `);
}

/**
 * Creates the "outside world": a namespace with a veth pair to the host, 198.18.x.2/30 and
 * fd5e:…::2/64 inside, .1 / ::1 on the host end, default routes in the namespace via the host.
 * The prefixes are picked at random among those no host route or nameserver overlaps.
 */
export async function createOutsideWorld(opts: { prefix?: string } = {}): Promise<OutsideWorld> {
  for (let attempt = 0; ; attempt++) {
    const world = await buildOutsideWorld(opts.prefix ?? 'ow');
    if ((await routedOnlyBy(world.prefix4, world.hostIf, '-4')) && (await routedOnlyBy(world.prefix6, world.hostIf, '-6'))) {
      return world;
    }
    await world.delete();
    if (attempt >= 4) throw new Error('could not find an outside-world prefix no one else routes');
  }
}

// ---- recording peers ------------------------------------------------------------------------

export interface PeerRecord {
  proto: 'tcp' | 'udp';
  /** The peer's address as the server saw it (IPv4 as a dotted quad, not ::ffff:…). */
  address: string;
  port: number;
}

export interface PeerRecorder {
  readonly port: number;
  /** Every connection / datagram seen so far, in order. */
  readonly peers: PeerRecord[];
  /** Resolves with the first recorded peer matching `match` (any peer when omitted). */
  waitForPeer(match?: (p: PeerRecord) => boolean, timeoutMs?: number): Promise<PeerRecord>;
  /** Stderr of the recorder so far (for failure messages). */
  stderr(): string;
  stop(): Promise<void>;
}

/*
 * Runs inside the namespace with node: listens on TCP and UDP (dual-stack) on argv[1], prints one
 * JSON line per peer, answers TCP with "ip:port\n" and UDP with "ip:port <payload>".
 */
const RECORDER_SCRIPT = `
const net = require('node:net'), dgram = require('node:dgram');
const port = Number(process.argv[1]);
const plain = (a) => (a && a.startsWith('::ffff:') ? a.slice(7) : a);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const fail = (e) => { process.stderr.write(String(e && e.stack || e) + '\\n'); process.exit(1); };
let ready = 0;
const up = () => { if (++ready === 2) out({ ready: true }); };
const tcp = net.createServer((s) => {
  const p = { proto: 'tcp', address: plain(s.remoteAddress), port: s.remotePort };
  out(p);
  s.on('error', () => {});
  s.end(p.address + ':' + p.port + '\\n');
});
tcp.on('error', fail);
tcp.listen({ port, host: '::', ipv6Only: false }, up);
const udp = dgram.createSocket({ type: 'udp6', ipv6Only: false });
udp.on('error', fail);
udp.on('message', (msg, r) => {
  const a = plain(r.address);
  out({ proto: 'udp', address: a, port: r.port });
  udp.send(a + ':' + r.port + ' ' + msg, r.port, r.address);
});
udp.bind(port, '::', up);
process.on('SIGTERM', () => process.exit(0));
`;

/**
 * Starts a TCP+UDP listener on `port` inside `ns` that records the address of every peer — to
 * prove which source address reached the outside world. Stopped by stop() or ns.delete().
 */
export async function startPeerRecorder(ns: Netns, port = 7070, readyTimeoutMs = 10_000): Promise<PeerRecorder> {
  const proc = ns.spawn(process.execPath, ['-e', RECORDER_SCRIPT, String(port)]);
  const peers: PeerRecord[] = [];
  const waiters = new Set<() => void>();
  let err = '';
  let buf = '';
  let ready = false;
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const msg = JSON.parse(buf.slice(0, i)) as PeerRecord | { ready: true };
      buf = buf.slice(i + 1);
      if ('ready' in msg) ready = true;
      else peers.push(msg);
    }
    waiters.forEach((w) => w());
  });
  void proc.then(() => waiters.forEach((w) => w()));

  /** Waits until `check` returns a value; fails on timeout or when the recorder has exited. */
  const until = <T>(check: () => T | undefined, timeoutMs: number, what: string) =>
    new Promise<T>((resolve, reject) => {
      const poll = () => {
        const v = check();
        if (v !== undefined) return done(() => resolve(v));
        if (proc.exitCode !== null || proc.signalCode !== null) {
          return done(() => reject(new Error(`peer recorder in ${ns.name} exited before ${what}: ${err}`)));
        }
      };
      const timer = setTimeout(() => done(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} in ${ns.name}`))), timeoutMs);
      const done = (f: () => void) => {
        clearTimeout(timer);
        waiters.delete(poll);
        f();
      };
      waiters.add(poll);
      poll();
    });

  const recorder: PeerRecorder = {
    port,
    peers,
    waitForPeer: (match = () => true, timeoutMs = 5000) => until(() => peers.find(match), timeoutMs, 'a peer'),
    stderr: () => err,
    stop: () => stopProcess(proc),
  };
  try {
    await until(() => (ready ? true : undefined), readyTimeoutMs, 'the recorder to listen');
  } catch (e) {
    await recorder.stop();
    throw e;
  }
  return recorder;
}
