/**
 * The multi-host rig: several Docker hosts on this one machine, for the overlay's end-to-end tests
 * and benchmark. Needs root, iproute2, util-linux (nsenter/unshare), etcd-server and the Docker 28
 * binaries of scripts/engine.sh (`install 28`). Run it under /run/tsbridge-e2e.lock like any test
 * that starts Docker daemons, although it never touches /var/run/docker.sock.
 *
 *                  machine ── tsbr<id> ─┐ 198.18.x.1/30 ↔ .2 (tests reach etcd here only)
 *   ┌─ ns tsbr-<id>-ul ─────────────────┴──────────────┐
 *   │ bridge ul0  A.1/24  etcd on A.1:2379             │        ┌─ ns tsbr-<id>-rt ────┐
 *   │   ├── h1 ─ eth0 A.11  ns tsbr-<id>-h1            │        │ router: A.254 / B.1  │
 *   │   ├── h2 ─ eth0 A.12  ns tsbr-<id>-h2            │        │ bridge b0            │
 *   │   └── rt ──────────────────────────────────── uplink ──┤   └── h3 ─ eth0 B.13 │
 *   └──────────────────────────────────────────────────┘        └──────────────────────┘
 *
 * A and B are two /24s in 10.2xx (a routed underlay: the last host(s) sit in B, behind the router).
 * Nothing routes out of the rig: the namespaces have no route to the machine or beyond it.
 *
 * Each host is a network namespace with its own PID and mount namespace (scripts/rig-host.sh):
 * a fresh /sys, its own /run/docker/plugins, its own containerd and dockerd (Docker 28) with
 * everything under the rig's directory, the Docker API on DIR/hN/docker.sock. Its tsbridge plugin
 * runs inside those namespaces (nsenter), so killing a host kills the plugin with it.
 *
 * Every process, namespace, link and cgroup the rig makes is written to its manifest first;
 * destroy() stops the daemons cleanly and then runs scripts/rig-down.sh, which tears down from
 * the manifest by PID — the same script removes what a crashed run left.
 */
import { createWriteStream, existsSync, readFileSync, type WriteStream } from 'node:fs';
import { appendFile, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { startEtcd, type EtcdServer } from './etcd.js';
import { randomId } from './netns.js';
import { pluginCall } from './plugin.js';
import { sh, shOk, type RunOptions, type RunResult } from './run.js';
import { TEST_IMAGE } from './docker.js';

/** The repository (this file runs from test/lib, or compiled from dist/test/lib for the bench). */
const REPO_ROOT = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'scripts', 'rig-host.sh'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('rig: cannot find the repository (scripts/rig-host.sh) above test/lib');
    dir = up;
  }
  return dir;
})();

export const RIG_ROOT = process.env.TSBRIDGE_RIG_ROOT ?? '/run/tsbridge-rig';
const ENGINES_DIR = process.env.TSBRIDGE_ENGINES_DIR ?? '/opt/tsbridge-test/engines';
/** PATH entries of the Docker 28 binaries (scripts/engine.sh path 28). */
export const ENGINE28_PATH = `${ENGINES_DIR}/28/usr/sbin:${ENGINES_DIR}/28/usr/bin`;
const DOCKER_TIMEOUT_MS = 60_000;

export interface RigOptions {
  /** How many Docker hosts (default 3). */
  hosts?: number;
  /** How many of them (the last ones) sit in the second subnet, behind the router (default 1; 0 = one flat subnet). */
  routed?: number;
  /** Start tsbridge in every host (default true) with this extra environment. */
  plugin?: false | { env?: Record<string, string> };
  /** Load the test image into every host (default true). */
  image?: boolean;
  /** Echo plugin and daemon progress lines to the console. */
  verbose?: boolean;
}

export interface RigPlugin {
  /** PID of the plugin (node) in the machine's PID namespace. */
  readonly pid: number;
  readonly running: boolean;
  /** Its output lines so far. */
  logs(): string[];
  /** SIGTERM (or `signal`) and wait; SIGKILL after `timeoutMs`. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<void>;
  /** SIGKILL, as a crash. */
  kill9(): Promise<void>;
}

