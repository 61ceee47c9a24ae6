/**
 * A throwaway lab for the kernel integration tier: everything lives in network namespaces this
 * module creates, the machine's own links, routes and rulesets are never touched.
 *
 *   H  "the host": tsbridge's real IpLinks / NftFirewall / sysctls act here (NetnsRunner)
 *   O  "the outside world": a veth to H, 198.18.x.1/30 on H's end, .2 in O, default route via H
 *   C… "containers": get the peer veth that Join returns, moved in from H the way Docker does it
 *
 * Networks use 10.213.x.0/24 and fd5e:<rand>:<n>::/64; the outside link uses 198.18.x.0/30 and
 * fd5e:<rand>:ffff::/64. Every namespace is registered with the Cleanup given to {@link Lab.create}
 * and deleted with all its links and rules when that runs.
 */
import { parsePeerReply } from '../../lib/probe.js';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { DriverService } from '../../../src/driver/service.js';
import { Reconciler } from '../../../src/driver/reconcile.js';
import { bridgeName } from '../../../src/domain/names.js';
import { NftFirewall, type FirewallOptions } from '../../../src/kernel/real/firewall.js';
import { IpLinks } from '../../../src/kernel/real/links.js';
import type { HostPorts, Kernel } from '../../../src/kernel/types.js';
import { silentLogger } from '../../../src/logging.js';
import type { JoinInfo, NetworkSpec, PortRequest } from '../../../src/domain/types.js';
import { Db } from '../../../src/state/db.js';
import { MemoryStore } from '../../../src/state/store.js';
import { emptyState } from '../../../src/state/types.js';
import { networkSpec, type BridgeNetworkFields } from '../../fakes/world.js';
import type { Cleanup } from '../../lib/cleanup.js';
import { createNetns, type Netns } from '../../lib/netns.js';
import { sh, shOk } from '../../lib/run.js';
import { NetnsRunner, NetnsSysctl } from './netns-runner.js';

export interface LabOptions {
  /** iptables binaries for the forward shim (default: iptables / ip6tables, which are iptables-nft here). */
  iptables?: { v4: string; v6: string };
  /** The firewall's options (re-application hook, mark bit). */
  firewall?: FirewallOptions;
}

export interface NetworkOpts extends Partial<Omit<BridgeNetworkFields, 'ipv4' | 'ipv6'>> {
  /** Give the network an IPv6 subnet (and enable IPv6). */
  v6?: boolean;
  /** false: no IPv4 subnet (an IPv6-only network; needs v6). */
  v4?: boolean;
  /** 'p2p': a point-to-point network (its settings from icc, masquerade, hostBindingIpv4, snatIpv4). */
  mode?: 'p2p';
}

export interface LabNetwork {
  spec: NetworkSpec;
  id: string;
  bridge: string;
  /** "10.213.x" ('' on an IPv6-only network) */
  net4: string;
  /** "fd5e:r:n" (append "::1") or null */
  net6: string | null;
  gateway4: string;
  gateway6: string | null;
  /** Next host number to hand out. */
  next: number;
}

export interface LabEndpoint {
  id: string;
  network: LabNetwork;
  ns: Netns;
  /** Addresses without prefix length ('' for IPv4 on an IPv6-only network). */
  ipv4: string;
  ipv6: string | null;
  mac: string;
  join: JoinInfo;
  /** Name of the interface inside the container (dstPrefix + '0'). */
  ifname: string;
}

export interface TcpProbeResult {
  reply?: string;
  error?: string;
}

function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

/** A Docker-style 64-hex-digit ID. */
export function dockerId(): string {
  return hex(32);
}

function randInt(n: number): number {
  return randomBytes(4).readUInt32BE() % n;
}

/** A HostPorts that reports nothing listening (H is a fresh namespace) and a fixed ephemeral range. */
export const quietHostPorts: HostPorts = {
  listening: async () => [],
  ephemeralRange: async () => [40000, 40999],
};

