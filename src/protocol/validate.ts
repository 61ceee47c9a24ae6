/**
 * Validation at the edge: every value that can reach a command is checked
 * here and turned into a domain value, or refused with a catalogue error.
 */
import { fail } from '../errors.js';
import { canonicalAddress, parseAddress, parseInterfaceCidr, formatAddress } from '../net/addr.js';
import type { Proto } from '../state/types.js';

export function requireObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) fail('BAD_REQUEST', { detail: 'body must be a JSON object' });
  return body as Record<string, unknown>;
}

/** Docker IDs are 64 lower-case hex digits; accept any hex of 12..64 so IDs stay safe inside names. */
export function dockerId(v: unknown, field: string): string {
  if (typeof v !== 'string' || !/^[0-9a-f]{12,64}$/.test(v)) {
    fail('BAD_REQUEST', { detail: `${field} must be a hex ID, got ${JSON.stringify(v)}` });
  }
  return v;
}

export function optionalString(v: unknown, field: string): string {
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') fail('BAD_REQUEST', { detail: `${field} must be a string` });
  return v;
}

/** Linux interface names: 1..15 characters, letters, digits, '_' and '-' only. */
export function interfaceName(v: string, option: string): string {
  if (!/^[A-Za-z0-9_-]{1,15}$/.test(v)) {
    fail('BAD_OPTION', { option, value: v, detail: 'an interface name is 1 to 15 letters, digits, "_" or "-"' });
  }
  return v;
}

/**
 * Names the kernel or tsbridge give a meaning of their own, refused for a link tsbridge makes:
 * `all` and `default` are the sysctl directories net.ipv4.conf.{all,default} (a bridge named
 * `all` would turn route_localnet on for every interface), `lo` the loopback.
 */
const RESERVED_LINK_NAMES = new Set(['all', 'default', 'lo']);

/**
 * The name of a link tsbridge makes at the user's request (a bridge): an interface name, not a
 * reserved one, not starting with `-` (read as an option by `ip`), and not of the forms tsbridge
 * gives its own links (`tsb-…`, `tsv…`, `tsc…`: a later network or endpoint would be given the
 * same name, and start-up takes such names for its own leftovers). An existing interface of that
 * name is refused when the network is created (BRIDGE_NAME_IN_USE).
 */
export function ownLinkName(v: string, option: string, generatedPrefixes: readonly string[]): string {
  if (v.startsWith('-')) fail('BAD_OPTION', { option, value: v, detail: 'an interface name must not start with "-"' });
  interfaceName(v, option);
  if (RESERVED_LINK_NAMES.has(v)) fail('BAD_OPTION', { option, value: v, detail: `"${v}" is reserved (${v === 'lo' ? 'the loopback interface' : `net.ipv4.conf.${v} is not an interface's sysctls`})` });
  const own = generatedPrefixes.find((p) => v.startsWith(p));
  if (own) fail('BAD_OPTION', { option, value: v, detail: `names starting with "${own}" are those tsbridge gives its own links` });
  return v;
}

/** Parses like Go's strconv.ParseBool, which is what Docker users are used to. */
export function goBool(v: unknown, option: string): boolean {
  if (typeof v === 'boolean') return v;
  const s = String(v);
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(s)) return false;
  return fail('BAD_OPTION', { option, value: s, detail: 'expected a boolean (true/false/1/0)' });
}

export function mtu(v: string, option: string): number {
  if (!/^\d{2,5}$/.test(v) || Number(v) < 68 || Number(v) > 65535) {
    fail('BAD_OPTION', { option, value: v, detail: 'MTU must be a whole number from 68 to 65535' });
  }
  return Number(v);
}

export function ipv4Address(v: string, option: string): string {
  try {
    const a = parseAddress(v);
    if (a.family !== 4) throw new Error('not IPv4');
    return formatAddress(4, a.value);
  } catch {
    return fail('BAD_OPTION', { option, value: v, detail: 'expected an IPv4 address' });
  }
}

/** "10.0.0.2/24" (an address with the pool's prefix length) of the given family, canonical. */
export function interfaceCidr(v: string, family: 4 | 6, field: string): string {
  let p;
  try {
    p = parseInterfaceCidr(v);
  } catch {
    return fail('BAD_REQUEST', { detail: `${field} must be an address with prefix length, got "${v}"` });
  }
  if (p.family !== family) fail('BAD_REQUEST', { detail: `${field} must be an IPv${family} address, got "${v}"` });
  return `${formatAddress(family, p.address)}/${p.length}`;
}

export function macAddress(v: string, field: string): string {
  if (!/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(v)) fail('BAD_REQUEST', { detail: `${field} must be a MAC address, got "${v}"` });
  return v.toLowerCase();
}

export function hostAddress(v: string, field: string): string {
  if (v === '') return '';
  try {
    return canonicalAddress(v);
  } catch {
    return fail('BAD_REQUEST', { detail: `${field} must be an IP address, got "${v}"` });
  }
}

const PROTOS: Record<number, Proto> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };

export function proto(v: unknown): Proto {
  const p = typeof v === 'number' ? PROTOS[v] : undefined;
  if (!p) fail('BAD_REQUEST', { detail: `unsupported protocol number ${JSON.stringify(v)} (tcp=6, udp=17, sctp=132)` });
  return p;
}

export function port(v: unknown, field: string, allowZero: boolean): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1) || v > 65535) {
    fail('BAD_REQUEST', { detail: `${field} must be a port number, got ${JSON.stringify(v)}` });
  }
  return v;
}
