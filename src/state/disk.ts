/**
 * state.json: the records as they are on disk, each version's, and the conversions — a document of
 * any version this tsbridge knows is read (older ones migrated), and the current version written.
 *
 *   v1  networks were all NAT bridges: their bridge options sat on the network record.
 *   v2  a network has a kind; what only its kind reads sits in `settings`. IPv4 may be absent.
 *
 * Records carry a `phase` so a crash at any point can be finished or undone at the next start.
 * Kernel object names are stored, never recomputed, so a later version that names things
 * differently still finds them.
 */
import { fail } from '../errors.js';
import type { Endpoint, KindSettings, Network, Phase, PortMapping, Subnet } from '../domain/types.js';
import type { PoolRecord } from '../ipam/types.js';
import type { State } from './types.js';

export const STATE_VERSION = 2;

export interface NetworkRecordV2 {
  id: string;
  kind: string;
  phase: Phase;
  ipv4: Subnet[];
  ipv6: Subnet[];
  enableIpv6: boolean;
  internal: boolean;
  mtu: number;
  ifacePrefix: string;
  settings: KindSettings;
}

export interface EndpointRecordV2 {
  id: string;
  networkId: string;
  phase: Phase;
  hostVeth: string;
  peerVeth: string;
  mac: string;
  ipv4: string | null;
  ipv6: string | null;
  joined: boolean;
  ports: PortMapping[];
}

export interface StateFileV2 {
  version: 2;
  networks: Record<string, NetworkRecordV2>;
  endpoints: Record<string, EndpointRecordV2>;
  pools: Record<string, PoolRecord>;
  ulaBase: string | null;
}

/** Version 1 (tsbridge before network kinds): every network a NAT bridge, its options on the record. */
export interface NetworkRecordV1 {
  id: string;
  phase: Phase;
  ipv4: Subnet[];
  ipv6: Subnet[];
  bridge: string;
  bridgeNamedByUser: boolean;
  mtu: number;
  internal: boolean;
  icc: boolean;
  masquerade: boolean;
  hostBindingIpv4: string;
  snatIpv4: string;
  inhibitIpv4: boolean;
  ifacePrefix: string;
  enableIpv6: boolean;
}

export interface StateFileV1 {
  version: 1;
  networks: Record<string, NetworkRecordV1>;
  /** Endpoint records did not change from v1 to v2. */
  endpoints: Record<string, EndpointRecordV2>;
  pools: Record<string, PoolRecord>;
  ulaBase?: string | null;
}

