/**
 * Host-port reservation: pure. Decides which host port each binding gets and
 * refuses one that tsbridge already published or that a host process listens on.
 */
import { fail } from '../errors.js';
import type { Listener, PortMapping, PortRequest, Proto } from '../domain/types.js';

export type { Listener };

export interface PortContext {
  /** Mappings already published by tsbridge (other endpoints). */
  taken: { mapping: PortMapping; owner: string }[];
  /** Sockets listening on the host. */
  listening: Listener[];
  /** Range for HostPort 0 (the kernel's ip_local_port_range). */
  ephemeral: [number, number];
  /** The network's com.docker.network.bridge.host_binding_ipv4, '' = none. */
  defaultHostIp: string;
  /** Address families the endpoint has (default both): a host address of a family it lacks is refused. */
  families?: { v4: boolean; v6: boolean };
  /**
   * Families published on the container's own address (Docker's routed gateway mode): a request
   * takes no host port there, and becomes a mapping with host port 0 and the family's wildcard
   * address ('0.0.0.0' / '::') for each such family the endpoint has.
   */
  routed?: { v4: boolean; v6: boolean };
}

function fam(ip: string): 0 | 4 | 6 {
  if (ip === '') return 0;
  return ip.includes(':') ? 6 : 4;
}

const WILDCARD = new Set(['', '0.0.0.0', '::']);

/** An IPv4-mapped IPv6 address (a dual-stack socket bound to an IPv4 address) as the IPv4 address. */
function unmapped(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice('::ffff:'.length) : ip;
}

/** Do two host addresses overlap? '' is every address; 0.0.0.0 / :: every address of a family. */
export function hostIpsOverlap(a: string, b: string): boolean {
  a = unmapped(a);
  b = unmapped(b);
  if (a === '' || b === '') return true;
  if (fam(a) !== fam(b)) return false;
  return a === b || WILDCARD.has(a) || WILDCARD.has(b);
}

/**
 * Host addresses kernel NAT cannot serve, refused rather than published to no effect:
 * IPv6 loopback (IPv6 has no route_localnet: the kernel drops a reply to ::1 that arrives on
 * a bridge), and a specific address of a family the container has no address of (no NAT64).
 * The wildcards 0.0.0.0 and :: are accepted whatever the container has: they publish in the
 * families it has (Docker may send both for one `-p`).
 */
function checkHostIp(hostIp: string, families: { v4: boolean; v6: boolean }): void {
  if (hostIp === '::1') { // host addresses arrive canonical (src/protocol/validate.ts)
    fail('BAD_ADDRESS', {
      value: hostIp,
      detail: 'IPv6 loopback cannot be published by kernel NAT (IPv6 has no route_localnet); bind to 127.0.0.1 or to an address of the host',
    });
  }
  if (WILDCARD.has(hostIp)) return;
  const f = fam(hostIp);
  if (f === 4 && !families.v4) fail('BAD_ADDRESS', { value: hostIp, detail: 'the container has no IPv4 address on this network to forward it to' });
  if (f === 6 && !families.v6) {
    fail('BAD_ADDRESS', { value: hostIp, detail: 'the container has no IPv6 address on this network to forward it to (create the network with --ipv6)' });
  }
}

/**
 * Most port bindings one request may carry. Docker sends one binding per host port (and, from
 * Docker 28, one per address family for a binding without a host address), so this allows
 * `-p 1-5000:1-5000` on both families. Every mapping is kept in the state document, which is
 * copied and rewritten on every later call of any network: a request of tens of thousands of
 * bindings would slow every Docker call on the host from then on (docs/ports.md, *Limits*).
 */
export const MAX_PORT_BINDINGS = 10_000;

/** The first of several matches in the order of the original list (its index), per port. */
interface Slot {
  /** Any entry at all. */
  all: number;
  /** Entries on every address (''). */
  any: number;
  /** Entries of each family (its wildcard or a specific address). */
  fam4: number;
  fam6: number;
  /** Entries on a family's wildcard (0.0.0.0, ::). */
  wild4: number;
  wild6: number;
  /** Entries on one address. */
  specific: Map<string, number> | null;
}

const NONE = Number.POSITIVE_INFINITY;

/**
 * Entries (published mappings, listeners, this request's own choices) by protocol and port,
 * answering "which entry, first in list order, overlaps this host address on this port" in
 * constant time.
 */
