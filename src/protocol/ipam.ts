/**
 * The IPAM calls: wire → validated values, and the one place where IPAM options are declared.
 *
 * Options (`--ipam-opt KEY=VALUE` on a network reaches RequestPool; Docker adds its own to
 * RequestAddress) are validated like network options: a key nobody declared is refused by
 * name, because an ignored option is worse than an error. Docker's own keys are accepted and
 * have no effect: `RequestAddressType` (the gateway request) and anything under
 * `com.docker.` (Docker 29 sends `com.docker.network.endpoint.name`, and
 * `com.docker.network.endpoint.macaddress` to an IPAM that asks for MACs; other versions may
 * add more of their own namespace).
 */
import { fail } from '../errors.js';
import type { AllocKind } from '../ipam/types.js';
import { optionalString, requireObject } from './validate.js';
import { GATEWAY_REQUEST } from './wire.js';
import { OVERLAY_NAME } from '../cluster/keys.js';
import { OVERLAY_OPTION } from '../kinds/overlay/settings.js';

/** A tsbridge IPAM option: which calls take it, and how its value is checked. */
export interface IpamOption {
  calls: ('RequestPool' | 'RequestAddress')[];
  /** Returns the value to use, or fails with BAD_OPTION. */
  parse(value: string, key: string): string;
}

/** tsbridge's own IPAM options, `io.tsbridge.…`. A key under the prefix that is not in this table is refused. */
export const IPAM_OPTIONS: Record<string, IpamOption> = {
  // The pool of an overlay: its addresses are allocated across hosts in etcd (docs/overlay.md).
  [OVERLAY_OPTION]: {
    calls: ['RequestPool'],
    parse(value, key) {
      if (!OVERLAY_NAME.test(value)) fail('BAD_OPTION', { option: key, value, detail: 'an overlay name is 1-63 of letters, digits, ".", "_", "-", starting with a letter or digit' });
      return value;
    },
  },
};

/** Key Docker puts in RequestAddress's options to ask for the gateway's address. */
export const REQUEST_ADDRESS_TYPE = 'RequestAddressType';
/** Docker's own namespace: keys under it are Docker's, passed on for information. */
export const DOCKER_PREFIX = 'com.docker.';

/**
 * Validates a call's Options: null or an object of strings. Returns tsbridge's own options that
 * were given (validated); Docker's keys are left out.
 */
export function parseIpamOptions(v: unknown, call: 'RequestPool' | 'RequestAddress'): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) fail('BAD_REQUEST', { detail: 'Options must be an object' });
  const mine: Record<string, string> = {};
  for (const [key, value] of Object.entries(v as Record<string, unknown>)) {
    if (typeof value !== 'string') fail('BAD_OPTION', { option: key, value: JSON.stringify(value) ?? String(value), detail: 'expected a string' });
    if (key.startsWith(DOCKER_PREFIX)) continue;
    if (call === 'RequestAddress' && key === REQUEST_ADDRESS_TYPE) {
      if (value !== GATEWAY_REQUEST) fail('BAD_OPTION', { option: key, value, detail: `the only address type is ${GATEWAY_REQUEST}` });
      continue;
    }
    const known = Object.hasOwn(IPAM_OPTIONS, key) ? IPAM_OPTIONS[key] : undefined;
    if (!known || !known.calls.includes(call)) fail('UNSUPPORTED_OPTION', { option: key });
    mine[key] = known.parse(value, key);
  }
  return mine;
}

/**
 * A PoolID as tsbridge hands them out (`tsb-v4-10.10.0.0/24`, `tsb-v6-fd00:1::/64`). Anything
 * else is refused before it is looked up: such an ID was never given, and some strings
 * (`__proto__`, `constructor`) mean something to a JavaScript object.
 */
export function poolIdField(v: unknown): string {
  if (typeof v !== 'string' || !/^tsb-v[46]-[0-9A-Fa-f.:]{2,45}\/\d{1,3}$/.test(v)) {
    fail('BAD_REQUEST', { detail: `PoolID must be a pool ID tsbridge gave (such as tsb-v4-10.10.0.0/24), got ${JSON.stringify(v) ?? String(v)}` });
  }
  return v;
}

export interface PoolRequestSpec {
  pool: string;
  subPool: string;
  v6: boolean;
  /** tsbridge's own options given (io.tsbridge.overlay). */
  options: Record<string, string>;
}

export function parseRequestPool(body: unknown): PoolRequestSpec {
  const b = requireObject(body);
  optionalString(b.AddressSpace, 'AddressSpace');
  if (b.V6 !== undefined && b.V6 !== null && typeof b.V6 !== 'boolean') fail('BAD_REQUEST', { detail: 'V6 must be true or false' });
  return {
    pool: optionalString(b.Pool, 'Pool'),
    subPool: optionalString(b.SubPool, 'SubPool'),
    v6: b.V6 === true,
    options: parseIpamOptions(b.Options, 'RequestPool'),
  };
}

export function parseReleasePool(body: unknown): string {
  return poolIdField(requireObject(body).PoolID);
}

export function parseRequestAddress(body: unknown): { poolId: string; address: string; kind: AllocKind; options: Record<string, string> } {
  const b = requireObject(body);
  const poolId = poolIdField(b.PoolID);
  const address = optionalString(b.Address, 'Address');
  const options = parseIpamOptions(b.Options, 'RequestAddress');
  const raw = (b.Options ?? {}) as Record<string, unknown>;
  const kind: AllocKind = Object.hasOwn(raw, REQUEST_ADDRESS_TYPE) && raw[REQUEST_ADDRESS_TYPE] === GATEWAY_REQUEST ? 'gateway' : 'endpoint';
  return { poolId, address, kind, options };
}

export function parseReleaseAddress(body: unknown): { poolId: string; address: string } {
  const b = requireObject(body);
  return { poolId: poolIdField(b.PoolID), address: optionalString(b.Address, 'Address') };
}
