/**
 * Runtime configuration, read once from the environment at start-up.
 * Every variable is documented in README.md (Configuration); docs/scripts.md lists the rest.
 */
export interface Config {
  /** Unix socket Docker connects to. The file name is the driver name. */
  socket: string;
  /** Directory holding state.json. */
  stateDir: string;
  logLevel: 'error' | 'warn' | 'info' | 'debug';
  /** Default IPv4/IPv6 pools as "base:size,base:size" (empty = built-in defaults). */
  defaultPools: string;
  /** Milliseconds one kernel command may take before it is killed and the call fails. */
  commandTimeoutMs: number;
  /** Seconds between sweeps for endpoints whose container died unseen (0 = off). */
  gcIntervalSec: number;
  /** Where sysctls are written (a read-write mount of the host's /proc/sys in a managed plugin). */
  sysctlRoot: string;
  /** Which iptables variant the forward shim uses. */
  iptables: IptablesSetting;
  /** The cluster store, for overlays (docs/overlay.md); no endpoints: no overlays. */
  etcd: EtcdConfig;
}

export interface EtcdConfig {
  /** Client URLs (http:// or https://). */
  endpoints: string[];
  /** PEM files: CA of the servers' certificates, this host's client certificate and key ('' = none). */
  ca: string;
  cert: string;
  key: string;
  /** Key prefix, ending in '/'. */
  prefix: string;
  /** Seconds a host may be silent before its keys expire. */
  leaseTtlSec: number;
  /** Milliseconds one etcd call may take before etcd counts as unreachable. */
  timeoutMs: number;
  /** This host's underlay address ('' = the source of its route to the first endpoint). */
  vtep: string;
}

import { isIP } from 'node:net';
import { iptablesSetting, type IptablesSetting } from './kernel/real/iptables-variant.js';

const LEVELS = ['error', 'warn', 'info', 'debug'] as const;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const logLevel = (env.TSBRIDGE_LOG_LEVEL ?? 'info').toLowerCase();
  if (!(LEVELS as readonly string[]).includes(logLevel)) {
    throw new Error(`TSBRIDGE_LOG_LEVEL must be one of ${LEVELS.join(', ')} (got "${env.TSBRIDGE_LOG_LEVEL}")`);
  }
  return {
    socket: env.TSBRIDGE_SOCKET || '/run/docker/plugins/tsbridge.sock',
    stateDir: env.TSBRIDGE_STATE_DIR || '/var/lib/tsbridge',
    logLevel: logLevel as Config['logLevel'],
    defaultPools: env.TSBRIDGE_DEFAULT_POOLS ?? '',
    commandTimeoutMs: positiveInt(env, 'TSBRIDGE_COMMAND_TIMEOUT_MS', 10_000),
    gcIntervalSec: nonNegativeInt(env, 'TSBRIDGE_GC_INTERVAL', 30),
    sysctlRoot: env.TSBRIDGE_SYSCTL_ROOT || '/proc/sys',
    iptables: iptablesSetting(env),
    etcd: etcdConfig(env),
  };
}

function etcdConfig(env: NodeJS.ProcessEnv): EtcdConfig {
  const endpoints = (env.TSBRIDGE_ETCD_ENDPOINTS ?? '').split(',').map((x) => x.trim()).filter(Boolean);
  for (const e of endpoints) {
    let u: URL;
    try {
      u = new URL(e);
    } catch {
      throw new Error(`TSBRIDGE_ETCD_ENDPOINTS: "${e}" is not a URL (e.g. http://10.0.0.5:2379)`);
    }
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.hostname || u.pathname.length > 1) {
      throw new Error(`TSBRIDGE_ETCD_ENDPOINTS: "${e}" must be http://HOST:PORT or https://HOST:PORT`);
    }
  }
  const ca = env.TSBRIDGE_ETCD_CA ?? '';
  const cert = env.TSBRIDGE_ETCD_CERT ?? '';
  const key = env.TSBRIDGE_ETCD_KEY ?? '';
  if (Boolean(cert) !== Boolean(key)) throw new Error('TSBRIDGE_ETCD_CERT and TSBRIDGE_ETCD_KEY go together (a client certificate and its key)');
  if ((cert || endpoints.some((e) => e.startsWith('https:'))) && !ca) {
    throw new Error('TLS to etcd (https:// endpoints, or a client certificate) needs TSBRIDGE_ETCD_CA, the CA of the servers\' certificates');
  }
  if (ca && endpoints.some((e) => e.startsWith('http:'))) throw new Error('TSBRIDGE_ETCD_CA is set but an endpoint is http://: use https:// for every endpoint');
  let prefix = env.TSBRIDGE_ETCD_PREFIX || '/tsbridge/';
  if (!prefix.endsWith('/')) prefix += '/';
  if (!/^\/[\x21-\x7e]*$/.test(prefix)) throw new Error(`TSBRIDGE_ETCD_PREFIX must start with / and hold printable characters only (got "${prefix}")`);
  const leaseTtlSec = positiveInt(env, 'TSBRIDGE_ETCD_LEASE_TTL', 15);
  if (leaseTtlSec < 2) throw new Error('TSBRIDGE_ETCD_LEASE_TTL must be at least 2 seconds');
  const vtep = env.TSBRIDGE_VTEP_ADDRESS ?? '';
  if (vtep && !isIP(vtep)) throw new Error(`TSBRIDGE_VTEP_ADDRESS must be an IPv4 or IPv6 address (got "${vtep}")`);
  return { endpoints, ca, cert, key, prefix, leaseTtlSec, timeoutMs: positiveInt(env, 'TSBRIDGE_ETCD_TIMEOUT_MS', 3000), vtep };
}

function positiveInt(env: NodeJS.ProcessEnv, key: string, dflt: number): number {
  const n = nonNegativeInt(env, key, dflt);
  if (n === 0) throw new Error(`${key} must be a positive integer`);
  return n;
}

function nonNegativeInt(env: NodeJS.ProcessEnv, key: string, dflt: number): number {
  const raw = env[key];
  if (raw === undefined || raw === '') return dflt;
  if (!/^\d+$/.test(raw)) throw new Error(`${key} must be a whole number (got "${raw}")`);
  return Number(raw);
}
