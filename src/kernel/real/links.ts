import { promises as fs } from 'node:fs';
import { isTsbridgeError, TsbridgeError } from '../../errors.js';
import { canonicalAddress, canonicalPrefix } from '../../net/addr.js';
import { addressArgs, addressKeyArgs, describeRoute, MAIN_TABLE, routeArgs, routeKeyArgs, sameAddress, sameRoute } from '../held.js';
import type { BridgeSpec, HeldAddress, HeldRoute, InterfaceState, LinkInfo, Links, RemoteEndpoint, RouteSpec, UplinkSpec, VethSpec, VxlanSpec } from '../types.js';
import { runBatch, type Runner } from './exec.js';

interface RawLink {
  ifname: string;
  master?: string;
  ifalias?: string;
  mtu?: number;
  linkinfo?: { info_kind?: string; info_data?: { id?: number; local?: string; local6?: string; port?: number; learning?: boolean; proxy?: boolean } };
}

interface RawFdb {
  mac: string;
  dst?: string;
  flags?: string[];
  master?: string;
  state?: string;
}

interface RawNeigh {
  dst: string;
  lladdr?: string;
  state?: string[];
}

interface RawAddrLink extends RawLink {
  flags?: string[];
  mtu?: number;
  address?: string;
  link_type?: string;
  addr_info?: {
    family: string;
    local: string;
    prefixlen: number;
    address?: string;
    broadcast?: string;
    scope?: string;
    metric?: number;
    noprefixroute?: boolean;
  }[];
}

interface RawRoute {
  type?: string;
  dst: string;
  gateway?: string;
  via?: unknown;
  table?: string;
  protocol?: string;
  scope?: string;
  prefsrc?: string;
  metric?: number;
  flags?: string[];
  nexthops?: unknown;
  nhid?: number;
  encap?: unknown;
  metrics?: unknown;
}

const TABLE_NAMES: Record<string, number> = { main: MAIN_TABLE, default: 253 };

/** An interface's addresses from `ip -j addr`: IPv4, and IPv6 but link-local; a peer address cannot be moved. */
export function parseAddresses(link: RawAddrLink): { addresses: HeldAddress[]; unmovable: string[] } {
  const addresses: HeldAddress[] = [];
  const unmovable: string[] = [];
  for (const a of link.addr_info ?? []) {
    if (a.family !== 'inet' && a.family !== 'inet6') continue;
    if (a.family === 'inet6' && a.scope === 'link') continue;
    const cidr = `${canonicalAddress(a.local)}/${a.prefixlen}`;
    if (a.address && a.address !== a.local) {
      unmovable.push(`address ${cidr} peer ${a.address}`);
      continue;
    }
    const h: HeldAddress = { cidr };
    if (a.broadcast) h.broadcast = a.broadcast;
    if (a.scope && a.scope !== 'global') h.scope = a.scope;
    if (a.noprefixroute) h.noprefixroute = true;
    if (a.metric !== undefined && a.metric !== 0) h.metric = a.metric;
    addresses.push(h);
  }
  return { addresses, unmovable };
}

/**
 * Routes from `ip -j -4|-6 route show table all dev X`: those of the `local` table, those of other
 * types (broadcast, multicast …) and those the kernel made for an address are left out — they come
 * and go with the addresses. Multipath routes, nexthop objects, encapsulation and route metrics
 * (mtu, advmss …) cannot be written back as they were: listed as unmovable.
 */