/** v1 → v2: each network becomes a network of kind "bridge" whose settings are its bridge options. */
export function migrateV1(doc: StateFileV1): StateFileV2 {
  const networks: Record<string, NetworkRecordV2> = {};
  for (const [key, n] of Object.entries(doc.networks)) {
    networks[key] = {
      id: n.id,
      kind: 'bridge',
      phase: n.phase,
      ipv4: n.ipv4,
      ipv6: n.ipv6,
      enableIpv6: n.enableIpv6,
      internal: n.internal,
      mtu: n.mtu,
      ifacePrefix: n.ifacePrefix,
      settings: {
        bridge: n.bridge,
        bridgeNamedByUser: n.bridgeNamedByUser,
        icc: n.icc,
        masquerade: n.masquerade,
        hostBindingIpv4: n.hostBindingIpv4,
        snatIpv4: n.snatIpv4,
        inhibitIpv4: n.inhibitIpv4,
      },
    };
  }
  return { version: 2, networks, endpoints: doc.endpoints, pools: doc.pools, ulaBase: doc.ulaBase ?? null };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const PHASES = new Set(['creating', 'ready', 'deleting']);

/** Checks the fields every reader relies on; a record that lacks one is refused, never guessed. */
function check(ok: boolean, where: string, what: string): void {
  if (!ok) fail('STATE', { detail: `${where}: ${what}; refusing to start — fix or move the file` });
}

function checkNetwork(n: unknown, key: string, where: string): NetworkRecordV2 {
  const at = `${where}: network ${key}`;
  check(isObject(n), at, 'not an object');
  const r = n as Record<string, unknown>;
  check(r.id === key, at, 'its id does not match its key');
  check(typeof r.kind === 'string' && r.kind !== '', at, 'no kind');
  check(PHASES.has(r.phase as string), at, 'no valid phase');
  check(Array.isArray(r.ipv4) && Array.isArray(r.ipv6), at, 'ipv4/ipv6 are not lists');
  check(typeof r.enableIpv6 === 'boolean' && typeof r.internal === 'boolean', at, 'enableIpv6/internal are not booleans');
  check(typeof r.mtu === 'number' && typeof r.ifacePrefix === 'string', at, 'no mtu or ifacePrefix');
  check(isObject(r.settings), at, 'settings is not an object');
  return r as unknown as NetworkRecordV2;
}

function checkEndpoint(e: unknown, key: string, where: string): EndpointRecordV2 {
  const at = `${where}: endpoint ${key}`;
  check(isObject(e), at, 'not an object');
  const r = e as Record<string, unknown>;
  check(r.id === key, at, 'its id does not match its key');
  check(typeof r.networkId === 'string', at, 'no networkId');
  check(PHASES.has(r.phase as string), at, 'no valid phase');
  check(typeof r.hostVeth === 'string' && typeof r.peerVeth === 'string' && typeof r.mac === 'string', at, 'no link names or MAC');
  check(typeof r.joined === 'boolean' && Array.isArray(r.ports), at, 'no joined flag or ports');
  return r as unknown as EndpointRecordV2;
}

/**
 * A parsed state document of any known version, as the in-memory state. `migrated` names the
 * version it was migrated from (null when it is current).
 */
export function decodeState(doc: unknown, where = 'state'): { state: State; migrated: number | null } {
  const s = doc as Record<string, unknown> | null;
  const known = isObject(s) && (s.version === 1 || s.version === 2);
  if (!known || !isObject(s.networks) || !isObject(s.endpoints) || !isObject(s.pools)) {
    return fail('STATE', {
      detail: `${where} is not a tsbridge state document of a version this tsbridge reads (1 or ${STATE_VERSION}); refusing to start — fix or move the file`,
    });
  }
  const v2 = s.version === 1 ? migrateV1(s as unknown as StateFileV1) : (s as unknown as StateFileV2);
  const networks: Record<string, Network> = {};
  for (const [key, n] of Object.entries(v2.networks)) {
    const r = checkNetwork(n, key, where);
    networks[key] = {
      id: r.id, kind: r.kind, phase: r.phase, ipv4: r.ipv4, ipv6: r.ipv6, enableIpv6: r.enableIpv6,
      internal: r.internal, mtu: r.mtu, ifacePrefix: r.ifacePrefix, settings: r.settings,
    };
  }
  const endpoints: Record<string, Endpoint> = {};
  for (const [key, e] of Object.entries(v2.endpoints)) {
    const r = checkEndpoint(e, key, where);
    endpoints[key] = {
      id: r.id, networkId: r.networkId, phase: r.phase, hostVeth: r.hostVeth, peerVeth: r.peerVeth, mac: r.mac,
      ipv4: r.ipv4 ?? null, ipv6: r.ipv6 ?? null, joined: r.joined, ports: r.ports,
    };
  }
  return {
    state: { networks, endpoints, pools: v2.pools, ulaBase: typeof v2.ulaBase === 'string' ? v2.ulaBase : null },
    migrated: s.version === STATE_VERSION ? null : (s.version as number),
  };
}

/** The in-memory state as the current version's document. */
export function encodeState(s: State): StateFileV2 {
  const networks: Record<string, NetworkRecordV2> = {};
  for (const [key, n] of Object.entries(s.networks)) {
    networks[key] = {
      id: n.id, kind: n.kind, phase: n.phase, ipv4: n.ipv4, ipv6: n.ipv6, enableIpv6: n.enableIpv6,
      internal: n.internal, mtu: n.mtu, ifacePrefix: n.ifacePrefix, settings: n.settings,
    };
  }
  const endpoints: Record<string, EndpointRecordV2> = {};
  for (const [key, e] of Object.entries(s.endpoints)) {
    endpoints[key] = {
      id: e.id, networkId: e.networkId, phase: e.phase, hostVeth: e.hostVeth, peerVeth: e.peerVeth, mac: e.mac,
      ipv4: e.ipv4, ipv6: e.ipv6, joined: e.joined, ports: e.ports,
    };
  }
  return { version: STATE_VERSION, networks, endpoints, pools: s.pools, ulaBase: s.ulaBase };
}