export interface RigHost {
  /** h1, h2, … */
  readonly name: string;
  /** Its network namespace. */
  readonly netns: string;
  /** Its underlay address (on eth0), its underlay subnet, and its router there. */
  readonly addr: string;
  readonly subnet: string;
  readonly router: string;
  /** Its directory: docker.sock, containerd.sock, data roots, logs, state/ (the plugin's). */
  readonly dir: string;
  /** `unix://…/docker.sock` */
  readonly dockerHost: string;
  /** True until kill() or stop(). */
  readonly alive: boolean;
  /** PID (machine namespace) of PID 1 of the host's PID namespace. */
  readonly initPid: number;
  /** The plugin running in it, if any. */
  readonly plugin: RigPlugin | undefined;
  /** Runs the Docker CLI against this host; returns stdout, throws on failure. */
  docker(args: readonly string[], opts?: RunOptions): Promise<string>;
  /** Runs the Docker CLI against this host; never throws. */
  dockerOk(args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Runs a command in the host's network namespace; returns stdout, throws on failure. */
  exec(cmd: string, args: readonly string[], opts?: RunOptions): Promise<string>;
  execOk(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** The PID (machine namespace) of a container's main process: /proc/PID/ns/net is its network namespace. */
  containerPid(container: string): Promise<number>;
  /** Runs a command in the network namespace of one of its containers (by name or ID). */
  execInContainerNetns(container: string, cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Starts tsbridge in the host (env over the rig's defaults); resolves once it answers. */
  startPlugin(env?: Record<string, string>): Promise<RigPlugin>;
  /** POSTs to the plugin's socket as Docker does (reached through the host's mount namespace). */
  pluginCall(method: string, body?: unknown): ReturnType<typeof pluginCall>;
  /** The host dies: SIGKILL to its whole PID namespace (plugin, dockerd, containerd, containers), then its network namespace goes. */
  kill(): Promise<void>;
}

export interface Rig {
  readonly id: string;
  readonly dir: string;
  /** The underlay namespace (bridge, etcd, the "world" the hosts' containers can reach). */
  readonly underlay: string;
  /** The underlay namespace's address on the hosts' subnet (etcd listens there). */
  readonly underlayAddr: string;
  /** The router namespace. */
  readonly router: string;
  /** The etcd endpoint the plugins use (on the underlay), and the one the tests use (over the /30). */
  readonly etcdEndpoint: string;
  readonly etcdTestEndpoint: string;
  readonly etcd: EtcdServer;
  readonly hosts: RigHost[];
  /** How long each phase of the bring-up took (ms). */
  readonly timings: Record<string, number>;
  /** Runs a command in the underlay namespace. */
  underlayExec(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Stops everything and removes everything. Idempotent; throws when something could not be removed. */
  destroy(): Promise<void>;
}

// ---- processes ----------------------------------------------------------------------------

function statField(pid: number, field: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[field - 3];
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  const state = statField(pid, 3);
  return state !== undefined && state !== 'Z' && state !== 'X';
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`rig: timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  try {
    await waitUntil(() => !isAlive(pid), timeoutMs, `process ${pid} to exit`);
    return true;
  } catch {
    return false;
  }
}

// ---- addresses ----------------------------------------------------------------------------

function randomOctet(lo: number, hi: number): number {
  return lo + (parseInt(randomId(), 16) % (hi - lo + 1));
}

/**
 * Second octets of 10.x the rig's underlay may use: none that a test, a bench or the docs use for
 * networks of their own (the overlay tests' 10.230–10.233, the e2e tiers' 10.210–10.225 and
 * others) — the rig runs beside the e2e tiers, and a host whose default route's next hop lies in
 * an overlay's subnet has that overlay refused (rightly).
 */
const UNDERLAY_OCTETS = [226, 227, 228, 229, 234, 235, 236, 237, 238, 239, 243, 244, 245, 246, 247, 248, 249];

/** Two /24s for the underlay in 10.x (x from UNDERLAY_OCTETS) and a /30 in 198.18/15 no host route overlaps. */
async function pickRanges(): Promise<{ a: string; b: string; link: string }> {
  const routes = await sh('ip', ['-4', 'route', 'show', 'table', 'all']);
  const resolv = existsSync('/etc/resolv.conf') ? readFileSync('/etc/resolv.conf', 'utf8') : '';
  const taken = (net: string) => routes.includes(net) || resolv.includes(net);
  for (let i = 0; i < 50; i++) {
    const second = UNDERLAY_OCTETS[randomOctet(0, UNDERLAY_OCTETS.length - 1)]!;
    const third = randomOctet(0, 254);
    const a = `10.${second}.${third}`;
    const b = `10.${second}.${third + 1}`;
    const link = `198.${randomOctet(18, 19)}.${randomOctet(0, 255)}.${4 * randomOctet(0, 63)}`;
    // Whole 10.x/16 and 198.x.y/24 checks: coarser than needed, never wrong.
    if (!taken(`10.${second}.`) && !taken(link.slice(0, link.lastIndexOf('.') + 1)) && second !== 255) {
      return { a, b, link };
    }
  }
  throw new Error('rig: no free underlay range found');
}

function plus(prefix: string, last: number): string {
  return `${prefix}.${last}`;
}

// ---- the rig ------------------------------------------------------------------------------

/** Throws a clear error unless what the rig needs is installed. */
export async function requireRig(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the multi-host rig needs root');
  const missing: string[] = [];
  if (!existsSync(`${ENGINES_DIR}/28/usr/sbin/dockerd`)) missing.push(`Docker 28 in ${ENGINES_DIR}/28 (bash scripts/engine.sh install 28)`);
  for (const bin of ['etcd', 'nsenter', 'unshare', 'runc']) {
    if ((await shOk('sh', ['-c', `command -v ${bin}`])).exitCode !== 0) missing.push(bin);
  }
  if (!existsSync(path.join(REPO_ROOT, 'dist', 'src', 'main.js'))) missing.push('dist/src/main.js (npm run build)');
  if (missing.length) throw new Error(`the multi-host rig needs: ${missing.join('; ')} — scripts/install-deps.sh installs the packages`);
}

export async function createRig(opts: RigOptions = {}): Promise<Rig> {
  await requireRig();
  const hostCount = opts.hosts ?? 3;
  const routed = Math.min(opts.routed ?? 1, hostCount - 1);
  const id = randomId();
  const dir = path.join(RIG_ROOT, id);
  await mkdir(dir, { recursive: true });
  const manifest = path.join(dir, 'manifest');
  const record = (line: string) => appendFile(manifest, `${line}\n`);
  const recordPid = (pid: number, what: string) => record(`pid ${pid} ${statField(pid, 22)} ${what}`);
  const timings: Record<string, number> = {};
  const t0 = Date.now();
  const mark = (phase: string, since: number) => (timings[phase] = Date.now() - since);
  const say = (s: string) => opts.verbose && console.log(`[rig ${id}] ${s}`);

  const ranges = await pickRanges();
  const A = ranges.a;
  const B = ranges.b;
  const ul = `tsbr-${id}-ul`;
  const rt = `tsbr-${id}-rt`;
  const rootLink = `tsbr${id}`;
  const linkNet = ranges.link.slice(0, ranges.link.lastIndexOf('.'));
  const linkBase = Number(ranges.link.slice(ranges.link.lastIndexOf('.') + 1));
  const rootAddr = `${linkNet}.${linkBase + 1}`;
  const ulLinkAddr = `${linkNet}.${linkBase + 2}`;
  const underlayAddr = plus(A, 1);
  const ip = (args: string[]) => sh('ip', args);
  const inNs = (ns: string, args: string[]) => sh('ip', ['-n', ns, ...args]);
  const sysctl = (ns: string, key: string, value: string) =>
    sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `${key}=${value}`]);

  const hosts: HostImpl[] = [];
  let etcd: EtcdServer | undefined;
  let destroyed = false;

  const rig: Rig = {
    id,
    dir,
    underlay: ul,
    underlayAddr,
    router: rt,
    etcdEndpoint: `http://${underlayAddr}:2379`,
    etcdTestEndpoint: `http://${ulLinkAddr}:2379`,
    get etcd() {
      return etcd!;
    },
    hosts,
    timings,
    underlayExec: (cmd, args, o) => shOk('ip', ['netns', 'exec', ul, cmd, ...args], o),
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      const t = Date.now();
      // Clean stops first (dockerd stops its containers), then the manifest does the rest.
      await Promise.all(hosts.map((h) => h.stop().catch(() => undefined)));
      await etcd?.dispose().catch(() => undefined); // stopped, and its data directory removed
      const r = await shOk('bash', [path.join(REPO_ROOT, 'scripts', 'rig-down.sh'), dir], { timeoutMs: 120_000 });
      timings.destroy = Date.now() - t;
      if (r.exitCode !== 0) throw new Error(`rig-down.sh ${dir} failed: ${r.stdout}\n${r.stderr}`);
    },
  };

  try {
    let t = Date.now();
    // The underlay: a bridge in its own namespace, the router, the machine's /30 to etcd.
    for (const ns of [ul, rt]) {
      await record(`netns ${ns}`);
      await ip(['netns', 'add', ns]);
      await inNs(ns, ['link', 'set', 'lo', 'up']);
    }
    await inNs(ul, ['link', 'add', 'ul0', 'type', 'bridge']);
    await inNs(ul, ['addr', 'add', `${underlayAddr}/24`, 'dev', 'ul0']);
    await inNs(ul, ['link', 'set', 'ul0', 'up']);
    await record(`link ${rootLink}`);
    await ip(['link', 'add', rootLink, 'type', 'veth', 'peer', 'name', 'tests', 'netns', ul]);
    await ip(['addr', 'add', `${rootAddr}/30`, 'dev', rootLink]);
    await ip(['link', 'set', rootLink, 'up']);
    await inNs(ul, ['addr', 'add', `${ulLinkAddr}/30`, 'dev', 'tests']);
    await inNs(ul, ['link', 'set', 'tests', 'up']);
    await inNs(rt, ['link', 'add', 'uplink', 'type', 'veth', 'peer', 'name', 'rt', 'netns', ul]);
    await inNs(ul, ['link', 'set', 'rt', 'master', 'ul0', 'up']);
    await inNs(rt, ['addr', 'add', `${plus(A, 254)}/24`, 'dev', 'uplink']);
    await inNs(rt, ['link', 'set', 'uplink', 'up']);
    await inNs(rt, ['link', 'add', 'b0', 'type', 'bridge']);
    await inNs(rt, ['addr', 'add', `${plus(B, 1)}/24`, 'dev', 'b0']);
    await inNs(rt, ['link', 'set', 'b0', 'up']);
    await sysctl(rt, 'net.ipv4.ip_forward', '1');
    await inNs(ul, ['route', 'add', `${B}.0/24`, 'via', plus(A, 254)]);
    mark('underlay', t);

    t = Date.now();
    etcd = await startEtcd({ netns: ul, host: underlayAddr, extraListen: [ulLinkAddr] });
    await recordPid(etcd.pid!, 'etcd');
    mark('etcd', t);

    t = Date.now();
    const specs = Array.from({ length: hostCount }, (_, i) => {
      const inB = i >= hostCount - routed;
      const net = inB ? B : A;
      return {
        name: `h${i + 1}`,
        addr: plus(net, 11 + i),
        subnet: `${net}.0/24`,
        router: inB ? plus(B, 1) : plus(A, 254),
        switchNs: inB ? rt : ul,
        bridge: inB ? 'b0' : 'ul0',
      };
    });
    for (const s of specs) {
      const h = new HostImpl(rig, s.name, `tsbr-${id}-${s.name}`, s.addr, s.subnet, s.router, path.join(dir, s.name), recordPid, say);
      hosts.push(h);
      await record(`netns ${h.netns}`);
      await record(`cgroup ${h.cgroupParent}`);
      await ip(['netns', 'add', h.netns]);
      await inNs(h.netns, ['link', 'set', 'lo', 'up']);
      await inNs(s.switchNs, ['link', 'add', s.name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.netns]);
      await inNs(s.switchNs, ['link', 'set', s.name, 'master', s.bridge, 'up']);
      await inNs(h.netns, ['addr', 'add', `${s.addr}/24`, 'dev', 'eth0']);
      await inNs(h.netns, ['link', 'set', 'eth0', 'up']);
      await inNs(h.netns, ['route', 'add', 'default', 'via', s.router]);
    }
    mark('hosts-network', t);

    t = Date.now();
    await Promise.all(hosts.map((h) => h.boot()));
    mark('dockerd', t);

    if (opts.image !== false) {
      t = Date.now();
      const first = hosts[0]!;
      await sh('bash', [path.join(REPO_ROOT, 'scripts', 'test-image.sh')], {
        env: { DOCKER_HOST: first.dockerHost, PATH: `${ENGINE28_PATH}:${process.env.PATH}`, TSBRIDGE_TEST_IMAGE: TEST_IMAGE },
        timeoutMs: 120_000,
      });
      const tar = path.join(dir, 'image.tar');
      await first.docker(['save', '-o', tar, TEST_IMAGE]);
      await Promise.all(hosts.slice(1).map((h) => h.docker(['load', '-q', '-i', tar])));
      await rm(tar, { force: true });
      mark('image', t);
    }

    if (opts.plugin !== false) {
      t = Date.now();
      await Promise.all(hosts.map((h) => h.startPlugin(opts.plugin ? opts.plugin.env : undefined)));
      mark('plugins', t);
    }
    timings.total = Date.now() - t0;
    say(`up in ${timings.total} ms: ${JSON.stringify(timings)}`);
    return rig;
  } catch (e) {
    await rig.destroy().catch((err: Error) => console.warn(`rig ${id}: teardown after a failed start: ${err.message}`));
    throw e;
  }
}

class HostImpl implements RigHost {
  readonly dockerHost: string;
  readonly cgroupParent: string;
  private unsharePid = 0;
  private unshare: ReturnType<typeof execa> | undefined;
  private init = 0;
  private dockerdPid = 0;
  private current: PluginImpl | undefined;
  private dead = false;

  constructor(
    private readonly rig: Rig,
    readonly name: string,
    readonly netns: string,
    readonly addr: string,
    readonly subnet: string,
    readonly router: string,
    readonly dir: string,
    private readonly recordPid: (pid: number, what: string) => Promise<void>,
    private readonly say: (s: string) => void,
  ) {
    this.dockerHost = `unix://${dir}/docker.sock`;
    this.cgroupParent = `/tsbridge-rig-${rig.id}-${name}`;
  }

  get alive() {
    return !this.dead;
  }
  get initPid() {
    return this.init;
  }
  get plugin() {
    return this.current;
  }

  async boot(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const log = createWriteStream(path.join(this.dir, 'boot.log'));
    const p = execa(
      'nsenter',
      [`--net=/run/netns/${this.netns}`, 'unshare', '--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', '--mount-proc',
        'bash', path.join(REPO_ROOT, 'scripts', 'rig-host.sh'), this.dir, ENGINE28_PATH, this.cgroupParent],
      { reject: false, buffer: false, stdin: 'ignore', detached: true, cleanup: false },
    );
    p.stdout!.pipe(log, { end: false });
    p.stderr!.pipe(log, { end: false });
    this.unsharePid = p.pid!;
    this.unshare = p;
    await this.recordPid(this.unsharePid, `${this.name} unshare`);
    void p.then(() => log.end());
    // PID 1 of the host's namespace is unshare's child; dockerd is its child.
    await waitUntil(() => childrenOf(this.unsharePid).length > 0 || !isAlive(this.unsharePid), 10_000, `${this.name}'s PID namespace`);
    this.init = childrenOf(this.unsharePid)[0] ?? 0;
    // Killing PID 1 of the namespace (rather than unshare) lets unshare reap it: no zombie is left.
    if (this.init) await this.recordPid(this.init, `${this.name} init`);
    const ready = async () => {
      if (!isAlive(this.unsharePid)) throw new Error(`host ${this.name} exited during start-up: ${tail(path.join(this.dir, 'boot.log'))}\n${tail(path.join(this.dir, 'dockerd.log'))}\n${tail(path.join(this.dir, 'containerd.log'))}`);
      return (await this.dockerOk(['version', '--format', '{{.Server.Version}}'], { timeoutMs: 5000 })).exitCode === 0;
    };
    await waitUntil(ready, 60_000, `dockerd of ${this.name}`);
    this.dockerdPid = childrenOf(this.init).find((c) => commOf(c) === 'dockerd') ?? 0;
    this.say(`${this.name} (${this.addr}) up: dockerd ${this.dockerdPid}`);
  }

  docker(args: readonly string[], opts: RunOptions = {}): Promise<string> {
    return sh('docker', args, this.dockerOpts(opts));
  }
  dockerOk(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return shOk('docker', args, this.dockerOpts(opts));
  }
  private dockerOpts(opts: RunOptions): RunOptions {
    return { timeoutMs: DOCKER_TIMEOUT_MS, ...opts, env: { PATH: `${ENGINE28_PATH}:${process.env.PATH}`, DOCKER_HOST: this.dockerHost, ...opts.env } };
  }
  exec(cmd: string, args: readonly string[], opts?: RunOptions): Promise<string> {
    return sh('ip', ['netns', 'exec', this.netns, cmd, ...args], opts);
  }
  execOk(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
    return shOk('ip', ['netns', 'exec', this.netns, cmd, ...args], opts);
  }
  async containerPid(container: string): Promise<number> {
    // The PID docker reports is in the host's PID namespace; find it in ours through NSpid.
    const nsPid = Number(await this.docker(['inspect', '-f', '{{.State.Pid}}', container]));
    const pid = nsPid > 0 ? machinePid(this.init, nsPid) : undefined;
    if (!pid) throw new Error(`container ${container} on ${this.name}: no process ${nsPid} in the host's PID namespace`);
    return pid;
  }
  async execInContainerNetns(container: string, cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> {
    return shOk('nsenter', [`--net=/proc/${await this.containerPid(container)}/ns/net`, cmd, ...args], opts);
  }

  async startPlugin(env: Record<string, string> = {}): Promise<RigPlugin> {
    if (this.current?.running) throw new Error(`host ${this.name}: the plugin already runs`);
    const fullEnv = {
      TSBRIDGE_SOCKET: '/run/docker/plugins/tsbridge.sock',
      TSBRIDGE_STATE_DIR: path.join(this.dir, 'state'),
      TSBRIDGE_LOG_LEVEL: 'debug',
      TSBRIDGE_ETCD_ENDPOINTS: this.rig.etcdEndpoint,
      ...env,
    };
    await mkdir(fullEnv.TSBRIDGE_STATE_DIR, { recursive: true });
    const plugin = new PluginImpl(this, fullEnv, path.join(this.dir, 'plugin.log'), this.say);
    await plugin.launch();
    await this.recordPid(plugin.pid, `${this.name} plugin`);
    this.current = plugin;
    return plugin;
  }

  pluginCall(method: string, body?: unknown) {
    return pluginCall(`/proc/${this.init}/root/run/docker/plugins/tsbridge.sock`, method, body);
  }

  async kill(): Promise<void> {
    if (this.dead) return;
    this.dead = true;
    // SIGKILL to PID 1 of the host's PID namespace kills every process in it; unshare, its parent,
    // then reaps it and exits (and we reap unshare).
    if (this.init && isAlive(this.init)) process.kill(this.init, 'SIGKILL');
    const exited = this.unshare ? await Promise.race([this.unshare.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 20_000))]) : true;
    if (!exited && isAlive(this.unsharePid)) process.kill(this.unsharePid, 'SIGKILL');
    if (this.init && !(await waitGone(this.init, 20_000))) throw new Error(`host ${this.name}: PID 1 of its namespace would not die`);
    if (this.current) await this.current.waitExit(10_000);
    if (existsSync(`/run/netns/${this.netns}`)) await sh('ip', ['netns', 'del', this.netns]);
  }

  /** A clean stop: dockerd (it stops its containers, telling the plugin), the plugin, then the namespace. */
  async stop(): Promise<void> {
    if (this.dead) return;
    if (this.dockerdPid && isAlive(this.dockerdPid)) {
      process.kill(this.dockerdPid, 'SIGTERM');
      await waitGone(this.dockerdPid, 30_000);
    }
    await this.current?.stop().catch(() => undefined);
    await this.kill();
  }
}

/** The machine-namespace PID of process `nsPid` of the PID namespace whose PID 1 is `init`. */
function machinePid(init: number, nsPid: number): number | undefined {
  const seen = new Set<number>();
  const walk = (pid: number): number | undefined => {
    if (seen.has(pid)) return undefined;
    seen.add(pid);
    try {
      const m = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      const ids = m ? m[1]!.split(/\s+/).map(Number) : [];
      if (ids[1] === nsPid) return pid;
    } catch {
      return undefined;
    }
    for (const c of childrenOf(pid)) {
      const found = walk(c);
      if (found) return found;
    }
    return undefined;
  };
  return walk(init);
}

class PluginImpl implements RigPlugin {
  private proc: ReturnType<typeof execa> | undefined;
  private nodePid = 0;
  private readonly lines: string[] = [];
  private log: WriteStream;

  constructor(
    private readonly host: HostImpl,
    private readonly env: Record<string, string>,
    logFile: string,
    private readonly say: (s: string) => void,
  ) {
    this.log = createWriteStream(logFile, { flags: 'a' });
  }

  get pid() {
    return this.nodePid;
  }
  get running() {
    return this.nodePid !== 0 && isAlive(this.nodePid);
  }
  logs() {
    return [...this.lines];
  }

  async launch(): Promise<void> {
    // nsenter forks into the PID namespace: node is its child.
    const p = execa(
      'nsenter',
      ['--target', String(this.host.initPid), '--net', '--mount', '--pid', `--wd=${REPO_ROOT}`, '--', process.execPath, path.join(REPO_ROOT, 'dist', 'src', 'main.js')],
      { reject: false, buffer: false, stdin: 'ignore', env: this.env, cleanup: false },
    );
    this.proc = p;
    for (const stream of [p.stdout!, p.stderr!]) {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => {
        const ls = (partial + d).split('\n');
        partial = ls.pop()!;
        for (const l of ls) {
          this.lines.push(l);
          this.log.write(`${l}\n`);
          this.say(`${this.host.name} plugin: ${l}`);
        }
      });
    }
    await waitUntil(() => childrenOf(p.pid!).length > 0 || !isAlive(p.pid!), 10_000, `${this.host.name}'s plugin process`);
    this.nodePid = childrenOf(p.pid!)[0] ?? 0;
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (!this.running) throw new Error(`plugin on ${this.host.name} exited before it was ready:\n${this.lines.slice(-30).join('\n')}`);
      const ok = await this.host.pluginCall('Plugin.Activate').then((r) => r.status === 200, () => false);
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`plugin on ${this.host.name} did not answer within 20 s:\n${this.lines.slice(-30).join('\n')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async waitExit(timeoutMs: number): Promise<void> {
    if (this.nodePid) await waitGone(this.nodePid, timeoutMs);
    if (this.proc) await Promise.race([this.proc, new Promise((r) => setTimeout(r, 2000))]);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<void> {
    if (!this.running) return;
    process.kill(this.nodePid, signal);
    if (!(await waitGone(this.nodePid, timeoutMs))) {
      process.kill(this.nodePid, 'SIGKILL');
      await waitGone(this.nodePid, 5000);
    }
    await this.waitExit(5000);
  }

  kill9(): Promise<void> {
    return this.stop('SIGKILL', 5000);
  }
}

function tail(file: string, n = 15): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}
