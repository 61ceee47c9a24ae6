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
}

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
  };
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