export function parseRoutes(rows: RawRoute[], family: 4 | 6): { routes: HeldRoute[]; unmovable: string[] } {
  const routes: HeldRoute[] = [];
  const unmovable: string[] = [];
  for (const r of rows) {
    if (r.table === 'local' || (r.type && r.type !== 'unicast') || r.protocol === 'kernel') continue;
    const dst = r.dst === 'default' ? (family === 4 ? '0.0.0.0/0' : '::/0') : r.dst.includes('/') ? r.dst : `${r.dst}/${family === 4 ? 32 : 128}`;
    const table = r.table === undefined ? MAIN_TABLE : TABLE_NAMES[r.table] ?? (/^\d+$/.test(r.table) ? Number(r.table) : NaN);
    const text = `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''}${r.table ? ` table ${r.table}` : ''}`;
    if (r.nexthops !== undefined || r.nhid !== undefined || r.encap !== undefined || r.metrics !== undefined || r.via !== undefined || Number.isNaN(table)) {
      unmovable.push(text);
      continue;
    }
    const h: HeldRoute = { to: canonicalPrefix(dst, 'route') };
    if (r.gateway) h.via = canonicalAddress(r.gateway);
    if (table !== MAIN_TABLE) h.table = table;
    if (r.metric !== undefined && !(family === 4 && r.metric === 0)) h.metric = r.metric;
    if (r.protocol && r.protocol !== 'boot') h.proto = r.protocol;
    if (r.scope && r.scope !== 'global') h.scope = r.scope;
    if (r.prefsrc) h.src = canonicalAddress(r.prefsrc);
    if (r.flags?.includes('onlink')) h.onlink = true;
    routes.push(h);
  }
  return { routes, unmovable };
}

/** `addr replace` keeps the line idempotent; IPv6 without duplicate address detection (tsbridge owns the subnet). */
function addressLine(cidr: string, dev: string): string {
  return cidr.includes(':') ? `addr replace ${cidr} dev ${dev} nodad` : `addr replace ${cidr} dev ${dev}`;
}

/** Links through iproute2: one `ip -batch` per operation. Names are validated before they get here. */
export class IpLinks implements Links {
  constructor(
    private readonly runner: Runner,
    private readonly sysfs = '/sys/class/net',
    /** Set as ifalias on every link created here, so start-up can tell its own links from others'. */
    private readonly alias = 'tsbridge',
  ) {}

  private info(x: RawLink): LinkInfo {
    return { name: x.ifname, kind: x.linkinfo?.info_kind ?? '', master: x.master ?? null, owned: x.ifalias === this.alias };
  }

  async inspect(name: string): Promise<InterfaceState | null> {
    if (!(await this.present(name))) return null;
    const r = await this.runner.run('ip', ['-j', '-d', 'addr', 'show', 'dev', name], { allowFail: true });
    if (r.exitCode !== 0) return null;
    const link = (JSON.parse(r.stdout || '[]') as RawAddrLink[])[0];
    if (!link) return null;
    const [r4, r6] = await Promise.all([
      this.runner.run('ip', ['-j', '-4', 'route', 'show', 'table', 'all', 'dev', name]),
      this.runner.run('ip', ['-j', '-6', 'route', 'show', 'table', 'all', 'dev', name]),
    ]);
    const addrs = parseAddresses(link);
    const v4 = parseRoutes(JSON.parse(r4.stdout || '[]') as RawRoute[], 4);
    const v6 = parseRoutes(JSON.parse(r6.stdout || '[]') as RawRoute[], 6);
    return {
      ...this.info(link),
      linkType: link.link_type ?? '',
      up: (link.flags ?? []).includes('UP'),
      mtu: link.mtu ?? 0,
      mac: (link.address ?? '').toLowerCase(),
      addresses: addrs.addresses,
      routes: [...v4.routes, ...v6.routes],
      unmovable: [...addrs.unmovable, ...v4.unmovable, ...v6.unmovable],
    };
  }

