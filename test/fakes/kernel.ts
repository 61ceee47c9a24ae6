/**
 * A strict in-memory kernel for unit tests.
 *
 * Links and sysctls are a model that refuses what Linux refuses: a veth on a missing bridge, a
 * route through a missing link, a per-interface sysctl (conf or neigh) of a missing interface.
 * Deleting either end of a veth removes the pair, and deleting a link removes its routes and
 * per-interface sysctls; an unreachable route goes with no link, only when deleted.
 *
 * The firewall is the real one (NftFirewall, with the real rule rendering) over a FakeRunner whose
 * `nft -f` is the strict nftables model of ./nft.ts: a script nft would refuse fails here too, and
 * `nft` (the model) can be compared with the model of the full ruleset the state calls for — so a
 * dropped anti-spoofing element or map entry fails a test.
 *
 * Host interfaces tsbridge did not make (addHostInterface: a NIC with addresses and routes) can
 * be inspected, taken over as a bridge port (their recorded addresses and routes move to the
 * bridge) and given back; deleting a bridge lets its ports go, with what the bridge held.
 *
 * `failNext(method)` makes the next call of that method throw; with `{ partial: true }` it first
 * does its work (a command that half-succeeded). `snapshot()` describes everything in a form
 * `toEqual` can compare.
 */
import { TsbridgeError } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import type { RunResult, Runner } from '../../src/kernel/real/exec.js';
import { NftFirewall } from '../../src/kernel/real/firewall.js';
import { DEFAULT_TABLE } from '../../src/kernel/rules/nft.js';
import { describeRoute, sameAddress, sameRoute } from '../../src/kernel/held.js';
import type {
  BridgeSpec, Firewall, HeldAddress, HeldRoute, InterfaceState, Kernel, KernelInspect, LinkDetail, LinkInfo, Links, RemoteEndpoint, RouteSpec, Sysctl, UplinkSpec, VethSpec, VxlanSpec,
} from '../../src/kernel/types.js';
import { NftError, NftModel, type NftDump } from './nft.js';

export type KernelMethod =
  | 'ensureBridge'
  | 'ensureVeth'
  | 'attachToBridge'
  | 'ensureRoutes'
  | 'deleteRoutes'
  | 'deleteLinks'
  | 'ensureVxlan'
  | 'remoteEndpoints'
  | 'changeRemoteEndpoints'
  | 'list'
  | 'inspect'
  | 'adoptUplink'
  | 'releaseUplink'
  | 'apply'
  | 'addEndpoint'
  | 'removeEndpoint'
  | 'addPorts'
  | 'removePorts'
  | 'refresh'
  | 'flushConntrack'
  | 'sysctl';

export interface FakeBridge {
  name: string;
  mtu: number;
  mac: string;
  /** Addresses with prefix length, sorted. */
  addresses: string[];
}

export interface FakeVeth {
  host: string;
  peer: string;
  /** The bridge the host end is enslaved to; null without one, or once that bridge was deleted. */
  bridge: string | null;
  mtu: number;
  /** MAC of the container end. */
  mac: string;
  /** Addresses the host end holds, sorted. */
  hostAddresses: string[];
}

/** A host interface tsbridge did not make (a NIC), with what it holds. */
export interface FakeNic {
  name: string;
  kind: string;
  linkType: string;
  mtu: number;
  mac: string;
  up: boolean;
  master: string | null;
  /** Addresses in the order they were added (primary first). */
  addresses: HeldAddress[];
  /** What cannot be moved (as InterfaceState.unmovable). */
  unmovable: string[];
}

/** A VXLAN device and the remote endpoints programmed on it (by address). */
export interface FakeVxlan extends VxlanSpec {
  /** Its bridge; null once that bridge was deleted. */
  master: string;
  remotes: RemoteEndpoint[];
}

