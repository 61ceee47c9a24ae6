/**
 * Where tsbridge keeps its cluster state in etcd, and the records stored there. All keys live under
 * one prefix (TSBRIDGE_ETCD_PREFIX, default `/tsbridge/`), then a schema version:
 *
 *   v1/hosts/<hostId>                        HostRecord     on the host's lease
 *   v1/vnis/<vni>                            overlay name   (which VNIs are taken)
 *   v1/overlays/<name>/config                OverlayConfig  (subnet, VNI, gateway: one per overlay)
 *   v1/overlays/<name>/members/<hostId>      MemberRecord   on the host's lease
 *   v1/overlays/<name>/addresses/<address>   AddressRecord  on the owning host's lease
 *
 * Keys on a lease disappear when the host's lease expires: that is how a dead host leaves.
 * Records are JSON; a record that does not parse is treated as absent (and logged by the caller),
 * never trusted. Do not change these names: hosts of different versions share them.
 */

export const SCHEMA = 'v1';

/** An overlay name: what `-o io.tsbridge.overlay=NAME` gives. */
export const OVERLAY_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
/** A host id: 16 hex digits, made once per host and kept in its state directory. */
export const HOST_ID = /^[0-9a-f]{16}$/;

export interface HostRecord {
  /** The host's underlay address: where its VXLAN packets come from and go to. */
  vtep: string;
  /** Its hostname, for people reading `tsbridge status`. */
  hostname: string;
  /** When it registered (ISO time). */
  since: string;
}

export interface OverlayConfig {
  vni: number;
  /** Canonical IPv4 subnet, e.g. 10.20.0.0/16. */
  subnet: string;
  /** The anycast gateway: the same address and MAC on every host's bridge. */
  gateway: string;
  gatewayMac: string;
}

export interface MemberRecord {
  vtep: string;
}

export interface AddressRecord {
  host: string;
  /** The container's MAC once its endpoint exists ('' while only the address is reserved). */
  mac: string;
  /** Docker's endpoint ID ('' while only reserved). */
  endpoint: string;
}

export type ParsedKey =
  | { kind: 'host'; host: string }
  | { kind: 'vni'; vni: number }
  | { kind: 'config'; overlay: string }
  | { kind: 'member'; overlay: string; host: string }
  | { kind: 'address'; overlay: string; address: string };

export class Keys {
  readonly root: string;

  constructor(prefix = '/tsbridge/') {
    if (!prefix.endsWith('/')) prefix += '/';
    this.root = `${prefix}${SCHEMA}/`;
  }

  hosts(): string {
    return `${this.root}hosts/`;
  }
  host(id: string): string {
    return `${this.hosts()}${id}`;
  }
  vnis(): string {
    return `${this.root}vnis/`;
  }
  vni(vni: number): string {
    return `${this.vnis()}${vni}`;
  }
  overlays(): string {
    return `${this.root}overlays/`;
  }
  overlay(name: string): string {
    return `${this.overlays()}${name}/`;
  }
  config(name: string): string {
    return `${this.overlay(name)}config`;
  }
  members(name: string): string {
    return `${this.overlay(name)}members/`;
  }
  member(name: string, host: string): string {
    return `${this.members(name)}${host}`;
  }
  addresses(name: string): string {
    return `${this.overlay(name)}addresses/`;
  }
  address(name: string, address: string): string {
    return `${this.addresses(name)}${address}`;
  }

  /** What a key under the root is; undefined for anything else. */
  parse(key: string): ParsedKey | undefined {
    if (!key.startsWith(this.root)) return undefined;
    const parts = key.slice(this.root.length).split('/');
    if (parts[0] === 'hosts' && parts.length === 2 && HOST_ID.test(parts[1]!)) return { kind: 'host', host: parts[1]! };
    if (parts[0] === 'vnis' && parts.length === 2 && /^\d+$/.test(parts[1]!)) return { kind: 'vni', vni: Number(parts[1]) };
    if (parts[0] !== 'overlays' || !OVERLAY_NAME.test(parts[1] ?? '')) return undefined;
    const overlay = parts[1]!;
    if (parts.length === 3 && parts[2] === 'config') return { kind: 'config', overlay };
    if (parts.length === 4 && parts[2] === 'members' && HOST_ID.test(parts[3]!)) return { kind: 'member', overlay, host: parts[3]! };
    if (parts.length === 4 && parts[2] === 'addresses' && parts[3]) return { kind: 'address', overlay, address: parts[3] };
    return undefined;
  }
}

// ---- records ------------------------------------------------------------------------------

function parseJson(value: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(value) as unknown;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const isString = (v: unknown): v is string => typeof v === 'string';
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9a-f:]+$/i;

/** An underlay address as records carry it (IPv4 or IPv6, no prefix length). */
export function isUnderlayAddress(s: unknown): s is string {
  return isString(s) && (IPV4.test(s) || (s.includes(':') && IPV6.test(s)));
}

export function isMac(s: unknown): s is string {
  return isString(s) && MAC.test(s);
}

export function parseHost(value: string): HostRecord | undefined {
  const o = parseJson(value);
  if (!o || !isUnderlayAddress(o.vtep) || !isString(o.hostname) || !isString(o.since)) return undefined;
  return { vtep: o.vtep, hostname: o.hostname, since: o.since };
}

export function parseConfig(value: string): OverlayConfig | undefined {
  const o = parseJson(value);
  if (!o || !Number.isInteger(o.vni) || (o.vni as number) < 1 || (o.vni as number) > 0xffffff) return undefined;
  if (!isString(o.subnet) || !IPV4.test(o.subnet.split('/')[0] ?? '') || !isString(o.gateway) || !IPV4.test(o.gateway) || !isMac(o.gatewayMac)) return undefined;
  return { vni: o.vni as number, subnet: o.subnet, gateway: o.gateway, gatewayMac: o.gatewayMac };
}

export function parseMember(value: string): MemberRecord | undefined {
  const o = parseJson(value);
  return o && isUnderlayAddress(o.vtep) ? { vtep: o.vtep } : undefined;
}

export function parseAddress(value: string): AddressRecord | undefined {
  const o = parseJson(value);
  if (!o || !isString(o.host) || !HOST_ID.test(o.host) || !isString(o.mac) || (o.mac !== '' && !isMac(o.mac)) || !isString(o.endpoint)) return undefined;
  return { host: o.host, mac: o.mac, endpoint: o.endpoint };
}

/** Records are written with their fields in one order, so equal records are equal strings. */
export function encodeHost(r: HostRecord): string {
  return JSON.stringify({ vtep: r.vtep, hostname: r.hostname, since: r.since });
}
export function encodeConfig(c: OverlayConfig): string {
  return JSON.stringify({ vni: c.vni, subnet: c.subnet, gateway: c.gateway, gatewayMac: c.gatewayMac });
}
export function encodeMember(m: MemberRecord): string {
  return JSON.stringify({ vtep: m.vtep });
}
export function encodeAddress(a: AddressRecord): string {
  return JSON.stringify({ host: a.host, mac: a.mac, endpoint: a.endpoint });
}
