/**
 * Running the tsbridge plugin (`node dist/src/main.js`) as a legacy Docker plugin for e2e tests,
 * and calling it the way the Docker daemon does.
 *
 * Contract with main.js: it listens on $TSBRIDGE_SOCKET, keeps state in $TSBRIDGE_STATE_DIR, logs
 * at $TSBRIDGE_LOG_LEVEL, and answers `POST /Plugin.Activate` once ready.
 */
import http from 'node:http';
import net from 'node:net';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

/** The repository root (this file is test/lib/plugin.ts). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Where Docker looks for legacy plugin sockets. */
export const PLUGIN_DIR = '/run/docker/plugins';

export interface PluginResponse<T = any> {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The body as received. */
  raw: string;
  /** The body parsed as JSON; undefined when it is not JSON. */
  body: T;
}

/**
 * POSTs to `/<method>` on the plugin socket as the Docker daemon does: Accept header of the plugin
 * protocol, no Content-Type, empty body when `body` is undefined, JSON otherwise (a string is
 * sent as is).
 */
export function pluginCall<T = any>(socket: string, method: string, body?: unknown, timeoutMs = 10_000): Promise<PluginResponse<T>> {
  const payload = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: socket,
        method: 'POST',
        path: `/${method}`,
        headers: {
          Accept: 'application/vnd.docker.plugins.v1.2+json',
          'Content-Length': Buffer.byteLength(payload),
        },
        timeout: timeoutMs,
      },
      (res) => {
        let raw = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (raw += d));
        res.on('error', reject);
        res.on('end', () => {
          let parsed: T;
          try {
            parsed = JSON.parse(raw) as T;
          } catch {
            parsed = undefined as T;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, raw, body: parsed });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} on ${socket}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** True when something accepts connections on the Unix socket. */
function socketAnswers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket);
    c.on('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

export interface StartPluginOptions {
  /** Driver name = socket file name (default 'tsbridge-e2e'). */
  name?: string;
  /** State directory; default a fresh mkdtemp under the OS tmpdir, removed by dispose(). */
  stateDir?: string;
  /** Extra environment (overrides the TSBRIDGE_* defaults). */
  env?: Record<string, string>;
  /** Script to run with node (default dist/src/main.js in the repo); tests of this helper pass a stub. */
  entry?: string;
  /** How long to wait for Plugin.Activate to answer (default 60 s: a start-up after SIGKILL re-applies every rule, slower on a loaded machine). */
  readyTimeoutMs?: number;
}

export interface ExitInfo {
  exitCode: number | null;
  signal: string | null;
}

export interface PluginHandle {
  readonly name: string;
  readonly socket: string;
  readonly stateDir: string;
  /** PID of the current process (changes on restart). */
  readonly pid: number;
  readonly running: boolean;
  /** stdout and stderr lines so far, across restarts. */
  logs(): string[];
  /** Sends `signal` (default SIGTERM) and waits for exit; SIGKILLs and throws if it takes over `timeoutMs`. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<ExitInfo>;
  /** SIGKILL, as a crash; waits for exit. */
  kill9(): Promise<ExitInfo>;
  /** Stops the plugin if it runs, then starts it again with the same name, state dir and env. */
  restart(): Promise<void>;
  /** Stops it (if running), removes a leftover socket and the state dir if we created it. */
  dispose(): Promise<void>;
}

function launch(entry: string, env: Record<string, string>, onLine: (l: string) => void) {
  const proc = execa(process.execPath, [entry], {
    cwd: REPO_ROOT,
    env,
    reject: false,
    buffer: false,
    stdin: 'ignore',
  });
  for (const stream of [proc.stdout!, proc.stderr!]) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => {
      const lines = (partial + d).split('\n');
      partial = lines.pop()!;
      lines.forEach(onLine);
    });
    stream.on('end', () => partial && onLine(partial));
  }
  return proc;
}

/** Starts the plugin and resolves once it answers Plugin.Activate. */
export async function startPlugin(opts: StartPluginOptions = {}): Promise<PluginHandle> {
  const name = opts.name ?? 'tsbridge-e2e';
  const socket = path.join(PLUGIN_DIR, `${name}.sock`);
  const entry = opts.entry ?? path.join(REPO_ROOT, 'dist', 'src', 'main.js');
  const readyTimeoutMs = opts.readyTimeoutMs ?? 60_000;
  const lines: string[] = [];
  const echo = Boolean(process.env.TSBRIDGE_TEST_ECHO_LOGS);
  const onLine = (l: string) => {
    lines.push(l);
    if (echo) console.log(`[${name}] ${l}`);
  };

  if (!existsSync(entry)) throw new Error(`plugin entry ${entry} does not exist (run npm run build)`);
  if (await socketAnswers(socket)) throw new Error(`${socket} is already served by another process`);
  await mkdir(PLUGIN_DIR, { recursive: true });
  const ownsStateDir = opts.stateDir === undefined;
  const stateDir = opts.stateDir ?? (await mkdtemp(path.join(tmpdir(), 'tsbridge-state-')));
  const env = {
    TSBRIDGE_SOCKET: socket,
    TSBRIDGE_STATE_DIR: stateDir,
    TSBRIDGE_LOG_LEVEL: 'debug',
    ...opts.env,
  };

  let proc = launch(entry, env, onLine);
  const isRunning = () => proc.exitCode === null && proc.signalCode === null;

  const waitReady = async () => {
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (!isRunning()) {
        throw new Error(`plugin ${name} exited (code ${proc.exitCode}, signal ${proc.signalCode}) before it was ready:\n${lines.join('\n')}`);
      }
      const ok = await pluginCall(socket, 'Plugin.Activate', undefined, 2000).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return;
      if (Date.now() > deadline) {
        throw new Error(`plugin ${name} did not answer Plugin.Activate on ${socket} within ${readyTimeoutMs} ms:\n${lines.join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  const waitExit = async (timeoutMs: number): Promise<ExitInfo | undefined> => {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), timeoutMs)));
    const exited = proc.then(() => ({ exitCode: proc.exitCode, signal: proc.signalCode }));
    try {
      return await Promise.race([exited, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  };

  const handle: PluginHandle = {
    name,
    socket,
    stateDir,
    get pid() {
      return proc.pid!;
    },
    get running() {
      return isRunning();
    },
    logs: () => [...lines],
    async stop(signal = 'SIGTERM', timeoutMs = 10_000) {
      if (isRunning()) proc.kill(signal);
      const info = await waitExit(timeoutMs);
      if (info) return info;
      proc.kill('SIGKILL');
      await waitExit(5000);
      throw new Error(`plugin ${name} did not exit within ${timeoutMs} ms of ${signal}; killed it`);
    },
    async kill9() {
      return handle.stop('SIGKILL', 5000);
    },
    async restart() {
      if (isRunning()) await handle.stop();
      proc = launch(entry, env, onLine);
      await waitReady();
    },
    async dispose() {
      try {
        if (isRunning()) await handle.stop().catch(() => handle.kill9());
      } finally {
        await rm(socket, { force: true });
        if (ownsStateDir) await rm(stateDir, { recursive: true, force: true });
      }
    },
  };

  try {
    await waitReady();
  } catch (e) {
    await handle.dispose();
    throw e;
  }
  return handle;
}