export interface KernelSnapshot {
  bridges: FakeBridge[];
  veths: FakeVeth[];
  vxlans: FakeVxlan[];
  /** Routes as `to dev` (`to unreachable` for an unreachable route), sorted. */
  routes: string[];
  /** Host interfaces tsbridge did not make, sorted by name. */
  nics: FakeNic[];
  /** Routes held by interfaces (a NIC's, or moved to a bridge) as `describeRoute dev DEV`, sorted. */
  heldRoutes: string[];
  /** Links tsbridge did not make (see addForeignLink). */
  foreign: LinkInfo[];
  firewall: {
    /** True while tsbridge's tables exist. */
    tables: boolean;
    /** Interfaces in the `bridges` set. */
    bridges: string[];
    /** Published ports, one line per map element: `proto host:port -> container:port`, sorted. */
    ports: string[];
    /** Host-side veths whose traffic to other ports of their bridge is dropped. */
    noIcc: string[];
    /** Host-side veths under anti-spoofing. */
    guarded: string[];
  };
  /** Everything nftables holds (./nft.ts). */
  nft: NftDump;
  sysctls: Record<string, string>;
}

interface Injected {
  partial: boolean;
  error: Error;
  when: (args: unknown[]) => boolean;
}

export interface CallRecord {
  method: KernelMethod;
  args: unknown[];
}

/**
 * A deep copy of plain data, read through any proxy (the Db hands operations a tracked view of
 * the state, and structuredClone refuses proxies).
 */
function plainCopy<T>(v: T): T {
  if (typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) return v.map((x) => plainCopy(x)) as T;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plainCopy(x)])) as T;
}

function kernelError(op: string, detail: string): TsbridgeError {
  return new TsbridgeError('KERNEL', { op, detail });
}