  async adoptUplink(spec: UplinkSpec): Promise<'adopted' | 'missing'> {
    const { name, bridge } = spec;
    const before = await this.inspect(name);
    if (!before) return 'missing';
    const addresses = spec.was?.addresses ?? [];
    const routes = spec.was?.routes ?? [];
    // The bridge gets the addresses first, then the port, then the routes — `replace` moves a
    // route that is still through the uplink in one step, so a default route never goes missing.
    await this.batch([
      ...addresses.map((a) => `addr replace ${addressArgs(a, bridge)}`),
      `link set dev ${name} master ${bridge}`,
      `link set dev ${name} up`,
      ...routes.map((r) => `route replace ${routeArgs(r, bridge)}`),
    ], `taking ${name} as a port of ${bridge}`);
    // Then the uplink lets go of them (the kernel drops IPv4 routes with the last address, and
    // secondary addresses with the primary: lines that find nothing are fine).
    const stale = [
      ...[...before.addresses].reverse().filter((h) => addresses.some((a) => sameAddress(a, h))).map((a) => `addr del ${addressKeyArgs(a, name)}`),
      ...before.routes.filter((h) => routes.some((r) => sameRoute(r, h))).map((r) => `route del ${routeKeyArgs(r, name)}`),
    ];
    if (stale.length) await this.runner.run('ip', ['-force', '-batch', '-'], { input: stale.join('\n') + '\n', allowFail: true });

    const [up, br] = await Promise.all([this.inspect(name), this.inspect(bridge)]);
    const wrong: string[] = [];
    if (!up || up.master !== bridge) wrong.push(`${name} is not a port of ${bridge}`);
    for (const a of addresses) {
      if (!br?.addresses.some((h) => sameAddress(a, h))) wrong.push(`${bridge} lacks ${a.cidr}`);
      if (up?.addresses.some((h) => sameAddress(a, h))) wrong.push(`${name} still holds ${a.cidr}`);
    }
    for (const r of routes) {
      if (!br?.routes.some((h) => sameRoute(r, h))) wrong.push(`route ${describeRoute(r)} is not through ${bridge}`);
      if (up?.routes.some((h) => sameRoute(r, h))) wrong.push(`route ${describeRoute(r)} is still through ${name}`);
    }
    if (wrong.length) throw new TsbridgeError('KERNEL', { op: `taking ${name} as a port of ${bridge}`, detail: wrong.join('; ') });
    return 'adopted';
  }

  async releaseUplink(spec: UplinkSpec): Promise<'released' | 'missing'> {
    const { name, bridge, was } = spec;
    const now = await this.inspect(name);
    if (!now) return 'missing';
    const onBridge = await this.present(bridge);
    // Every step is tried (-force): what can be given back is, and the check below says what could not.
    const L: string[] = [];
    if (now.master) L.push(`link set dev ${name} nomaster`);
    if (was) {
      if (was.mtu > 0 && now.mtu !== was.mtu) L.push(`link set dev ${name} mtu ${was.mtu}`);
      if (was.up) L.push(`link set dev ${name} up`);
      // Its addresses in their recorded order (the first of a subnet is the primary): those it
      // still holds are taken off first, so one a crash left behind cannot end up first.
      const holding = now.addresses.filter((h) => was.addresses.some((a) => sameAddress(a, h)));
      L.push(...[...holding].reverse().map((a) => `addr del ${addressKeyArgs(a, name)}`));
      L.push(...was.addresses.map((a) => `addr replace ${addressArgs(a, name)}`));
      L.push(...was.routes.map((r) => `route replace ${routeArgs(r, name)}`));
      if (onBridge) L.push(...[...was.addresses].reverse().map((a) => `addr del ${addressKeyArgs(a, bridge)}`));
      if (!was.up) L.push(`link set dev ${name} down`);
    }
    if (L.length) await this.runner.run('ip', ['-force', '-batch', '-'], { input: L.join('\n') + '\n', allowFail: true });

    const after = await this.inspect(name);
    if (!after) return 'missing';
    const wrong: string[] = [];
    if (after.master) wrong.push(`${name} is still a port of ${after.master}`);
    if (was) {
      if (after.up !== was.up) wrong.push(`${name} is ${after.up ? 'up' : 'down'}, was ${was.up ? 'up' : 'down'}`);
      if (was.mtu > 0 && after.mtu !== was.mtu) wrong.push(`${name} has MTU ${after.mtu}, had ${was.mtu}`);
      for (const a of was.addresses) if (!after.addresses.some((h) => sameAddress(a, h))) wrong.push(`${name} lacks ${a.cidr}`);
      for (const r of was.routes) if (!after.routes.some((h) => sameRoute(r, h))) wrong.push(`route ${describeRoute(r)} is not through ${name}`);
    }
    if (wrong.length) throw new TsbridgeError('KERNEL', { op: `giving ${name} back from ${bridge}`, detail: wrong.join('; ') });
    return 'released';
  }

