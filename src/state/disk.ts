/**
 * state.json: the records as they are on disk, each version's, and the conversions — a document of
 * any version this tsbridge knows is read (older ones migrated), and the current version written.
 *
 *   v1  networks were all NAT bridges: their bridge options sat on the network record.
 *   v2  a network has a kind; what only its kind reads sits in `settings`. IPv4 may be absent.
 *       Optional `adopted`: what its kind took over from the host (an uplink's addresses), kept
 *       so it can be given back; a reader that knows the kind knows the field.
 *   v3  the records of v2, as a snapshot (`seq`: the last journal entry it holds) followed by an
 *       append-only journal, state.journal (src/state/journal.ts): a call writes only what it
 *       changed. A v2 tsbridge refuses a v3 file rather than miss what the journal holds.
 *
 * Records carry a `phase` so a crash at any point can be finished or undone at the next start.
 * Kernel object names are stored, never recomputed, so a later version that names things
 * differently still finds them.
 */
import { fail } from '../errors.js';
import type { Endpoint, KindSettings, Network, Phase, PortMapping, Subnet } from '../domain/types.js';
import type { PoolRecord } from '../ipam/types.js';
import type { State } from './types.js';

export const STATE_VERSION = 3;

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
  /** Added within version 2 (optional, older v2 files lack it): when it was created, ms since the epoch. */
  created?: number;
  /** What its kind took over from the host (Network.adopted); absent when nothing. */
  adopted?: KindSettings;
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
  /** Added within version 2 (optional): when it was created, ms since the epoch. */
  created?: number;
}

export interface StateFileV2 {
  version: 2;
  networks: Record<string, NetworkRecordV2>;
  endpoints: Record<string, EndpointRecordV2>;
  pools: Record<string, PoolRecord>;
  ulaBase: string | null;
}

/** Version 3: the records of version 2, and the journal entry the snapshot was taken at. */
export interface StateFileV3 {
  version: 3;
  /** The last journal entry this snapshot holds: entries up to it are skipped when the journal is replayed. */
  seq: number;
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
  check(r.adopted === undefined || isObject(r.adopted), at, 'adopted is not an object');
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

/** Checks a document's version and shape, and brings it to the current version's records (older ones migrated). */
export function upgradeDoc(doc: unknown, where = 'state'): { doc: StateFileV3; migrated: number | null } {
  const s = doc as Record<string, unknown> | null;
  const known = isObject(s) && (s.version === 1 || s.version === 2 || s.version === 3);
  if (!known || !isObject(s.networks) || !isObject(s.endpoints) || !isObject(s.pools)) {
    return fail('STATE', {
      detail: `${where} is not a tsbridge state document of a version this tsbridge reads (1 to ${STATE_VERSION}); refusing to start — fix or move the file`,
    });
  }
  if (s.version === 3) {
    check(Number.isSafeInteger(s.seq) && (s.seq as number) >= 0, where, 'no valid seq');
    return { doc: s as unknown as StateFileV3, migrated: null };
  }
  const v2 = s.version === 1 ? migrateV1(s as unknown as StateFileV1) : (s as unknown as StateFileV2);
  return { doc: { ...v2, version: 3, seq: 0 }, migrated: s.version as number };
}

/**
 * A parsed state document of any known version, as the in-memory state. `migrated` names the
 * version it was migrated from (null when it is current).
 */
export function decodeState(doc: unknown, where = 'state'): { state: State; migrated: number | null } {
  const { doc: v3, migrated } = upgradeDoc(doc, where);
  return { state: decodeRecords(v3, where), migrated };
}

/** The in-memory state a current-version document holds; every record checked. */
export function decodeRecords(v2: StateFileV3, where = 'state'): State {
  const networks: Record<string, Network> = {};
  for (const [key, n] of Object.entries(v2.networks)) {
    const r = checkNetwork(n, key, where);
    networks[key] = {
      id: r.id, kind: r.kind, phase: r.phase, ipv4: r.ipv4, ipv6: r.ipv6, enableIpv6: r.enableIpv6,
      internal: r.internal, mtu: r.mtu, ifacePrefix: r.ifacePrefix, settings: r.settings,
      ...createdOf(r),
      ...(r.adopted ? { adopted: r.adopted } : {}),
    };
  }
  const endpoints: Record<string, Endpoint> = {};
  for (const [key, e] of Object.entries(v2.endpoints)) {
    const r = checkEndpoint(e, key, where);
    endpoints[key] = {
      id: r.id, networkId: r.networkId, phase: r.phase, hostVeth: r.hostVeth, peerVeth: r.peerVeth, mac: r.mac,
      ipv4: r.ipv4 ?? null, ipv6: r.ipv6 ?? null, joined: r.joined, ports: r.ports,
      ...createdOf(r),
    };
  }
  return { networks, endpoints, pools: v2.pools, ulaBase: typeof v2.ulaBase === 'string' ? v2.ulaBase : null };
}

/** A network as its record on disk. */
export function encodeNetwork(n: Network): NetworkRecordV2 {
  return {
    id: n.id, kind: n.kind, phase: n.phase, ipv4: n.ipv4, ipv6: n.ipv6, enableIpv6: n.enableIpv6,
    internal: n.internal, mtu: n.mtu, ifacePrefix: n.ifacePrefix, settings: n.settings,
    ...createdOf(n),
    ...(n.adopted ? { adopted: n.adopted } : {}),
  };
}

/** `created` when the record has a usable one (a number), nothing otherwise. */
function createdOf(r: { created?: unknown }): { created?: number } {
  return typeof r.created === 'number' && Number.isFinite(r.created) ? { created: r.created } : {};
}

/** An endpoint as its record on disk. */
export function encodeEndpoint(e: Endpoint): EndpointRecordV2 {
  return {
    id: e.id, networkId: e.networkId, phase: e.phase, hostVeth: e.hostVeth, peerVeth: e.peerVeth, mac: e.mac,
    ipv4: e.ipv4, ipv6: e.ipv6, joined: e.joined, ports: e.ports,
    ...createdOf(e),
  };
}

/** The in-memory state as the current version's document; `seq`: the last journal entry it holds. */
export function encodeState(s: State, seq = 0): StateFileV3 {
  const networks: Record<string, NetworkRecordV2> = {};
  for (const [key, n] of Object.entries(s.networks)) networks[key] = encodeNetwork(n);
  const endpoints: Record<string, EndpointRecordV2> = {};
  for (const [key, e] of Object.entries(s.endpoints)) endpoints[key] = encodeEndpoint(e);
  return { version: STATE_VERSION, seq, networks, endpoints, pools: s.pools, ulaBase: s.ulaBase };
}