function normalizeKey(key: string): string {
  return key.replace(/^\/proc\/sys\//, '').replace(/\//g, '.');
}

const unquote = (s: string) => s.replace(/^"(.*)"$/, '$1');
const bracket = (ip: string) => (ip.includes(':') ? `[${ip}]` : ip);

/**
 * The commands NftFirewall runs, answered like the real ones: `nft -f -` through the model,
 * `iptables-save` / `ip6tables-save` from `saves` (empty: no filter table, so the forward shim has
 * nothing to do), `conntrack -L` with nothing listed. Anything else is refused. A failing command
 * throws as ExecRunner does.
 */
export class FakeRunner implements Runner {
  readonly commands: string[] = [];
  saves = { v4: '', v6: '' };
  private readonly commandFailures: { cmd: string; error: Error }[] = [];

  /**
   * The next run of `cmd` throws `error` (default: as ExecRunner does for a missing binary),
   * e.g. `failCommand('conntrack')`, or a TIMEOUT error for a command that hung.
   */
  failCommand(cmd: string, error?: Error): void {
    this.commandFailures.push({ cmd, error: error ?? new TsbridgeError('KERNEL', { op: cmd, detail: `spawn ${cmd} ENOENT` }) });
  }

  constructor(readonly nft: NftModel) {}

  async run(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): Promise<RunResult> {
    await Promise.resolve();
    this.commands.push([cmd, ...args].join(' '));
    const failing = this.commandFailures.findIndex((f) => f.cmd === cmd);
    if (failing >= 0) throw this.commandFailures.splice(failing, 1)[0]!.error;
    const r = this.answer(cmd, args, opts.input ?? '');
    if (r.exitCode !== 0 && !opts.allowFail) {
      throw new TsbridgeError('KERNEL', { op: `${cmd} ${args.join(' ')}`.slice(0, 200), detail: (r.stderr || `exit ${r.exitCode}`).trim() });
    }
    return r;
  }

  private answer(cmd: string, args: string[], input: string): RunResult {
    const ok = (stdout = ''): RunResult => ({ stdout, stderr: '', exitCode: 0 });
    if (cmd === 'nft' && args.join(' ') === '-f -') {
      try {
        this.nft.apply(input);
        return ok();
      } catch (e) {
        if (e instanceof NftError) return { stdout: '', stderr: e.message, exitCode: 1 };
        throw e;
      }
    }
    if (cmd === 'nft' && args[0] === '-j' && args[1] === 'list' && args[2] === 'table') {
      const json = this.nft.listJson(args[3]!, args[4]!);
      return json === null ? { stdout: '', stderr: 'Error: No such file or directory; did you mean table ‘filter’ in family ip?', exitCode: 1 } : ok(json);
    }
    if (cmd === 'iptables-save') return ok(this.saves.v4);
    if (cmd === 'ip6tables-save') return ok(this.saves.v6);
    if (cmd === 'conntrack' && args[0] === '-L') return { stdout: '', stderr: 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.', exitCode: 1 };
    return { stdout: '', stderr: `fake runner: ${cmd}: command not expected`, exitCode: 127 };
  }
}

export class FakeKernel implements Kernel {
  readonly bridges = new Map<string, FakeBridge>();
  /** Keyed by the host end's name. */
  readonly veths = new Map<string, FakeVeth>();
  readonly vxlans = new Map<string, FakeVxlan>();
  /** Route destination → device ('' for an unreachable route). */
  readonly routes = new Map<string, string>();
  readonly foreign = new Map<string, LinkInfo>();
  /** Host interfaces with addresses and routes (addHostInterface). */
  readonly nics = new Map<string, FakeNic>();
  /** Routes through an interface (a NIC's own, or moved to a bridge), by interface. */
  readonly heldRoutes = new Map<string, HeldRoute[]>();
  /** Addresses moved onto a bridge, with their details, by bridge. */
  private readonly bridgeHeld = new Map<string, HeldAddress[]>();
  readonly sysctls = new Map<string, string>();
  /** nftables, as the firewall's scripts left it. */
  readonly nft = new NftModel();
  readonly runner = new FakeRunner(this.nft);
  /** Every call, in order, with its arguments (deep copies). */
  readonly calls: CallRecord[] = [];
  /** Entries passed to flushConntrack, in order. */
  readonly conntrackFlushes: { proto: string; hostPort: number }[] = [];

  private readonly failures = new Map<KernelMethod, Injected[]>();
  /** failCall: calls still to let through before the injected failure (-1: none armed). */
  private countdown = -1;
  private armed: { partial: boolean; error: Error } | null = null;

  readonly links: Links;
  readonly firewall: Firewall;
  readonly sysctl: Sysctl;
  readonly inspect: KernelInspect;
  /** Links someone set down (`ip link set down`); ensureBridge / attachToBridge bring them up. */
  readonly down = new Set<string>();

  constructor(init: { sysctls?: Record<string, string>; table?: string } = {}) {
    for (const [k, v] of Object.entries(init.sysctls ?? {})) this.sysctls.set(normalizeKey(k), v);
    this.table = init.table ?? DEFAULT_TABLE;
    this.links = {
      ensureBridge: (spec) => this.call('ensureBridge', [spec], () => this.doEnsureBridge(spec)),
      ensureVeth: (spec) => this.call('ensureVeth', [spec], () => this.doEnsureVeth(spec)),
      attachToBridge: (host, bridge) => this.call('attachToBridge', [host, bridge], () => this.doAttach(host, bridge)),
      ensureRoutes: (routes) => this.call('ensureRoutes', [routes], () => this.doEnsureRoutes(routes)),
      deleteRoutes: (routes) => this.call('deleteRoutes', [routes], () => this.doDeleteRoutes(routes)),
      deleteLinks: (names) => this.call('deleteLinks', [names], () => this.doDeleteLinks(names)),
      ensureVxlan: (spec) => this.call('ensureVxlan', [spec], () => this.doEnsureVxlan(spec)),
      remoteEndpoints: (vxlan) => this.call('remoteEndpoints', [vxlan], () => plainCopy(this.vxlans.get(vxlan)?.remotes ?? [])),
      changeRemoteEndpoints: (vxlan, change) => this.call('changeRemoteEndpoints', [vxlan, change], () => this.doChangeRemotes(vxlan, change)),
      list: () => this.call('list', [], () => this.doList()),
      inspect: (name) => this.call('inspect', [name], () => this.doInspect(name)),
      adoptUplink: (spec) => this.call('adoptUplink', [spec], () => this.doAdopt(spec)),
      releaseUplink: (spec) => this.call('releaseUplink', [spec], () => this.doRelease(spec)),
    };
    const real = new NftFirewall(this.runner, silentLogger(), undefined, undefined, { onReapply: (r) => this.reapplied.push(r) });
    this.nftFirewall = real;
    this.firewall = {
      apply: (view) => this.call('apply', [view], () => real.apply(view)),
      addEndpoint: (ep) => this.call('addEndpoint', [ep], () => real.addEndpoint(ep)),
      removeEndpoint: (ep) => this.call('removeEndpoint', [ep], () => real.removeEndpoint(ep)),
      addPorts: (ports) => this.call('addPorts', [ports], () => real.addPorts(ports)),
      removePorts: (ports) => this.call('removePorts', [ports], () => real.removePorts(ports)),
      refresh: (view) => this.call('refresh', [view], () => real.refresh(view)),
      diagnose: (view) => real.diagnose(view),
      flushConntrack: (entries) =>
        this.call('flushConntrack', [entries], async () => {
          this.conntrackFlushes.push(...entries.map((e) => ({ proto: e.proto, hostPort: e.hostPort })));
          await real.flushConntrack(entries);
        }),
    };
    this.sysctl = {
      ensure: (key, value) => this.call('sysctl', [key, value], () => this.doSysctl(key, value)),
    };
    this.inspect = {
      links: async () => this.details(),
      routes: async () => [...this.routes].map(([to, dev]): RouteSpec => (dev ? { to, dev } : { to, unreachable: true })),
      sysctl: async (key) => this.sysctls.get(normalizeKey(key)) ?? (/^net\.ipv[46]\.conf\.([^.]+)\./.test(normalizeKey(key)) ? null : '0'),
    };
  }

  /** The real firewall behind `firewall` (its re-application counts). */
  readonly nftFirewall: NftFirewall;
  /** Each re-application after an outside change, with its reason, in order (the metrics hook). */
  readonly reapplied: string[] = [];

  /** The nftables table name the firewall writes (`tsbridge` unless another instance's). */
  readonly table: string;

  /**
   * The next call of `method` (whose arguments satisfy `when`, if given) throws `error`,
   * a KERNEL error by default; with `partial` it first does its work.
   */
  failNext(method: KernelMethod, opts: { partial?: boolean; error?: Error; when?: (args: unknown[]) => boolean } = {}): void {
    const list = this.failures.get(method) ?? [];
    list.push({ partial: opts.partial ?? false, error: opts.error ?? kernelError(method, 'injected failure'), when: opts.when ?? (() => true) });
    this.failures.set(method, list);
  }

  /**
   * Lets `n` more calls (of any method) through, then fails the next one: a way to fail every
   * step of an operation in turn. With `partial` the failing call first does its work.
   */
  failCall(n: number, opts: { partial?: boolean; error?: Error } = {}): void {
    this.countdown = n;
    this.armed = { partial: opts.partial ?? false, error: opts.error ?? kernelError('call', `injected failure at call ${n}`) };
  }

  /** True while a failCall is armed and has not fired. */
  get failCallPending(): boolean {
    return this.armed !== null;
  }

  /** Injected failures not consumed yet. */
  pendingFailures(): KernelMethod[] {
    return [...this.failures.entries()].flatMap(([m, l]) => l.map(() => m));
  }

  /** A link some other program made (e.g. the host's eth0, a user's bridge). */
  addForeignLink(name: string, kind = 'dummy'): void {
    this.foreign.set(name, { name, kind, master: null, owned: false });
  }

  /** Container ends of veths Docker moved into a container's namespace: not in the host's link list. */
  readonly inContainers = new Set<string>();

  /** What Docker does after Join: moves the container end of the veth into the container's namespace. */
  peerIntoContainer(peer: string): void {
    if (this.vethEndOf(peer)) this.inContainers.add(peer);
  }

  /** What Docker does when it tears a container down: moves its end back into the host namespace. */
  peerBackToHost(peer: string): void {
    this.inContainers.delete(peer);
  }

  /** A host interface some other program made (a NIC), holding these addresses and routes. */
  addHostInterface(
    name: string,
    init: Partial<Omit<FakeNic, 'name'>> & { routes?: HeldRoute[] } = {},
  ): void {
    const { routes, ...rest } = init;
    this.nics.set(name, {
      name,
      kind: '',
      linkType: 'ether',
      mtu: 1500,
      mac: '52:54:00:12:34:56',
      up: true,
      master: null,
      addresses: [],
      unmovable: [],
      ...plainCopy(rest),
    });
    if (routes?.length) this.heldRoutes.set(name, plainCopy(routes));
  }

  /** Simulates the death of a container: its namespace, and with it the veth pair, disappears. */
  removeVethBehindOurBack(hostName: string): void {
    const v = this.veths.get(hostName);
    if (v) this.removeVeth(v);
  }

  callsOf(method: KernelMethod): unknown[][] {
    return this.calls.filter((c) => c.method === method).map((c) => c.args);
  }

  /** Published ports as in snapshot().firewall.ports. */
  publishedPorts(): string[] {
    const t = `inet ${this.table}`;
    const out: string[] = [];
    for (const fam of [4, 6] as const) {
      const any = fam === 4 ? '0.0.0.0' : '[::]';
      for (const e of this.nft.elements(t, `ports${fam}`)) {
        const m = /^(\w+) \. (\d+) : (\S+) \. (\d+)$/.exec(e)!;
        out.push(`${m[1]} ${any}:${m[2]} -> ${bracket(m[3]!)}:${m[4]}`);
      }
      for (const e of this.nft.elements(t, `ports${fam}_addr`)) {
        const m = /^(\S+) \. (\w+) \. (\d+) : (\S+) \. (\d+)$/.exec(e)!;
        out.push(`${m[2]} ${bracket(m[1]!)}:${m[3]} -> ${bracket(m[4]!)}:${m[5]}`);
      }
    }
    return out.sort();
  }

  snapshot(): KernelSnapshot {
    const byName = <T>(key: (x: T) => string) => (a: T, b: T) => key(a).localeCompare(key(b));
    const names = (family: string, set: string) => this.nft.elements(`${family} ${this.table}`, set).map(unquote).sort();
    return plainCopy({
      bridges: [...this.bridges.values()].sort(byName((b: FakeBridge) => b.name)),
      veths: [...this.veths.values()].sort(byName((v: FakeVeth) => v.host)),
      vxlans: [...this.vxlans.values()].sort(byName((v: FakeVxlan) => v.name)),
      routes: [...this.routes].map(([to, dev]) => `${to} ${dev || 'unreachable'}`).sort(),
      nics: [...this.nics.values()].sort(byName((n: FakeNic) => n.name)),
      heldRoutes: [...this.heldRoutes].flatMap(([dev, rs]) => rs.map((r) => `${describeRoute(r)} dev ${dev}`)).sort(),
      foreign: [...this.foreign.values()].sort(byName((l: LinkInfo) => l.name)),
      firewall: {
        tables: this.nft.hasTable(`inet ${this.table}`),
        bridges: names('inet', 'bridges'),
        ports: this.publishedPorts(),
        noIcc: names('bridge', 'no_icc'),
        guarded: names('bridge', 'guarded'),
      },
      nft: this.nft.dump(),
      sysctls: Object.fromEntries([...this.sysctls.entries()].sort(([a], [b]) => a.localeCompare(b))),
    });
  }

  // ------------------------------------------------------------------ plumbing

  private async call<T>(method: KernelMethod, args: unknown[], fn: () => T | Promise<T>): Promise<T> {
    this.calls.push({ method, args: plainCopy(args) });
    await Promise.resolve(); // like the real thing, never synchronous
    const queue = this.failures.get(method) ?? [];
    const at = queue.findIndex((f) => f.when(args));
    let injected: Injected | undefined = at >= 0 ? queue.splice(at, 1)[0] : undefined;
    if (!injected && this.armed) {
      if (this.countdown === 0) {
        injected = { ...this.armed, when: () => true };
        this.armed = null;
        this.countdown = -1;
      } else this.countdown--;
    }
    if (injected) {
      if (injected.partial) {
        try {
          await fn();
        } catch {
          // the command failed for real as well: the injected error wins
        }
      }
      throw injected.error;
    }
    return fn();
  }

  private linkExists(name: string): boolean {
    return this.bridges.has(name) || this.vxlans.has(name) || this.foreign.has(name) || this.nics.has(name) || this.vethEndOf(name) !== null;
  }

  private vethEndOf(name: string): FakeVeth | null {
    for (const v of this.veths.values()) if (v.host === name || v.peer === name) return v;
    return null;
  }

  // --------------------------------------------------------------------- links

  private doEnsureBridge(spec: BridgeSpec): void {
    if (this.foreign.has(spec.name) && this.foreign.get(spec.name)!.kind !== 'bridge') {
      throw new TsbridgeError('BRIDGE_NAME_IN_USE', { name: spec.name, networkId: 'no network (it is not a bridge)' });
    }
    if (this.vethEndOf(spec.name) || this.nics.has(spec.name)) {
      throw new TsbridgeError('BRIDGE_NAME_IN_USE', { name: spec.name, networkId: 'no network (it is not a bridge)' });
    }
    const have = this.bridges.get(spec.name);
    this.down.delete(spec.name);
    // `addr replace` adds what is missing and leaves other addresses alone, as iproute2 does.
    const addresses = [...new Set([...(have?.addresses ?? []), ...spec.addresses])].sort();
    this.bridges.set(spec.name, { name: spec.name, mtu: spec.mtu, mac: have?.mac ?? spec.mac, addresses });
  }

  private doEnsureVeth(spec: VethSpec): void {
    if (spec.master !== null && !this.bridges.has(spec.master) && this.foreign.get(spec.master)?.kind !== 'bridge') {
      throw kernelError('ensureVeth', `cannot enslave ${spec.hostName}: no bridge named ${spec.master}`);
    }
    const old = this.veths.get(spec.hostName);
    if (old) this.removeVeth(old); // a leftover of the same name is replaced
    if (this.linkExists(spec.hostName) || this.linkExists(spec.peerName)) {
      throw kernelError('ensureVeth', `RTNETLINK answers: File exists (${spec.hostName}/${spec.peerName})`);
    }
    this.veths.set(spec.hostName, {
      host: spec.hostName,
      peer: spec.peerName,
      bridge: spec.master,
      mtu: spec.mtu,
      mac: spec.mac,
      hostAddresses: [...spec.hostAddresses].sort(),
    });
  }

  private doEnsureVxlan(spec: VxlanSpec): void {
    if (!this.bridges.has(spec.master)) throw kernelError('ensureVxlan', `cannot enslave ${spec.name}: no bridge named ${spec.master}`);
    const have = this.vxlans.get(spec.name);
    if (!have && this.linkExists(spec.name)) throw kernelError('ensureVxlan', `RTNETLINK answers: File exists (${spec.name})`);
    for (const v of this.vxlans.values()) {
      // Linux: one device per VNI and UDP port (both unbound to an interface).
      if (v.name !== spec.name && v.vni === spec.vni && v.port === spec.port) throw kernelError('ensureVxlan', `A VXLAN device with the specified VNI already exists (${v.name})`);
    }
    const same = have && have.vni === spec.vni && have.local === spec.local && have.port === spec.port;
    this.vxlans.set(spec.name, { ...spec, remotes: same ? have.remotes : [] });
  }

  private doChangeRemotes(vxlan: string, change: { add: RemoteEndpoint[]; remove: RemoteEndpoint[] }): void {
    const v = this.vxlans.get(vxlan);
    if (!v) throw kernelError('changeRemoteEndpoints', `Cannot find device "${vxlan}"`);
    const key = (r: RemoteEndpoint) => `${r.address} ${r.mac} ${r.vtep}`;
    const gone = new Set(change.remove.map(key));
    const next = v.remotes.filter((r) => !gone.has(key(r)));
    for (const r of change.add) {
      // `neigh replace` and `fdb replace`: an address or MAC programmed again moves.
      const i = next.findIndex((x) => x.address === r.address || x.mac === r.mac);
      if (i >= 0) next.splice(i, 1);
      next.push({ ...r });
    }
    v.remotes = next.sort((a, b) => a.address.localeCompare(b.address, 'en', { numeric: true }));
  }

  private doAttach(host: string, bridge: string): void {
    const v = this.veths.get(host);
    if (!v) throw kernelError('attachToBridge', `Cannot find device "${host}"`);
    if (!this.bridges.has(bridge)) throw kernelError('attachToBridge', `Cannot find device "${bridge}"`);
    v.bridge = bridge;
    this.down.delete(host);
  }

  private doEnsureRoutes(routes: RouteSpec[]): void {
    for (const r of routes) if ('dev' in r && !this.linkExists(r.dev)) throw kernelError('ensureRoutes', `Cannot find device "${r.dev}"`);
    for (const r of routes) this.routes.set(r.to, 'dev' in r ? r.dev : '');
  }

  private doDeleteRoutes(routes: RouteSpec[]): void {
    for (const r of routes) if (this.routes.get(r.to) === ('dev' in r ? r.dev : '')) this.routes.delete(r.to);
  }

  private doDeleteLinks(names: string[]): void {
    for (const name of names) {
      if (this.bridges.has(name)) {
        this.bridges.delete(name);
        this.bridgeHeld.delete(name);
        this.dropLinkState(name);
        for (const v of this.veths.values()) if (v.bridge === name) v.bridge = null;
        for (const n of this.nics.values()) if (n.master === name) n.master = null;
        continue;
      }
      if (this.nics.has(name)) {
        this.nics.delete(name);
        this.dropLinkState(name);
        continue;
      }
      if (this.vxlans.has(name)) {
        this.vxlans.delete(name);
        this.dropLinkState(name);
        continue;
      }
      const veth = this.vethEndOf(name);
      if (veth) {
        this.removeVeth(veth);
        continue;
      }
      if (this.foreign.has(name)) {
        this.foreign.delete(name);
        this.dropLinkState(name);
      }
      // missing: fine
    }
  }

  private removeVeth(v: FakeVeth): void {
    this.inContainers.delete(v.peer);
    this.veths.delete(v.host);
    this.dropLinkState(v.host);
    this.dropLinkState(v.peer);
  }

  /** What `ip -j -d addr show` would say of every link (read by `tsbridge doctor`). */
  private details(): LinkDetail[] {
    const up = (n: string) => !this.down.has(n);
    const out: LinkDetail[] = [];
    for (const b of this.bridges.values()) out.push({ name: b.name, kind: 'bridge', master: null, mtu: b.mtu, up: up(b.name), addresses: [...b.addresses], mac: b.mac, owned: true });
    for (const v of this.veths.values()) {
      out.push({ name: v.host, kind: 'veth', master: v.bridge, mtu: v.mtu, up: up(v.host), addresses: [...v.hostAddresses], mac: '02:00:00:00:00:00', owned: true });
      if (!this.inContainers.has(v.peer)) out.push({ name: v.peer, kind: 'veth', master: null, mtu: v.mtu, up: false, addresses: [], mac: v.mac, owned: true });
    }
    for (const f of this.foreign.values()) out.push({ name: f.name, kind: f.kind, master: f.master, mtu: 1500, up: true, addresses: [], mac: '02:00:00:00:00:ff', owned: false });
    return out;
  }

  private doList(): LinkInfo[] {
    const out: LinkInfo[] = [];
    for (const b of this.bridges.values()) out.push({ name: b.name, kind: 'bridge', master: null, owned: true });
    for (const v of this.vxlans.values()) out.push({ name: v.name, kind: 'vxlan', master: this.bridges.has(v.master) ? v.master : null, owned: true });
    for (const v of this.veths.values()) {
      out.push({ name: v.host, kind: 'veth', master: v.bridge, owned: true });
      if (!this.inContainers.has(v.peer)) out.push({ name: v.peer, kind: 'veth', master: null, owned: true });
    }
    for (const f of this.foreign.values()) out.push({ ...f });
    for (const n of this.nics.values()) out.push({ name: n.name, kind: n.kind, master: n.master, owned: false });
    return out;
  }

  private doInspect(name: string): InterfaceState | null {
    const routes = plainCopy(this.heldRoutes.get(name) ?? []);
    const nic = this.nics.get(name);
    if (nic) {
      const { name: _n, ...rest } = plainCopy(nic);
      return { name, owned: false, routes, ...rest };
    }
    const b = this.bridges.get(name);
    if (b) {
      const held = this.bridgeHeld.get(name) ?? [];
      const addresses = b.addresses.map((cidr) => held.find((h) => sameAddress(h, { cidr })) ?? { cidr });
      return { name, kind: 'bridge', linkType: 'ether', master: null, owned: true, up: true, mtu: b.mtu, mac: b.mac, addresses: plainCopy(addresses), routes, unmovable: [] };
    }
    const v = this.vethEndOf(name);
    if (v) {
      return { name, kind: 'veth', linkType: 'ether', master: v.host === name ? v.bridge : null, owned: true, up: true, mtu: v.mtu, mac: v.mac, addresses: [], routes, unmovable: [] };
    }
    const f = this.foreign.get(name);
    if (f) {
      return { ...f, linkType: f.kind === 'loopback' ? 'loopback' : 'ether', up: true, mtu: 1500, mac: '52:54:00:00:00:01', addresses: [], routes, unmovable: [] };
    }
    return null;
  }

  /** Like the kernel: a NIC becomes a port of a bridge; the recorded addresses and routes move to the bridge. */
  private doAdopt(spec: UplinkSpec): 'adopted' | 'missing' {
    const nic = this.nics.get(spec.name);
    if (!nic) {
      if (this.linkExists(spec.name)) throw kernelError('adoptUplink', `${spec.name} is not an interface this fake can enslave`);
      return 'missing';
    }
    const b = this.bridges.get(spec.bridge);
    if (!b) throw kernelError('adoptUplink', `Cannot find device "${spec.bridge}"`);
    if (nic.master && nic.master !== spec.bridge) throw kernelError('adoptUplink', `${spec.name} is already a port of ${nic.master}`);
    nic.master = spec.bridge;
    nic.up = true;
    const moved = spec.was ?? { addresses: [], routes: [] };
    const held = this.bridgeHeld.get(spec.bridge) ?? [];
    for (const a of moved.addresses) {
      if (!b.addresses.includes(a.cidr)) b.addresses = [...b.addresses, a.cidr].sort();
      if (!held.some((h) => sameAddress(h, a))) held.push(plainCopy(a));
      nic.addresses = nic.addresses.filter((h) => !sameAddress(h, a));
    }
    this.bridgeHeld.set(spec.bridge, held);
    for (const r of moved.routes) {
      this.putRoute(spec.bridge, r);
      this.takeRoute(spec.name, r);
    }
    return 'adopted';
  }

  /** Like the kernel: the port lets go of its bridge and gets back what it was recorded with. */
  private doRelease(spec: UplinkSpec): 'released' | 'missing' {
    const nic = this.nics.get(spec.name);
    if (!nic) return 'missing';
    nic.master = null;
    const was = spec.was;
    if (!was) return 'released';
    nic.mtu = was.mtu;
    nic.up = was.up;
    // its recorded addresses in their order, after any others it holds
    nic.addresses = [...nic.addresses.filter((h) => !was.addresses.some((a) => sameAddress(a, h))), ...plainCopy(was.addresses)];
    if (was.up) for (const r of was.routes) this.putRoute(spec.name, r);
    const b = this.bridges.get(spec.bridge);
    if (b) {
      b.addresses = b.addresses.filter((cidr) => !was.addresses.some((a) => sameAddress(a, { cidr })));
      this.bridgeHeld.set(spec.bridge, (this.bridgeHeld.get(spec.bridge) ?? []).filter((h) => !was.addresses.some((a) => sameAddress(a, h))));
      for (const r of was.routes) this.takeRoute(spec.bridge, r);
    }
    return 'released';
  }

  private putRoute(dev: string, r: HeldRoute): void {
    // `route replace`: the same route through another interface moves here.
    for (const [other, rs] of this.heldRoutes) if (other !== dev) this.heldRoutes.set(other, rs.filter((h) => !sameRoute(h, r)));
    const mine = (this.heldRoutes.get(dev) ?? []).filter((h) => !sameRoute(h, r));
    this.heldRoutes.set(dev, [...mine, plainCopy(r)]);
  }

  private takeRoute(dev: string, r: HeldRoute): void {
    const left = (this.heldRoutes.get(dev) ?? []).filter((h) => !sameRoute(h, r));
    if (left.length) this.heldRoutes.set(dev, left);
    else this.heldRoutes.delete(dev);
  }

  // ------------------------------------------------------------------- sysctls

  private doSysctl(key: string, value: string): void {
    const k = normalizeKey(key);
    const m = /^net\.ipv[46]\.(?:conf|neigh)\.([^.]+)\./.exec(k);
    if (m && !['all', 'default'].includes(m[1]!) && !this.linkExists(m[1]!)) {
      throw kernelError(`sysctl ${k}`, `/proc/sys/${k.replace(/\./g, '/')}: No such file or directory`);
    }
    this.sysctls.set(k, value);
  }

  /** A link's routes and per-interface sysctls go with it. */
  private dropLinkState(ifname: string): void {
    for (const k of [...this.sysctls.keys()]) {
      if (/^net\.ipv[46]\.(conf|neigh)\./.test(k) && k.split('.')[3] === ifname) this.sysctls.delete(k);
    }
    for (const [to, dev] of [...this.routes]) if (dev === ifname) this.routes.delete(to);
    this.heldRoutes.delete(ifname);
  }
}