  async list(): Promise<LinkInfo[]> {
    const r = await this.runner.run('ip', ['-j', '-d', 'link', 'show']);
    return (JSON.parse(r.stdout || '[]') as RawLink[]).map((x) => this.info(x));
  }

  /** Cheap existence check through sysfs (no process). */
  private async present(name: string): Promise<boolean> {
    try {
      await fs.access(`${this.sysfs}/${name}`);
      return true;
    } catch {
      return false;
    }
  }

  private async exists(name: string): Promise<LinkInfo | null> {
    if (!(await this.present(name))) return null;
    const r = await this.runner.run('ip', ['-j', '-d', 'link', 'show', 'dev', name], { allowFail: true });
    if (r.exitCode !== 0) return null;
    const x = (JSON.parse(r.stdout || '[]') as RawLink[])[0];
    return x ? this.info(x) : null;
  }

  async ensureBridge(spec: BridgeSpec): Promise<void> {
    await this.batch(() => this.bridgeLines(spec));
  }

  private async bridgeLines(spec: BridgeSpec): Promise<string[]> {
    const have = await this.exists(spec.name);
    const L: string[] = [];
    if (have && have.kind !== 'bridge') {
      throw new TsbridgeError('BRIDGE_NAME_IN_USE', { name: spec.name, networkId: `no network (it is a ${have.kind || 'non-bridge'} interface)` });
    }
    if (!have) {
      L.push(`link add name ${spec.name} address ${spec.mac} mtu ${spec.mtu} type bridge stp_state 0 forward_delay 0`);
      L.push(`link set dev ${spec.name} alias ${this.alias}`);
    }
    else L.push(`link set dev ${spec.name} mtu ${spec.mtu}`);
    for (const a of spec.addresses) L.push(addressLine(a, spec.name));
    L.push(`link set dev ${spec.name} up`);
    return L;
  }

  async ensureVeth(spec: VethSpec): Promise<void> {
    await this.batch(() => this.vethLines(spec));
  }

  private async vethLines(spec: VethSpec): Promise<string[]> {
    const L: string[] = [];
    if (await this.present(spec.hostName)) L.push(`link del dev ${spec.hostName}`);
    L.push(
      `link add name ${spec.hostName} mtu ${spec.mtu} type veth peer name ${spec.peerName} mtu ${spec.mtu} address ${spec.mac}`,
      `link set dev ${spec.hostName} alias ${this.alias}`,
      `link set dev ${spec.peerName} alias ${this.alias}`,
    );
    if (spec.master) {
      L.push(`link set dev ${spec.hostName} master ${spec.master}`, `link set dev ${spec.hostName} type bridge_slave hairpin on`);
    }
    for (const a of spec.hostAddresses) L.push(addressLine(a, spec.hostName));
    L.push(`link set dev ${spec.hostName} up`);
    return L;
  }

  async ensureVxlan(spec: VxlanSpec): Promise<void> {
    const L: string[] = [];
    if (await this.present(spec.name)) {
      const r = await this.runner.run('ip', ['-j', '-d', 'link', 'show', 'dev', spec.name]);
      const x = (JSON.parse(r.stdout || '[]') as RawLink[])[0];
      const d = x?.linkinfo?.info_data;
      const same = x?.linkinfo?.info_kind === 'vxlan' && d?.id === spec.vni && (d.local ?? d.local6) === spec.local && d.port === spec.port && d.learning === false && d.proxy === true;
      if (same) {
        if (x.mtu !== spec.mtu) L.push(`link set dev ${spec.name} mtu ${spec.mtu}`);
        if (x.master !== spec.master) L.push(`link set dev ${spec.name} master ${spec.master}`, `link set dev ${spec.name} type bridge_slave learning off`);
        L.push(`link set dev ${spec.name} up`);
        await this.batch(L);
        return;
      }
      L.push(`link del dev ${spec.name}`); // another VNI, source or port: made again
    }
    L.push(
      `link add name ${spec.name} mtu ${spec.mtu} type vxlan id ${spec.vni} local ${spec.local} dstport ${spec.port} nolearning proxy`,
      `link set dev ${spec.name} alias ${this.alias}`,
      `link set dev ${spec.name} master ${spec.master}`,
      `link set dev ${spec.name} type bridge_slave learning off`,
      `link set dev ${spec.name} up`,
    );
    await this.batch(L);
  }