/*
 * TCP client run with node inside a namespace: connects, half-closes, prints one JSON line with
 * everything read until the server closed, or the error code (ECONNREFUSED, timeout…).
 */
const TCP_CLIENT = `
const net = require('node:net');
const [host, port, ms] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const done = (o) => { process.stdout.write(JSON.stringify(o) + '\\n'); process.exit(0); };
let got = '';
const s = net.connect({ host, port });
setTimeout(() => done({ error: 'timeout', got }), ms);
s.setEncoding('utf8');
s.on('connect', () => s.end());
s.on('data', (d) => (got += d));
s.on('error', (e) => done({ error: e.code || e.message }));
s.on('close', () => done({ reply: got }));
`;

/**
 * No IPv6 duplicate address detection on links made later in `ns`: while a fresh link's
 * link-local address is tentative, neighbour discovery through it stalls for about a second and
 * the first IPv6 packets of a test get lost — a property of brand-new links, not of tsbridge.
 */
async function quietIpv6(ns: Netns): Promise<void> {
  for (const scope of ['all', 'default']) {
    await sh('ip', ['netns', 'exec', ns.name, 'sysctl', '-q', '-w', `net.ipv6.conf.${scope}.accept_dad=0`]);
  }
}

/**
 * IpLinks looks links up in sysfs, which shows the links of the namespace it was mounted in.
 * `ip netns exec` mounts a fresh sysfs for the namespace in a private mount namespace: a process
 * parked there (`sleep`, killed by ns.delete()) exposes it at /proc/PID/root/sys/class/net.
 */
async function netnsSysfs(ns: Netns): Promise<string> {
  const proc = ns.spawn('sleep', ['infinity']);
  const pid = proc.pid;
  if (pid === undefined) throw new Error(`could not start a process in ${ns.name}`);
  const deadline = Date.now() + 5000;
  // until `ip netns exec` has switched namespaces and exec'd sleep, the path shows the host's sysfs
  while (!existsSync(`/proc/${pid}/comm`) || readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'sleep') {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`the sysfs pin process in ${ns.name} did not start`);
    await new Promise((r) => setTimeout(r, 10));
  }
  const sysfs = `/proc/${pid}/root/sys/class/net`;
  if (!existsSync(`${sysfs}/lo`) || existsSync(`${sysfs}/eth0`)) throw new Error(`${sysfs} does not show ${ns.name}'s links`);
  return sysfs;
}

/* UDP client run with node inside a namespace: one datagram, prints the first reply or "timeout". */
const UDP_CLIENT = `
const dgram = require('node:dgram'), net = require('node:net');
const [host, port, ms, payload] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), process.argv[4]];
const done = (o) => { process.stdout.write(JSON.stringify(o) + '\\n'); process.exit(0); };
const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
setTimeout(() => done({ error: 'timeout' }), ms);
s.on('error', (e) => done({ error: e.code || e.message }));
s.on('message', (m) => done({ reply: m.toString() }));
s.send(payload, port, host);
`;

export class Lab {
  /** Every namespace any lab created in this process (to check that none is left). */
  static readonly created: string[] = [];
  readonly runner: NetnsRunner;
  readonly sysctl: NetnsSysctl;
  readonly kernel: Kernel;
  readonly store = new MemoryStore();
  readonly db = new Db(this.store, emptyState());
  readonly log = silentLogger();
  readonly driver: DriverService;
  private readonly netBase = randInt(200);
  private readonly v6Base = (randInt(0xfffe) + 1).toString(16);
  private networksMade = 0;

