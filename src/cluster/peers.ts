/**
 * From the cluster's keys to what this host must program — pure functions of a snapshot (the
 * mirror's copy), so the datapath is a diff between two of them:
 * - the VTEPs allowed to send VXLAN here: every registered host but this one;
 * - for each overlay, every remote endpoint: its address, MAC and the VTEP of the host holding it
 *   (a static FDB entry and a neighbour entry each). Only endpoints whose host is registered count:
 *   a host whose lease is gone takes its endpoints with it.
 */
import { parseAddress, parseConfig, parseHost, parseMember, type HostRecord, type Keys, type OverlayConfig } from './keys.js';
import type { KeyValue } from './store.js';

export interface Peer {
  address: string;
  mac: string;
  /** Underlay address of the host holding it. */
  vtep: string;
  host: string;
}

function hostsOf(kvs: Iterable<KeyValue>, keys: Keys): Map<string, HostRecord> {
  const hosts = new Map<string, HostRecord>();
  for (const kv of kvs) {
    const k = keys.parse(kv.key);
    const rec = k?.kind === 'host' ? parseHost(kv.value) : undefined;
    if (k?.kind === 'host' && rec) hosts.set(k.host, rec);
  }
  return hosts;
}

/** Underlay addresses of every registered host but `me`, sorted. */
export function remoteVteps(kvs: Iterable<KeyValue>, keys: Keys, me: string): string[] {
  const out = new Set<string>();
  for (const [id, h] of hostsOf(kvs, keys)) if (id !== me) out.add(h.vtep);
  return [...out].sort();
}

/**
 * Underlay addresses allowed to send into an overlay: its members' (registered hosts but `me`),
 * sorted. A host whose lease is gone is no member any more.
 */
export function memberVteps(kvs: Iterable<KeyValue>, keys: Keys, overlay: string, me: string): string[] {
  const all = [...kvs];
  const hosts = hostsOf(all, keys);
  const out = new Set<string>();
  for (const kv of all) {
    const k = keys.parse(kv.key);
    if (k?.kind !== 'member' || k.overlay !== overlay || k.host === me) continue;
    const h = hosts.get(k.host);
    if (h) out.add(h.vtep);
  }
  return [...out].sort();
}

/** The remote endpoints of an overlay (with a MAC, on a registered host other than `me`), by address. */
export function remotePeers(kvs: Iterable<KeyValue>, keys: Keys, overlay: string, me: string): Peer[] {
  const all = [...kvs];
  const hosts = hostsOf(all, keys);
  const peers: Peer[] = [];
  for (const kv of all) {
    const k = keys.parse(kv.key);
    if (k?.kind !== 'address' || k.overlay !== overlay) continue;
    const rec = parseAddress(kv.value);
    if (!rec || !rec.mac || rec.host === me) continue;
    const host = hosts.get(rec.host);
    if (!host) continue;
    peers.push({ address: k.address, mac: rec.mac, vtep: host.vtep, host: rec.host });
  }
  return peers.sort((a, b) => compareAddresses(a.address, b.address));
}

export interface PeerDiff {
  add: Peer[];
  remove: Peer[];
}

/** What changes from `have` to `want` (a peer whose MAC or VTEP moved is removed and added). */
export function diffPeers(have: readonly Peer[], want: readonly Peer[]): PeerDiff {
  const id = (p: Peer) => `${p.address} ${p.mac} ${p.vtep}`;
  const h = new Set(have.map(id));
  const w = new Set(want.map(id));
  return { add: want.filter((p) => !h.has(id(p))), remove: have.filter((p) => !w.has(id(p))) };
}

export interface OverlayView {
  name: string;
  config: OverlayConfig | undefined;
  hosts: { id: string; hostname: string; vtep: string; registered: boolean; member: boolean; endpoints: number }[];
  endpoints: { address: string; host: string; mac: string; endpoint: string }[];
}

/** What `tsbridge status` shows of an overlay: its config, its hosts, its endpoints. */
export function overlayView(kvs: Iterable<KeyValue>, keys: Keys, name: string): OverlayView {
  const all = [...kvs];
  const hosts = hostsOf(all, keys);
  let config: OverlayConfig | undefined;
  const members = new Map<string, string>();
  const endpoints: OverlayView['endpoints'] = [];
  for (const kv of all) {
    const k = keys.parse(kv.key);
    if (!k || !('overlay' in k) || k.overlay !== name) continue;
    if (k.kind === 'config') config = parseConfig(kv.value);
    if (k.kind === 'member') {
      const m = parseMember(kv.value);
      if (m) members.set(k.host, m.vtep);
    }
    if (k.kind === 'address') {
      const a = parseAddress(kv.value);
      if (a) endpoints.push({ address: k.address, host: a.host, mac: a.mac, endpoint: a.endpoint });
    }
  }
  endpoints.sort((a, b) => compareAddresses(a.address, b.address));
  const ids = new Set([...members.keys(), ...endpoints.map((e) => e.host)]);
  return {
    name,
    config,
    hosts: [...ids].sort().map((id) => ({
      id,
      hostname: hosts.get(id)?.hostname ?? '',
      vtep: hosts.get(id)?.vtep ?? members.get(id) ?? '',
      registered: hosts.has(id),
      member: members.has(id),
      endpoints: endpoints.filter((e) => e.host === id).length,
    })),
    endpoints,
  };
}

/** Dotted quads in numeric order (anything else after them, as text). */
function compareAddresses(a: string, b: string): number {
  const n = (s: string) => (/^\d+\.\d+\.\d+\.\d+$/.test(s) ? s.split('.').reduce((acc, x) => acc * 256 + Number(x), 0) : Number.MAX_SAFE_INTEGER);
  return n(a) - n(b) || (a < b ? -1 : a > b ? 1 : 0);
}