  async remoteEndpoints(vxlan: string): Promise<RemoteEndpoint[]> {
    if (!(await this.present(vxlan))) return [];
    const [fdb, neigh] = await Promise.all([
      this.runner.run('bridge', ['-j', 'fdb', 'show', 'dev', vxlan]),
      this.runner.run('ip', ['-j', 'neigh', 'show', 'dev', vxlan]),
    ]);
    const vtepOf = new Map<string, string>();
    for (const f of JSON.parse(fdb.stdout || '[]') as RawFdb[]) {
      if (f.dst && f.flags?.includes('self') && f.mac !== '00:00:00:00:00:00') vtepOf.set(f.mac.toLowerCase(), f.dst);
    }
    const out: RemoteEndpoint[] = [];
    for (const n of JSON.parse(neigh.stdout || '[]') as RawNeigh[]) {
      const mac = n.lladdr?.toLowerCase();
      const vtep = mac && vtepOf.get(mac);
      if (mac && vtep) out.push({ address: n.dst, mac, vtep });
    }
    return out;
  }

  async changeRemoteEndpoints(vxlan: string, change: { add: RemoteEndpoint[]; remove: RemoteEndpoint[] }): Promise<void> {
    const { add, remove } = change;
    if (remove.length) {
      // A removal of what is already gone fails in iproute2: run them all (-force), then check.
      await this.runner.run('ip', ['-force', '-batch', '-'], { input: remove.map((r) => `neigh del ${r.address} dev ${vxlan}`).join('\n') + '\n', allowFail: true });
      const fdb = remove.flatMap((r) => [`fdb del ${r.mac} dev ${vxlan} dst ${r.vtep} self`, `fdb del ${r.mac} dev ${vxlan} master`]);
      await this.runner.run('bridge', ['-force', '-batch', '-'], { input: fdb.join('\n') + '\n', allowFail: true });
      const left = await this.remoteEndpoints(vxlan);
      const still = left.filter((l) => remove.some((r) => r.address === l.address && r.mac === l.mac && r.vtep === l.vtep));
      if (still.length) throw new TsbridgeError('KERNEL', { op: `remove remote endpoints of ${vxlan}`, detail: `${still.map((x) => x.address).join(', ')} still present` });
    }
    if (add.length) {
      // Independent of each other: the FDB entries forward, the neighbour entries answer ARP/ND.
      await Promise.all([
        this.runner.run('bridge', ['-batch', '-'], {
          input: add.flatMap((r) => [`fdb replace ${r.mac} dev ${vxlan} dst ${r.vtep} self permanent`, `fdb replace ${r.mac} dev ${vxlan} master static`]).join('\n') + '\n',
        }),
        this.batch(add.map((r) => `neigh replace ${r.address} lladdr ${r.mac} dev ${vxlan} nud permanent`)),
      ]);
    }
  }

  async attachToBridge(hostName: string, bridge: string): Promise<void> {
    await this.batch(async () => [
      `link set dev ${hostName} master ${bridge}`,
      `link set dev ${hostName} type bridge_slave hairpin on`,
      `link set dev ${hostName} up`,
    ]);
  }

  async ensureRoutes(routes: RouteSpec[]): Promise<void> {
    if (routes.length === 0) return;
    await this.batch(async () => routes.map((r) => ('unreachable' in r ? `route replace unreachable ${r.to}` : `route replace ${r.to} dev ${r.dev} scope link`)));
  }