class PortIndex {
  private readonly slots: Record<Proto, Map<number, Slot>> = { tcp: new Map(), udp: new Map(), sctp: new Map() };

  add(proto: Proto, ip: string, port: number, index: number): void {
    const bucket = this.slots[proto];
    let s = bucket.get(port);
    if (!s) {
      s = { all: NONE, any: NONE, fam4: NONE, fam6: NONE, wild4: NONE, wild6: NONE, specific: null };
      bucket.set(port, s);
    }
    const a = unmapped(ip);
    s.all = Math.min(s.all, index);
    const f = fam(a);
    if (f === 0) s.any = Math.min(s.any, index);
    else if (f === 4) s.fam4 = Math.min(s.fam4, index);
    else s.fam6 = Math.min(s.fam6, index);
    if (a === '0.0.0.0') s.wild4 = Math.min(s.wild4, index);
    else if (a === '::') s.wild6 = Math.min(s.wild6, index);
    else if (f !== 0) {
      s.specific ??= new Map();
      s.specific.set(a, Math.min(s.specific.get(a) ?? NONE, index));
    }
  }

  /** Index of the first entry on `port` whose address overlaps `ip` (see hostIpsOverlap), or NONE. */
  first(proto: Proto, ip: string, port: number): number {
    const s = this.slots[proto].get(port);
    if (!s) return NONE;
    const a = unmapped(ip);
    const f = fam(a);
    if (f === 0) return s.all;
    if (WILDCARD.has(a)) return Math.min(s.any, f === 4 ? s.fam4 : s.fam6);
    return Math.min(s.any, f === 4 ? s.wild4 : s.wild6, s.specific?.get(a) ?? NONE);
  }

  /** Does an entry on `port` overlap every specific address of family f (it is on all addresses, or on f's wildcard)? */
  blocksFamily(proto: Proto, f: 4 | 6, port: number): boolean {
    const s = this.slots[proto].get(port);
    return !!s && (s.any !== NONE || (f === 4 ? s.wild4 : s.wild6) !== NONE);
  }
}

/**
 * "The next port at or above p that is not blocked", for one kind of search, with path
 * compression: a port found blocked is never looked at again by the same kind of search.
 * Valid because nothing is unblocked while a request is allocated.
 */
class NextFree {
  private readonly parent = new Map<number, number>();

  constructor(private readonly blocked: (port: number) => boolean) {}

  find(port: number): number {
    const path: number[] = [];
    let p = port;
    for (;;) {
      const up = this.parent.get(p);
      if (up !== undefined) {
        path.push(p);
        p = up;
      } else if (p <= 65535 && this.blocked(p)) {
        path.push(p);
        p = p + 1;
      } else break;
    }
    for (const x of path) this.parent.set(x, p);
    return p;
  }
}

/**
 * Decides the host port of each binding, in order. Linear in the number of bindings, published
 * mappings and listeners (plus, for searches, the ports of the ranges searched, each passed once):
 * entries are indexed by protocol and port, and the search for a free port in a range (HostPort 0,
 * `-p 8000-8010:80`) never walks the same blocked port twice for the same host address.
 */