  private constructor(
    private readonly cleanup: Cleanup,
    readonly host: Netns,
    readonly outside: Netns,
    /** H's end of the outside link and its addresses; O's end and its addresses. */
    readonly hostIf: string,
    readonly outIf: string,
    readonly hostAddr: string,
    readonly outAddr: string,
    readonly hostAddr6: string,
    readonly outAddr6: string,
    /** H's /sys/class/net as seen from this process (IpLinks checks for links there). */
    readonly sysfs: string,
    opts: LabOptions,
  ) {
    this.runner = new NetnsRunner(host.name);
    cleanup.add(() => this.runner.close(), 'long-lived ip and nft'); // before the namespace goes
    this.sysctl = new NetnsSysctl(this.runner);
    this.kernel = {
      links: new IpLinks(this.runner, sysfs),
      firewall: new NftFirewall(this.runner, this.log, opts.iptables, undefined, opts.firewall),
      sysctl: this.sysctl,
    };
    this.driver = new DriverService(this.db, this.kernel, quietHostPorts, this.log);
  }

  static async create(cleanup: Cleanup, opts: LabOptions = {}): Promise<Lab> {
    const host = await createNetns('h');
    Lab.created.push(host.name);
    cleanup.add(() => host.delete(), `netns ${host.name}`);
    const outside = await createNetns('o');
    Lab.created.push(outside.name);
    cleanup.add(() => outside.delete(), `netns ${outside.name}`);
    const x = randInt(256);
    const v6 = `fd5e:${(randInt(0xfffe) + 1).toString(16)}:ffff`;
    const hostIf = `tsbo${outside.id}`;
    const outIf = `tsbi${outside.id}`;
    const sysfs = await netnsSysfs(host);
    const lab = new Lab(cleanup, host, outside, hostIf, outIf, `198.18.${x}.1`, `198.18.${x}.2`, `${v6}::1`, `${v6}::2`, sysfs, opts);
    await quietIpv6(host);
    await quietIpv6(outside);
    const H = (args: string[]) => sh('ip', ['-n', host.name, ...args]);
    const O = (args: string[]) => sh('ip', ['-n', outside.name, ...args]);
    await H(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', outIf, 'netns', outside.name]);
    await H(['addr', 'add', `${lab.hostAddr}/30`, 'dev', hostIf]);
    await H(['-6', 'addr', 'add', `${lab.hostAddr6}/64`, 'dev', hostIf, 'nodad']);
    await H(['link', 'set', hostIf, 'up']);
    await O(['addr', 'add', `${lab.outAddr}/30`, 'dev', outIf]);
    await O(['-6', 'addr', 'add', `${lab.outAddr6}/64`, 'dev', outIf, 'nodad']);
    await O(['link', 'set', outIf, 'up']);
    await O(['route', 'add', 'default', 'via', lab.hostAddr]);
    await O(['-6', 'route', 'add', 'default', 'via', lab.hostAddr6]);
    return lab;
  }

  /** `ip -n H …` */
  ipH(args: string[]): Promise<string> {
    return sh('ip', ['-n', this.host.name, ...args]);
  }

  private extraAddrs = 0;

  /** Adds one more IPv4 address (198.18.y.z/32) to H's outside link; O reaches it via its default route. */
  async addHostAddress(): Promise<string> {
    const [, , x] = this.hostAddr.split('.');
    const addr = `198.18.${(Number(x) + 1) % 256}.${9 + this.extraAddrs++}`;
    await this.ipH(['addr', 'add', `${addr}/32`, 'dev', this.hostIf]);
    return addr;
  }

  /** A fresh namespace playing a container (deleted by the lab's cleanup). */
  async container(prefix = 'c'): Promise<Netns> {
    const ns = await createNetns(prefix);
    Lab.created.push(ns.name);
    this.cleanup.add(() => ns.delete(), `netns ${ns.name}`);
    await quietIpv6(ns);
    return ns;
  }

  /** A network spec like the protocol layer would produce: 10.213.x.0/24, gateway .1. */
  networkSpec(opts: NetworkOpts = {}): LabNetwork {
    const n = this.networksMade++;
    const id = opts.id ?? dockerId();
    const net4 = `10.213.${(this.netBase + n) % 256}`;
    const net6 = opts.v6 ? `fd5e:${this.v6Base}:${n + 1}` : null;
    const { v6: _v6, v4: _v4, mode, ...rest } = opts;
    const v4 = opts.v4 !== false;
    const bridged: NetworkSpec = networkSpec({
      id,
      bridge: bridgeName(id),
      enableIpv6: !!opts.v6,
      ...rest,
      ipv4: v4 ? [{ subnet: `${net4}.0/24`, gateway: `${net4}.1/24` }] : [],
      ipv6: net6 ? [{ subnet: `${net6}::/64`, gateway: `${net6}::1/64` }] : [],
    });
    const { icc, masquerade, hostBindingIpv4, snatIpv4 } = bridged.settings;
    const spec: NetworkSpec = mode === 'p2p' ? { ...bridged, kind: 'p2p', settings: { icc, masquerade, hostBindingIpv4, snatIpv4 } } : bridged;
    return { spec, id, bridge: String(spec.settings.bridge), net4: v4 ? net4 : '', net6, gateway4: v4 ? `${net4}.1` : '', gateway6: net6 ? `${net6}::1` : null, next: 2 };
  }

  /** Creates a network through the driver. */
  async network(opts: NetworkOpts = {}): Promise<LabNetwork> {
    const net = this.networkSpec(opts);
    await this.driver.createNetwork(net.spec);
    return net;
  }

  /** CreateEndpoint only (no Join): the veth pair stays in H. */
  async endpoint(net: LabNetwork, id = dockerId()): Promise<{ id: string; mac: string; ipv4: string; ipv6: string | null }> {
    const host = net.next++;
    const ipv4 = net.net4 ? `${net.net4}.${host}` : '';
    const ipv6 = net.net6 ? `${net.net6}::${host.toString(16)}` : null;
    const { mac } = await this.driver.createEndpoint({
      networkId: net.id,
      endpointId: id,
      ipv4: ipv4 ? `${ipv4}/24` : null,
      ipv6: ipv6 ? `${ipv6}/64` : null,
      mac: null,
    });
    return { id, mac, ipv4, ipv6 };
  }

  /**
   * CreateEndpoint + Join, then Docker's part: move the peer veth into the container namespace,
   * rename it, give it the endpoint's addresses, bring it up, route via the returned gateway
   * (`forceGateway`: via the network's gateway even when Join returned none, as a container
   * that tries anyway would).
   */
  async attach(net: LabNetwork, ns?: Netns, opts: { forceGateway?: boolean } = {}): Promise<LabEndpoint> {
    const c = ns ?? (await this.container());
    const ep = await this.endpoint(net);
    const join = await this.driver.join(net.id, ep.id);
    const ifname = `${join.dstPrefix}0`;
    const C = (args: string[]) => sh('ip', ['-n', c.name, ...args]);
    await this.ipH(['link', 'set', 'dev', join.srcName, 'netns', c.name]);
    await C(['link', 'set', 'dev', join.srcName, 'name', ifname]);
    if (ep.ipv4) await C(['addr', 'add', `${ep.ipv4}/24`, 'dev', ifname]);
    if (ep.ipv6) await C(['-6', 'addr', 'add', `${ep.ipv6}/64`, 'dev', ifname, 'nodad']);
    await C(['link', 'set', 'dev', ifname, 'up']);
    // Join's static routes as Docker adds them: routes on the link first, then those via a next hop.
    const fam = (dst: string) => (dst.includes(':') ? '-6' : '-4');
    for (const r of join.staticRoutes.filter((x) => x.type === 'connected')) await C([fam(r.destination), 'route', 'add', r.destination, 'dev', ifname]);
    for (const r of join.staticRoutes.filter((x) => x.type === 'via')) await C([fam(r.destination), 'route', 'add', r.destination, 'via', r.nextHop]);
    const gw4 = join.gateway || (opts.forceGateway ? net.gateway4 : '');
    if (gw4) await C(['route', 'add', 'default', 'via', gw4]);
    const gw6 = join.gatewayIpv6 || (opts.forceGateway && ep.ipv6 ? net.gateway6 : '');
    if (gw6) await C(['-6', 'route', 'add', 'default', 'via', gw6]);
    return { ...ep, network: net, ns: c, join, ifname };
  }

  /** A Reconciler over the lab's Db and kernel (what main.ts runs at start-up). */
  reconciler(): Reconciler {
    return new Reconciler(this.db, this.kernel, this.log);
  }

  /**
   * Makes H's iptables look like Docker's: FORWARD policy DROP, DOCKER-USER jumped to from FORWARD
   * (pass 'ip6tables' for the IPv6 side, as Docker does with ip6tables enabled).
   */
  async dockerLikeFirewall(bin = 'iptables'): Promise<void> {
    const input = [
      '*filter',
      ':FORWARD DROP [0:0]',
      ':DOCKER-USER - [0:0]',
      '-A FORWARD -j DOCKER-USER',
      '-A DOCKER-USER -j RETURN',
      'COMMIT',
      '',
    ].join('\n');
    await this.host.exec(`${bin}-restore`, ['-w', '5', '--noflush'], { input });
  }

  /** `iptables-save -t filter` inside H, without comments and counters: comparable byte for byte. */
  async iptablesSave(bin = 'iptables'): Promise<string> {
    const out = await this.host.exec(`${bin}-save`, ['-t', 'filter']);
    return out
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
      .join('\n');
  }

  /** `iptables -S` lines inside H (filter table). */
  async iptablesRules(bin = 'iptables'): Promise<string[]> {
    return (await this.host.exec(bin, ['-w', '5', '-t', 'filter', '-S'])).split('\n').filter(Boolean);
  }

  /** Names of H's links that look like tsbridge's (tsb-…, tsv…, tsc…). */
  async tsbridgeLinks(): Promise<string[]> {
    const rows = JSON.parse(await this.ipH(['-j', 'link', 'show'])) as { ifname: string }[];
    return rows.map((r) => r.ifname).filter((n) => /^(tsb-|tsv|tsc)/.test(n));
  }

  /**
   * `nft list ruleset` inside H with counters zeroed (iptables-nft rules count packets), one
   * string per table, sorted: replacing a table moves it to the end of the listing.
   */
  async nftRuleset(): Promise<string[]> {
    const text = (await this.host.exec('nft', ['list', 'ruleset'])).replace(/packets \d+ bytes \d+/g, 'packets 0 bytes 0');
    const tables: string[] = [];
    for (const line of text.split('\n')) {
      if (line.startsWith('table ')) tables.push(line);
      else if (tables.length) tables[tables.length - 1] += `\n${line}`;
    }
    return tables.sort();
  }

  /** `nft list tables` inside H. */
  async nftTables(): Promise<string[]> {
    return (await this.host.exec('nft', ['list', 'tables'])).split('\n').filter(Boolean);
  }

  /** One `ip -j -d link show dev NAME` row inside H (or inside `ns`). */
  async linkDetails(name: string, ns: Netns = this.host): Promise<LinkJson> {
    const rows = JSON.parse(await sh('ip', ['-n', ns.name, '-j', '-d', 'link', 'show', 'dev', name])) as LinkJson[];
    return rows[0]!;
  }

  /** Addresses (with prefix length) on a link inside H. */
  async addresses(name: string): Promise<string[]> {
    const rows = JSON.parse(await this.ipH(['-j', 'addr', 'show', 'dev', name])) as { addr_info: { local: string; prefixlen: number }[] }[];
    return rows.flatMap((r) => r.addr_info.map((a) => `${a.local}/${a.prefixlen}`));
  }

  /** ProgramExternalConnectivity with one binding hostIp:hostPort → containerPort. */
  async publish(ep: LabEndpoint, hostPort: number, opts: { containerPort?: number; proto?: 'tcp' | 'udp'; hostIp?: string } = {}) {
    const req: PortRequest = { proto: opts.proto ?? 'tcp', containerPort: opts.containerPort ?? 80, hostIp: opts.hostIp ?? '', hostPort, hostPortEnd: 0 };
    return this.driver.programExternalConnectivity(ep.network.id, ep.id, [req]);
  }
}

export interface LinkJson {
  ifname: string;
  mtu: number;
  address: string;
  master?: string;
  operstate: string;
  flags: string[];
  ifindex?: number;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown>; info_slave_kind?: string; info_slave_data?: { hairpin?: boolean; learning?: boolean } };
}