  async deleteRoutes(routes: RouteSpec[]): Promise<void> {
    if (routes.length === 0) return;
    const L = routes.map((r) => ('unreachable' in r ? `route del unreachable ${r.to}` : `route del ${r.to} dev ${r.dev}`));
    // A route already gone (or gone with its link) fails its line: run them all, then check.
    const r = await this.runner.run('ip', ['-force', '-batch', '-'], { input: L.join('\n') + '\n', allowFail: true });
    if (r.exitCode === 0) return;
    const still: string[] = [];
    for (const route of routes) if (await this.hasRoute(route)) still.push(route.to);
    if (still.length) throw new TsbridgeError('KERNEL', { op: 'delete routes', detail: `${still.join(', ')} still present: ${r.stderr.trim()}` });
  }

  private async hasRoute(route: RouteSpec): Promise<boolean> {
    const family = route.to.includes(':') ? '-6' : '-4';
    const r = await this.runner.run('ip', [family, '-j', 'route', 'show', 'exact', route.to], { allowFail: true });
    const rows = JSON.parse(r.stdout || '[]') as { type?: string; dev?: string }[];
    return rows.some((x) => ('unreachable' in route ? x.type === 'unreachable' : x.dev === route.dev));
  }

  async deleteLinks(names: string[]): Promise<void> {
    if (names.length === 0) return;
    const here: string[] = [];
    for (const n of names) if (await this.present(n)) here.push(n);
    const L = here.map((n) => `link del dev ${n}`);
    if (L.length === 0) return;
    // Deleting one end of a veth pair removes the other, so a later line may find
    // nothing to delete: run them all, then check that every name is really gone.
    let r = await runBatch(this.runner, 'ip', L.join('\n') + '\n', { allowFail: true, lane: 'delete' });
    if (r.exitCode === 0) return;
    const left = async () => {
      const still: string[] = [];
      for (const n of here) if (await this.present(n)) still.push(n);
      return still;
    };
    let still = await left();
    if (still.length && this.runner.restartBatch) {
      // A long-lived ip may know a link by an index it no longer has (deleted and made again by
      // someone else): a new one looks the names up afresh.
      this.runner.restartBatch('ip');
      r = await runBatch(this.runner, 'ip', still.map((n) => `link del dev ${n}`).join('\n') + '\n', { allowFail: true, lane: 'delete' });
      still = await left();
    }
    if (still.length) throw new TsbridgeError('KERNEL', { op: 'delete links', detail: `${still.join(', ')} still present: ${r.stderr.trim()}` });
  }

  /**
   * One operation's lines through `ip -batch`. Without `op`: through a long-lived ip where the
   * runner has one; given how to plan them (idempotently, from what the kernel holds), a failed
   * operation is planned and run once more on a new long-lived ip — the running one keeps a
   * cache of link names, and a link someone else deleted and made again (a bridge re-created by
   * name) is not in it as it is now. With `op` (an uplink taken or given back: rare, and it must
   * stop at its first failed line): a process of its own, its failure named after `op`.
   */
  private async batch(lines: string[] | (() => Promise<string[]>), op?: string): Promise<void> {
    if (op === undefined) {
      const plan = typeof lines === 'function' ? lines : async () => lines;
      try {
        await runBatch(this.runner, 'ip', (await plan()).join('\n') + '\n');
      } catch (e) {
        if (typeof lines !== 'function' || !this.runner.restartBatch || !isTsbridgeError(e, 'KERNEL')) throw e;
        this.runner.restartBatch('ip');
        await runBatch(this.runner, 'ip', (await plan()).join('\n') + '\n');
      }
      return;
    }
    const L = typeof lines === 'function' ? await lines() : lines;
    const r = await this.runner.run('ip', ['-batch', '-'], { input: L.join('\n') + '\n', allowFail: true });
    if (r.exitCode === 0) return;
    const busy = /Device or resource busy/.test(r.stderr) ? ' (is it the parent of a macvlan/ipvlan network, or in use by another program?)' : '';
    throw new TsbridgeError('KERNEL', { op, detail: `${r.stderr.trim()}${busy}` });
  }
}