export function allocatePorts(reqs: PortRequest[], ctx: PortContext): PortMapping[] {
  if (reqs.length > MAX_PORT_BINDINGS) fail('TOO_MANY_PORTS', { count: reqs.length, max: MAX_PORT_BINDINGS });
  const taken = new PortIndex();
  ctx.taken.forEach((t, i) => taken.add(t.mapping.proto, t.mapping.hostIp, t.mapping.hostPort, i));
  const listening = new PortIndex();
  ctx.listening.forEach((l, i) => listening.add(l.proto, l.ip, l.port, i));
  const mine = new PortIndex();

  /** Why a port is busy for this address, as the error says it; null when free. */
  const busy = (proto: Proto, ip: string, port: number): string | null => {
    const t = taken.first(proto, ip, port);
    if (t !== NONE) return ` (published by ${ctx.taken[t]!.owner})`;
    if (mine.first(proto, ip, port) !== NONE) return ' (twice in this request)';
    if (listening.first(proto, ip, port) !== NONE) return ' (a host process listens on it)';
    return null;
  };

  // One search per protocol and host address: a port found busy for an address stays busy for
  // it while this request is allocated (entries are only ever added).
  const searches = new Map<string, NextFree>();
  const searchFor = (proto: Proto, ip: string): NextFree => {
    const key = `${proto} ${unmapped(ip)}`;
    let s = searches.get(key);
    if (!s) {
      s = new NextFree((p) => busy(proto, ip, p) !== null);
      searches.set(key, s);
    }
    return s;
  };
  // Shared by every specific address of a family: the ports busy for all of them (an entry on
  // all addresses or on the family's wildcard), so that many addresses searching one crowded
  // range do not each walk it.
  const familySearches = new Map<string, NextFree>();
  const familyWide = (proto: Proto, f: 4 | 6): NextFree => {
    const key = `${proto} ${f}`;
    let s = familySearches.get(key);
    if (!s) {
      s = new NextFree((p) => taken.blocksFamily(proto, f, p) || mine.blocksFamily(proto, f, p) || listening.blocksFamily(proto, f, p));
      familySearches.set(key, s);
    }
    return s;
  };

  const out: PortMapping[] = [];
  const families = ctx.families ?? { v4: true, v6: true };
  const routed = ctx.routed ?? { v4: false, v6: false };
  const isRouted = (f: 4 | 6) => (f === 4 ? routed.v4 : routed.v6);
  const has = (f: 4 | 6) => (f === 4 ? families.v4 : families.v6);
  /** Routed mappings made so far (proto, family, container port): each once. */
  const direct = new Set<string>();
  for (const r of reqs) {
    let hostIp = r.hostIp === '' ? ctx.defaultHostIp : r.hostIp;
    checkHostIp(hostIp, families);
    // The families this request publishes in: routed ones open the container port alone.
    const fams: (4 | 6)[] = hostIp === '' ? [4, 6] : hostIp === '0.0.0.0' ? [4] : hostIp === '::' ? [6] : [fam(hostIp) as 4 | 6];
    const routedFams = fams.filter(isRouted);
    if (routedFams.length > 0 && !WILDCARD.has(hostIp)) {
      // Docker ignores the address then (and logs it): a port meant for one host address would
      // open on the container's address to every host that routes to it.
      fail('BAD_ADDRESS', {
        value: hostIp,
        detail: 'the network publishes this family in routed mode, on the container\'s own address: a host address has no effect there (use 0.0.0.0 or ::, or none)',
      });
    }
    for (const f of routedFams.filter(has)) {
      const key = `${r.proto} ${f} ${r.containerPort}`;
      if (direct.has(key)) continue;
      direct.add(key);
      out.push({ proto: r.proto, hostIp: f === 4 ? '0.0.0.0' : '::', hostPort: 0, containerPort: r.containerPort });
    }
    const nat = fams.filter((f) => !isRouted(f));
    // Nothing left to publish on a host port: no NAT family, or (beside a routed one) none the container has.
    if (nat.length === 0 || (routedFams.length > 0 && !nat.some(has))) continue;
    if (nat.length < fams.length) hostIp = nat[0] === 4 ? '0.0.0.0' : '::'; // the other family is routed
    let lo: number;
    let hi: number;
    if (r.hostPort === 0) [lo, hi] = ctx.ephemeral;
    else [lo, hi] = [r.hostPort, r.hostPortEnd > r.hostPort ? r.hostPortEnd : r.hostPort];
    let chosen = 0;
    if (lo === hi) {
      const why = busy(r.proto, hostIp, lo);
      if (why !== null) {
        fail('PORT_IN_USE', { hostIp: hostIp.includes(':') ? `[${hostIp}]` : hostIp || '0.0.0.0', port: lo, proto: r.proto, owner: why });
      }
      chosen = lo;
    } else {
      const a = unmapped(hostIp);
      const f = fam(a);
      const from = f !== 0 && !WILDCARD.has(a) ? familyWide(r.proto, f).find(lo) : lo;
      const p = searchFor(r.proto, hostIp).find(from);
      if (p > hi) fail('NO_FREE_PORT', { proto: r.proto, range: `${lo}-${hi}` });
      chosen = p;
    }
    mine.add(r.proto, hostIp, chosen, out.length);
    out.push({ proto: r.proto, hostIp, hostPort: chosen, containerPort: r.containerPort });
  }
  return out;
}