/** One ICMP echo from `ns` (busybox ping, 1 s). */
export async function ping(ns: Netns, addr: string): Promise<boolean> {
  const args = addr.includes(':') ? ['ping', '-6', '-c', '1', '-W', '1', addr] : ['ping', '-c', '1', '-W', '1', addr];
  return (await ns.execOk('busybox', args, { timeoutMs: 5000 })).exitCode === 0;
}

/** True when `ns` reaches `addr` within a few tries (first packets may wait for ARP/ND). */
export async function reaches(ns: Netns, addr: string, tries = 3): Promise<boolean> {
  for (let i = 0; i < tries; i++) if (await ping(ns, addr)) return true;
  return false;
}

/** A TCP connection from inside `ns`; resolves with the server's answer or the error. */
export async function tcpFrom(ns: Netns, host: string, port: number, timeoutMs = 2000): Promise<TcpProbeResult> {
  const r = await shOk('ip', ['netns', 'exec', ns.name, process.execPath, '-e', TCP_CLIENT, host, String(port), String(timeoutMs)], {
    timeoutMs: timeoutMs + 10_000,
  });
  if (r.exitCode !== 0) return { error: `client failed: ${r.stderr.trim()}` };
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TcpProbeResult;
}

/** One UDP datagram from inside `ns`; resolves with the first reply or the error. */
export async function udpFrom(ns: Netns, host: string, port: number, payload = 'ping', timeoutMs = 2000): Promise<TcpProbeResult> {
  const r = await shOk('ip', ['netns', 'exec', ns.name, process.execPath, '-e', UDP_CLIENT, host, String(port), String(timeoutMs), payload], {
    timeoutMs: timeoutMs + 10_000,
  });
  if (r.exitCode !== 0) return { error: `client failed: ${r.stderr.trim()}` };
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as TcpProbeResult;
}

