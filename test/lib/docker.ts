/**
 * Driving the real Docker engine from e2e tests through the `docker` CLI (argument arrays only).
 */
import { removeDockerNetwork } from '../../bench/lib.js';
import { randomId } from './netns.js';
import { sh, shOk, type RunOptions, type RunResult } from './run.js';

/** The image scripts/test-image.sh builds: static busybox + /bin/udp-echo. */
export const TEST_IMAGE = process.env.TSBRIDGE_TEST_IMAGE ?? 'tsbridge-test:latest';

const DOCKER_TIMEOUT_MS = 60_000;

/** Runs `docker ...args`; returns stdout, throws with stderr on failure. */
export function docker(args: readonly string[], opts: RunOptions = {}): Promise<string> {
  return sh('docker', args, { timeoutMs: DOCKER_TIMEOUT_MS, ...opts });
}

/** Runs `docker ...args`; never throws. */
export function dockerOk(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return shOk('docker', args, { timeoutMs: DOCKER_TIMEOUT_MS, ...opts });
}

/** Throws a clear error unless a Docker engine answers. */
export async function requireDocker(): Promise<void> {
  const r = await dockerOk(['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 15_000 });
  if (r.exitCode !== 0 || !r.stdout.trim()) {
    throw new Error(`e2e tests need a running Docker engine (run scripts/docker-up.sh as root): ${r.stderr.trim()}`);
  }
}

/** `tsbt-<prefix>-<rand6>`: unique names for containers, networks and plugins. */
export function uniqueName(prefix: string): string {
  return `tsbt-${prefix}-${randomId()}`;
}

const MISSING = /no such (container|network)|not found/i;

/**
 * Force-removes containers (and their anonymous volumes); names that do not exist are ignored.
 * One `docker rm` for all of them (dockerd removes them concurrently); the error lines it prints
 * for names that do not exist are ignored, any other makes this throw.
 */
export async function removeContainers(names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  const r = await dockerOk(['rm', '-f', '-v', ...names], { timeoutMs: DOCKER_TIMEOUT_MS + names.length * 2_000 });
  if (r.exitCode === 0) return;
  const failures = r.stderr.split('\n').map((l) => l.trim()).filter((l) => l && !MISSING.test(l));
  if (failures.length) throw new Error(`docker rm failed: ${failures.join('; ')}`);
}

/**
 * Removes networks; names that do not exist are ignored. Through Docker 20.10's drifting endpoint
 * count ("has active endpoints" with no container left): see removeDockerNetwork in bench/lib.ts.
 */
export async function removeNetworks(names: readonly string[]): Promise<void> {
  const failures: string[] = [];
  for (const name of names) {
    const r = await removeDockerNetwork(name);
    if (!r.ok) failures.push(`${name}: ${r.stderr}`);
  }
  if (failures.length) throw new Error(`docker network rm failed: ${failures.join('; ')}`);
}

/** The container's IPv4 address on `network` (default: the default bridge). */
export async function containerIp(name: string, network = 'bridge'): Promise<string> {
  const ip = await docker(['inspect', '-f', `{{with index .NetworkSettings.Networks "${network}"}}{{.IPAddress}}{{end}}`, name]);
  if (!ip) throw new Error(`container ${name} has no IPv4 address on network ${network}`);
  return ip;
}

export interface WaitOptions {
  intervalMs?: number;
  /** What is being waited for, for the timeout message. */
  what?: string;
}

/**
 * Polls `fn` until it returns a value other than undefined/null/false, and resolves with it.
 * Exceptions from `fn` count as "not yet"; the last one is reported on timeout.
 */
export async function waitFor<T>(
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 10_000,
  opts: WaitOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== null && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? `: last error: ${last.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'condition'}${why}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 200));
  }
}
