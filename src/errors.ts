/**
 * The one catalogue of tsbridge errors. Every failure a caller can see has a
 * code here and a message template. The protocol edge maps a
 * TsbridgeError to Docker's `{"Err"}` / `{"Error"}` replies in one place
 * (src/server/reply.ts); nothing else formats errors for Docker.
 */
export const ERRORS = {
  BAD_REQUEST: { message: 'malformed request: {detail}' },
  BAD_OPTION: { message: 'invalid option {option}={value}: {detail}' },
  UNSUPPORTED_OPTION: { message: 'option {option} is not supported by tsbridge' },
  BAD_CIDR: { message: 'invalid {what} "{value}": {detail}' },
  BAD_ADDRESS: { message: 'invalid address "{value}": {detail}' },
  POOL_OVERLAP: { message: 'subnet {pool} overlaps {other}' },
  NO_FREE_POOL: { message: 'no free {family} pool left in the default pools ({pools})' },
  UNKNOWN_POOL: { message: 'unknown address pool {poolId}' },
  ADDRESS_OUT_OF_POOL: { message: 'address {address} is not in pool {pool}' },
  ADDRESS_IN_USE: { message: 'address {address} is already in use in pool {pool}' },
  POOL_EXHAUSTED: { message: 'no free address left in pool {pool}{range}{network}' },
  NETWORK_EXISTS: { message: 'network {networkId} already exists with different settings' },
  UNKNOWN_NETWORK: { message: 'unknown network {networkId}' },
  UNKNOWN_ENDPOINT: { message: 'unknown endpoint {endpointId} on network {networkId}' },
  BRIDGE_NAME_IN_USE: { message: 'bridge name {name} is already used by network {networkId}' },
  INTERFACE_IN_USE: { message: 'interface {name} is already taken over by network {networkId}' },
  ENDPOINT_EXISTS: { message: 'endpoint {endpointId} already exists with different settings' },
  PORT_IN_USE: { message: 'host port {hostIp}:{port}/{proto} is already allocated{owner}' },
  NO_FREE_PORT: { message: 'no free host port for {proto} in {range}' },
  NO_PUBLISHING: { message: 'network {networkId} publishes no ports: {detail}' },
  TOO_MANY_PORTS: { message: '{count} port bindings in one request: tsbridge publishes at most {max} per container and network' },
  CLUSTER_NOT_CONFIGURED: { message: 'option {option} needs a cluster store: set TSBRIDGE_ETCD_ENDPOINTS' },
  CLUSTER_UNAVAILABLE: { message: 'etcd is unreachable ({endpoints}): {op} failed: {detail}; endpoints already made keep working, new ones need etcd' },
  OVERLAY_MISMATCH: { message: 'overlay {overlay} already exists with {field} {theirs}, not {ours}' },
  OVERLAY_CONTENDED: { message: '{op} on overlay {overlay} gave up after {attempts} attempts: too many concurrent changes' },
  NO_FREE_VNI: { message: 'no free VXLAN network identifier left in {range}' },
  KERNEL: { message: '{op} failed: {detail}' },
  TIMEOUT: { message: '{op} timed out after {ms} ms' },
  STATE: { message: 'state store: {detail}' },
  INTERNAL: { message: 'internal error: {detail}' },
} as const satisfies Record<string, { message: string }>;

export type ErrorCode = keyof typeof ERRORS;

export class TsbridgeError extends Error {
  readonly code: ErrorCode;
  readonly params: Record<string, string | number>;

  constructor(code: ErrorCode, params: Record<string, string | number> = {}, options?: { cause?: unknown }) {
    super(formatMessage(code, params), options);
    this.name = 'TsbridgeError';
    this.code = code;
    this.params = params;
  }
}

export function formatMessage(code: ErrorCode, params: Record<string, string | number>): string {
  return ERRORS[code].message.replace(/\{(\w+)\}/g, (_m, key: string) =>
    key in params ? String(params[key]) : '',
  );
}

/** Shorthand: `fail('BAD_OPTION', {...})` throws. */
export function fail(code: ErrorCode, params: Record<string, string | number> = {}, cause?: unknown): never {
  throw new TsbridgeError(code, params, cause === undefined ? undefined : { cause });
}

export function isTsbridgeError(e: unknown, code?: ErrorCode): e is TsbridgeError {
  return e instanceof TsbridgeError && (code === undefined || e.code === code);
}