/** Conntrack entries inside `ns` (`conntrack -L`, one per line). */
export async function conntrack(ns: Netns, args: string[] = []): Promise<string[]> {
  const r = await ns.execOk('conntrack', ['-L', ...args]);
  return r.stdout.split('\n').filter((l) => l.trim() && !l.startsWith('conntrack'));
}

/** The tools this tier runs (inside namespaces): throws one clear error naming all that are missing. */
export async function requireLabTools(): Promise<void> {
  const tools = ['ip', 'nft', 'iptables', 'ip6tables', 'iptables-restore', 'iptables-save', 'conntrack', 'busybox'];
  const missing: string[] = [];
  for (const t of tools) if (!(await haveBinary(t))) missing.push(t);
  if (missing.length) {
    throw new Error(`the kernel integration tests need ${missing.join(', ')} (apt-get install iproute2 nftables iptables conntrack busybox-static)`);
  }
}

/** True when the binary exists on PATH (checked with `which`, no shell). */
export async function haveBinary(name: string): Promise<boolean> {
  return (await shOk('which', [name])).exitCode === 0;
}

/** The address the peer recorder answered with (fails the test when it did not answer). */
export function seenAs(reply: { reply?: string; error?: string }): string {
  if (reply.reply === undefined) throw new Error(`no answer: ${reply.error}`);
  return parsePeerReply(reply.reply).address;
}
