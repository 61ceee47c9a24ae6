/**
 * Runtime configuration, read once from the environment at start-up, and the rule by which an
 * instance's socket and state directory are found — shared by the plugin and the `tsbridge`
 * command, so both agree without flags. Every variable is documented in README.md,
 * *Configuration*.
 */
import { isIP } from 'node:net';
import path from 'node:path';
import { DEFAULT_INSTANCE, instanceFromSocket } from './kernel/owner.js';
import { iptablesSetting, type IptablesSetting } from './kernel/real/iptables-variant.js';

export interface Config {
  /** Unix socket Docker connects to. The file name is the driver name. */
  socket: string;
  /** The driver name: the socket's file name without `.sock`. */
  instance: string;
  /** Directory holding state.json (and the instance's lock). */
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
  /** Where Prometheus metrics are served over HTTP; null (the default) = nowhere. */
  metrics: MetricsAddr | null;
  /**
   * Docker's API socket, for the sweep's convergence with Docker (src/driver/converge.ts); null
   * (the default) = the plugin never asks Docker, `tsbridge gc` does it on demand.
   */
  dockerSocket: string | null;
  /** Seconds a record must have existed before convergence may judge it (Docker may be creating it). */
  gcGraceSec: number;
  /**
   * The packet mark bit tsbridge's nftables forward chain sets and its iptables shim requires
   * (fail closed: without tsbridge's table, nothing of its networks is forwarded). One bit.
   */
  fwmark: number;
  /**
   * How outside changes to tsbridge's rules are noticed: `monitor` (a long-lived `nft monitor`
   * triggers a check within milliseconds, the sweep checks too) or `sweep` (the sweep only).
   */
  firewallWatch: 'monitor' | 'sweep';
  /** The cluster store, for overlays (docs/overlay.md); no endpoints: no overlays. */
  etcd: EtcdConfig;
}

/** The default mark bit (docs/architecture.md, *Fail closed*, lists the marks other programs use). */
export const DEFAULT_FWMARK = 0x1000000;

export interface MetricsAddr {
  /** An IP address literal (no name: nothing to resolve at start-up). */
  host: string;
  /** 1-65535, or 0 for any free port (the one chosen is logged). */
  port: number;
}

/** Where Docker looks for legacy plugins' sockets. */
export const PLUGIN_SOCKET_DIR = '/run/docker/plugins';
export const DEFAULT_SOCKET = `${PLUGIN_SOCKET_DIR}/${DEFAULT_INSTANCE}.sock`;
/** The default instance's state directory; another instance NAME gets `/var/lib/tsbridge-NAME`. */
export const DEFAULT_STATE_DIR = '/var/lib/tsbridge';

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


const LEVELS = ['error', 'warn', 'info', 'debug'] as const;

/** The state directory an instance uses when TSBRIDGE_STATE_DIR does not say otherwise. */
export function defaultStateDir(instance: string): string {
  return instance === DEFAULT_INSTANCE ? DEFAULT_STATE_DIR : `${DEFAULT_STATE_DIR}-${instance}`;
}

/** TSBRIDGE_SOCKET: an absolute path whose file name is a valid instance name. */
export function socketSetting(raw: string | undefined): string {
  const socket = raw || DEFAULT_SOCKET;
  if (!path.isAbsolute(socket)) {
    // Express would take a bare number for a TCP port, and a relative path depends on the
    // working directory: neither is where Docker looks.
    throw new Error(`TSBRIDGE_SOCKET must be an absolute path to a Unix socket, such as ${DEFAULT_SOCKET} (got "${raw}")`);
  }
  instanceFromSocket(socket); // throws on a name that cannot be an instance
  return path.normalize(socket);
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const logLevel = (env.TSBRIDGE_LOG_LEVEL ?? 'info').toLowerCase();
  if (!(LEVELS as readonly string[]).includes(logLevel)) {
    throw new Error(`TSBRIDGE_LOG_LEVEL must be one of ${LEVELS.join(', ')} (got "${env.TSBRIDGE_LOG_LEVEL}")`);
  }
  const socket = socketSetting(env.TSBRIDGE_SOCKET);
  const instance = instanceFromSocket(socket);
  return {
    socket,
    instance,
    stateDir: stateDirSetting(env.TSBRIDGE_STATE_DIR, instance),
    logLevel: logLevel as Config['logLevel'],
    defaultPools: env.TSBRIDGE_DEFAULT_POOLS ?? '',
    commandTimeoutMs: positiveInt(env, 'TSBRIDGE_COMMAND_TIMEOUT_MS', 10_000),
    gcIntervalSec: nonNegativeInt(env, 'TSBRIDGE_GC_INTERVAL', 30),
    sysctlRoot: env.TSBRIDGE_SYSCTL_ROOT || '/proc/sys',
    iptables: iptablesSetting(env),
    metrics: metricsAddr(env.TSBRIDGE_METRICS_ADDR),
    dockerSocket: dockerSocketSetting(env.TSBRIDGE_DOCKER_SOCKET),
    gcGraceSec: nonNegativeInt(env, 'TSBRIDGE_GC_GRACE', 60),
    fwmark: fwmarkSetting(env.TSBRIDGE_FWMARK),
    firewallWatch: firewallWatchSetting(env.TSBRIDGE_FIREWALL_WATCH),
    etcd: etcdConfig(env),
  };
}

