/**
 * A real etcd server for tests (Debian's etcd-server, etcd v3 API): one member, a temporary data
 * directory, stopped by PID. Integration tests run it on loopback; the multi-host rig runs it in
 * its underlay namespace (`netns`). It can be stopped and started again on the same data (an
 * etcd outage) — leases survive that, as on a real cluster.
 */
import net from 'node:net';
import https from 'node:https';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { stopProcess } from './netns.js';

export interface StartEtcdOptions {
  /** Address to serve clients on (default 127.0.0.1). */
  host?: string;
  /** Client port (default: a free port on loopback, or 2379 in a namespace). */
  clientPort?: number;
  /** More addresses to serve clients on (same port). */
  extraListen?: string[];
  /** Run inside this network namespace (`ip netns exec`). */
  netns?: string;
  /** Data directory (default: a fresh temporary one, removed by dispose()). */
  dataDir?: string;
  /** Called with each line etcd logs. */
  onLine?: (line: string) => void;
  /** Serve clients over TLS with these PEM files, and require a client certificate signed by `ca`. */
  tls?: { cert: string; key: string; ca: string };
}

export interface EtcdServer {
  /** The client URL, `http://host:port`. */
  readonly endpoint: string;
  readonly dataDir: string;
  /** PID of the etcd process (undefined while stopped). */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Its log lines so far, across restarts. */
  logs(): string[];
  /** Stops it (SIGTERM, SIGKILL after 5 s) and waits; the data stays. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash. */
  kill9(): Promise<void>;
  /** Starts it again on the same data and port; resolves once it answers. */
  start(): Promise<void>;
  /** Stops it and removes a data directory it created. Idempotent. */
  dispose(): Promise<void>;
}

/** A TCP port nothing listens on right now (the kernel picks it). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** /health over TLS, with the client certificate etcd requires. */
async function tlsHealthy(port: number, tls: { cert: string; key: string; ca: string }): Promise<boolean> {
  const [cert, key, ca] = await Promise.all([readFile(tls.cert), readFile(tls.key), readFile(tls.ca)]);
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/health', cert, key, ca, timeout: 1000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(res.statusCode === 200 && body.includes('"health":"true"')));
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
  });
}

/** Throws a clear error unless the etcd binary is installed. */
export async function requireEtcd(): Promise<void> {
  const r = await execa('etcd', ['--version'], { reject: false });
  if (r.exitCode !== 0) {
    throw new Error('these tests need etcd (Debian package etcd-server; scripts/install-deps.sh installs it)');
  }
}

/** Starts etcd and resolves once it serves /health. */
export async function startEtcd(opts: StartEtcdOptions = {}): Promise<EtcdServer> {
  const host = opts.host ?? '127.0.0.1';
  const clientPort = opts.clientPort ?? (opts.netns ? 2379 : await freePort(host));
  const peerPort = opts.netns ? 2380 : await freePort('127.0.0.1');
  const ownsData = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await mkdtemp(path.join(tmpdir(), 'tsbridge-etcd-')));
  const scheme = opts.tls ? 'https' : 'http';
  const endpoint = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const args = [
    '--name', 'tsbridge-test',
    '--data-dir', dataDir,
    '--listen-client-urls', [...new Set([host, ...(opts.extraListen ?? []), '127.0.0.1'])].map((h) => `${scheme}://${h.includes(':') ? `[${h}]` : h}:${clientPort}`).join(','),
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `tsbridge-test=${peer}`,
    '--initial-cluster-state', 'new',
    // Short election ticks keep restarts quick on one member.
    '--heartbeat-interval', '50',
    '--election-timeout', '500',
    '--log-outputs', 'stderr',
    ...(opts.tls ? ['--cert-file', opts.tls.cert, '--key-file', opts.tls.key, '--trusted-ca-file', opts.tls.ca, '--client-cert-auth'] : []),
  ];
  const lines: string[] = [];
  const onLine = (l: string) => {
    lines.push(l);
    opts.onLine?.(l);
  };
  let proc: ReturnType<typeof execa> | undefined;

  const running = () => proc !== undefined && proc.exitCode === null && proc.signalCode === null;

  const launch = async () => {
    const cmd = opts.netns ? ['ip', ['netns', 'exec', opts.netns, 'etcd', ...args]] as const : ['etcd', args] as const;
    const p = execa(cmd[0], [...cmd[1]], { reject: false, buffer: false, stdin: 'ignore' });
    proc = p;
    for (const stream of [p.stdout!, p.stderr!]) {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => {
        const ls = (partial + d).split('\n');
        partial = ls.pop()!;
        ls.forEach(onLine);
      });
    }
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (!running()) throw new Error(`etcd exited (code ${p.exitCode}) before it was ready:\n${lines.slice(-20).join('\n')}`);
      if (await healthy()) return;
      if (Date.now() > deadline) throw new Error(`etcd not healthy on ${endpoint} within 20 s:\n${lines.slice(-20).join('\n')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  // /health through the namespace when it runs in one (the test process may not reach it).
  const healthy = async (): Promise<boolean> => {
    if (opts.tls) return tlsHealthy(clientPort, opts.tls);
    const url = `http://127.0.0.1:${clientPort}/health`;
    if (opts.netns) {
      const probe = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(1000) }).then((r) => r.json()).then((j) => process.exit(j.health === 'true' ? 0 : 1), () => process.exit(1))`;
      const r = await execa('ip', ['netns', 'exec', opts.netns, process.execPath, '-e', probe], { reject: false, timeout: 5000 });
      return r.exitCode === 0;
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      return res.ok && ((await res.json()) as { health?: string }).health === 'true';
    } catch {
      return false;
    }
  };

  const server: EtcdServer = {
    endpoint,
    dataDir,
    get pid() {
      return running() ? proc!.pid : undefined;
    },
    get running() {
      return running();
    },
    logs: () => [...lines],
    async stop() {
      if (proc && running()) await stopProcess(proc as never, 5000);
    },
    async kill9() {
      if (proc && running()) {
        proc.kill('SIGKILL');
        await proc;
      }
    },
    async start() {
      if (running()) return;
      await launch();
    },
    async dispose() {
      await server.stop();
      if (ownsData) await rm(dataDir, { recursive: true, force: true });
    },
  };
  try {
    await launch();
  } catch (e) {
    await server.dispose();
    throw e;
  }
  return server;
}
