/**
 * Addresses and routes an interface holds, as data (HeldAddress, HeldRoute): how two are compared,
 * and how one is written as `ip address` / `ip route` arguments on another interface — the
 * vocabulary of moving an uplink's addresses to its bridge and back. Pure.
 *
 * Every field is checked before it is written: the values come from `ip`'s own output or from the
 * state file, and a line of an `ip -batch` script must never carry more than it says.
 */
import { fail } from '../errors.js';
import { canonicalAddress, parseAddress, parseInterfaceCidr, parsePrefix } from '../net/addr.js';
import type { HeldAddress, HeldRoute } from './types.js';

/** The main routing table's number. */
export const MAIN_TABLE = 254;

const WORD = /^[a-z0-9_.-]{1,32}$/i;

function bad(what: string, value: unknown): never {
  return fail('INTERNAL', { detail: `refusing to write ${what} ${JSON.stringify(value)}` });
}

function checkedAddress(v: string, what: string): string {
  try {
    return canonicalAddress(v);
  } catch {
    return bad(what, v);
  }
}

function checkedNumber(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) bad(what, v);
  return v;
}

function checkedWord(v: string, what: string): string {
  if (!WORD.test(v)) bad(what, v);
  return v;
}

export function familyOfCidr(cidr: string): 4 | 6 {
  return cidr.includes(':') ? 6 : 4;
}

/** `ip address` arguments after the verb: `CIDR dev DEV [broadcast B] [scope S] [metric M] [noprefixroute] [nodad]`. */
export function addressArgs(a: HeldAddress, dev: string): string {
  let cidr: string;
  try {
    const c = parseInterfaceCidr(a.cidr);
    cidr = `${canonicalAddress(a.cidr.split('/')[0]!)}/${c.length}`;
  } catch {
    return bad('address', a.cidr);
  }
  const out = [cidr, 'dev', dev];
  if (a.broadcast) out.push('broadcast', checkedAddress(a.broadcast, 'broadcast address'));
  if (a.scope) out.push('scope', checkedWord(a.scope, 'address scope'));
  if (a.metric !== undefined) out.push('metric', String(checkedNumber(a.metric, 'address metric')));
  if (a.noprefixroute) out.push('noprefixroute');
  // The host's own address, moving between two of its interfaces: no duplicate address detection
  // (the address would stay tentative, unusable, for a second).
  if (familyOfCidr(cidr) === 6) out.push('nodad');
  return out.join(' ');
}

/** `ip route` arguments after the verb: `TO [via V] dev DEV [table T] [metric M] [proto P] [scope S] [src A] [onlink]`. */
export function routeArgs(r: HeldRoute, dev: string): string {
  let to: string;
  try {
    to = `${canonicalAddress(r.to.split('/')[0]!)}/${parsePrefix(r.to).length}`;
  } catch {
    return bad('route destination', r.to);
  }
  const out = [to];
  if (r.via) out.push('via', checkedAddress(r.via, 'next hop'));
  out.push('dev', dev);
  if (r.table !== undefined && r.table !== MAIN_TABLE) out.push('table', String(checkedNumber(r.table, 'routing table')));
  if (r.metric !== undefined) out.push('metric', String(checkedNumber(r.metric, 'route metric')));
  if (r.proto) out.push('proto', checkedWord(r.proto, 'route protocol'));
  if (r.scope) out.push('scope', checkedWord(r.scope, 'route scope'));
  if (r.src) out.push('src', checkedAddress(r.src, 'preferred source'));
  if (r.onlink) out.push('onlink');
  return out.join(' ');
}

/** `ip address del` arguments: the address and its interface only. */
export function addressKeyArgs(a: HeldAddress, dev: string): string {
  return addressArgs({ cidr: a.cidr }, dev).replace(/ nodad$/, '');
}

/** `ip route del` arguments: what identifies the route (destination, next hop, table, metric) and its interface. */
export function routeKeyArgs(r: HeldRoute, dev: string): string {
  const key: HeldRoute = { to: r.to };
  if (r.via) key.via = r.via;
  if (r.table !== undefined) key.table = r.table;
  if (r.metric !== undefined) key.metric = r.metric;
  return routeArgs(key, dev);
}

/** What identifies a route in its table: destination, table and metric (and the next hop it leads to). */
export function sameRoute(a: HeldRoute, b: HeldRoute): boolean {
  const canon = (r: HeldRoute) => {
    const fam = familyOfCidr(r.to);
    return [
      r.to.toLowerCase(),
      r.via ? canonicalAddress(r.via) : '',
      r.table ?? MAIN_TABLE,
      // IPv4 prints no metric 0; IPv6 routes added without one get 1024.
      r.metric ?? (fam === 4 ? 0 : 1024),
    ].join(' ');
  };
  return canon(a) === canon(b);
}

/** Same address and prefix length. */
export function sameAddress(a: HeldAddress, b: HeldAddress): boolean {
  const norm = (x: HeldAddress) => {
    const c = parseInterfaceCidr(x.cidr);
    return `${c.family} ${c.address} ${c.length}`;
  };
  return norm(a) === norm(b);
}

/** "10.0.0.5/24", "default via 10.0.0.1 table 100" — for messages. */
export function describeRoute(r: HeldRoute): string {
  const to = r.to === '0.0.0.0/0' || r.to === '::/0' ? 'default' : r.to;
  return [to, r.via ? `via ${r.via}` : '', r.table !== undefined && r.table !== MAIN_TABLE ? `table ${r.table}` : '', r.metric !== undefined ? `metric ${r.metric}` : '']
    .filter(Boolean)
    .join(' ');
}

/** The address family of an address (throws on garbage). */
export function familyOf(addr: string): 4 | 6 {
  return parseAddress(addr).family;
}