/** TSBRIDGE_FWMARK: one bit, as hex (0x1000000) or decimal. */
export function fwmarkSetting(raw: string | undefined): number {
  const v = (raw ?? '').trim();
  if (v === '') return DEFAULT_FWMARK;
  const n = /^0x[0-9a-fA-F]{1,8}$/.test(v) ? parseInt(v.slice(2), 16) : /^\d{1,10}$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n <= 0 || n > 0xffffffff || (n & (n - 1)) !== 0) {
    throw new Error(`TSBRIDGE_FWMARK must be a single bit of the packet mark, e.g. 0x1000000 (got "${raw}")`);
  }
  return n >>> 0;
}

export function firewallWatchSetting(raw: string | undefined): 'monitor' | 'sweep' {
  const v = (raw ?? '').trim() || 'monitor';
  if (v !== 'monitor' && v !== 'sweep') throw new Error(`TSBRIDGE_FIREWALL_WATCH must be monitor or sweep (got "${raw}")`);
  return v;
}

/**
 * TSBRIDGE_DOCKER_SOCKET: the Docker API socket the sweep asks, or empty / `off` for none. Not
 * detected: asking another Docker than the one using the plugin (a second dockerd on the host,
 * a test run) would make every network look removed, so the socket is named where it is known
 * — the systemd unit names /var/run/docker.sock. A path that is not a socket when a sweep runs
 * (dockerd not started yet, a managed plugin without the mount) makes that sweep skip Docker.
 */
export function dockerSocketSetting(raw: string | undefined): string | null {
  const v = (raw ?? '').trim();
  if (v === '' || v === 'off') return null;
  const p = v.startsWith('unix://') ? v.slice('unix://'.length) : v;
  if (!path.isAbsolute(p)) throw new Error(`TSBRIDGE_DOCKER_SOCKET must be the absolute path of Docker's API socket (e.g. /var/run/docker.sock), or off (got "${raw}")`);
  return path.normalize(p);
}

function stateDirSetting(raw: string | undefined, instance: string): string {
  if (!raw) return defaultStateDir(instance);
  if (!path.isAbsolute(raw)) throw new Error(`TSBRIDGE_STATE_DIR must be an absolute path (got "${raw}")`);
  return path.normalize(raw);
}

/**
 * TSBRIDGE_METRICS_ADDR: `IPv4:PORT` or `[IPv6]:PORT`, e.g. 127.0.0.1:9477. Empty or unset: no
 * metrics listener. A host name is refused (nothing is resolved at start-up), and so is a
 * missing address: metrics are opt-in, and which interface serves them is the operator's choice.
 */
export function metricsAddr(raw: string | undefined): MetricsAddr | null {
  if (raw === undefined || raw.trim() === '') return null;
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(raw.trim());
  const host = m ? (m[1] ?? m[2])! : '';
  const port = m ? Number(m[3]) : -1;
  if (!m || isIP(host) !== (m[1] !== undefined ? 6 : 4) || port > 65535) {
    throw new Error(`TSBRIDGE_METRICS_ADDR must be IPv4:PORT or [IPv6]:PORT, such as 127.0.0.1:9477 (got "${raw}")`);
  }
  return { host, port };
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

/** Where one instance is: what the `tsbridge` command talks to and reads. */
export interface InstancePaths {
  instance: string;
  socket: string;
  stateDir: string;
}

/**
 * The instance the `tsbridge` command means, without flags where it can. Flags first:
 * `--instance NAME` (that instance's socket and default state directory) or `--socket PATH`,
 * and `--state-dir DIR`; a flag naming the instance ignores the environment, which describes
 * another. Without them, the environment as the plugin reads it: TSBRIDGE_SOCKET (the wrappers
 * an install leaves set it) and TSBRIDGE_STATE_DIR; then the default instance.
 */
export function resolveInstance(opts: { instance?: string; socket?: string; stateDir?: string }, env: NodeJS.ProcessEnv): InstancePaths {
  let socket: string;
  let stateDir: string;
  if (opts.instance !== undefined || opts.socket !== undefined) {
    socket = opts.socket !== undefined ? path.resolve(opts.socket) : `${PLUGIN_SOCKET_DIR}/${instanceName(opts.instance!)}.sock`;
    stateDir = defaultStateDir(instanceFromSocket(socket));
  } else {
    socket = socketSetting(env.TSBRIDGE_SOCKET);
    stateDir = stateDirSetting(env.TSBRIDGE_STATE_DIR, instanceFromSocket(socket));
  }
  if (opts.stateDir !== undefined) stateDir = path.resolve(opts.stateDir);
  return { instance: instanceFromSocket(socket), socket, stateDir };
}

/** An instance name as `--instance` takes it: what a socket file may be called, without `.sock`. */
export function instanceName(raw: string): string {
  const name = raw.replace(/\.sock$/, '');
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw new Error(`an instance name is 1-64 letters, digits, ".", "_" or "-" (got "${raw}")`);
  return name;
}
