/**
 * A strict in-memory kernel for unit tests.
 *
 * Links and sysctls are a model that refuses what Linux refuses: a veth on a missing bridge, a
 * route through a missing link, a per-interface sysctl of a missing interface. Deleting either end
 * of a veth removes the pair, and deleting a link removes its routes and per-interface sysctls.
 *
 * The firewall is the real one (NftFirewall, with the real rule rendering) over a FakeRunner whose
 * `nft -f` is the strict nftables model of ./nft.ts: a script nft would refuse fails here too, and
 * `nft` (the model) can be compared with the model of the full ruleset the state calls for — so a
 * dropped anti-spoofing element or map entry fails a test.
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
import type { BridgeSpec, Firewall, Kernel, LinkInfo, Links, RouteSpec, Sysctl, VethSpec } from '../../src/kernel/types.js';
import { NftError, NftModel, type NftDump } from './nft.js';

export type KernelMethod =
  | 'ensureBridge'
  | 'ensureVeth'
  | 'attachToBridge'
  | 'ensureRoutes'
  | 'deleteLinks'
  | 'list'
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

export interface KernelSnapshot {
  bridges: FakeBridge[];
  veths: FakeVeth[];
  /** Routes as `to dev`, sorted. */
  routes: string[];
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

  constructor(readonly nft: NftModel) {}

  async run(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): Promise<RunResult> {
    await Promise.resolve();
    this.commands.push([cmd, ...args].join(' '));
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
  /** Route destination → device. */
  readonly routes = new Map<string, string>();
  readonly foreign = new Map<string, LinkInfo>();
  readonly sysctls = new Map<string, string>();
  /** nftables, as the firewall's scripts left it. */
  readonly nft = new NftModel();
  readonly runner = new FakeRunner(this.nft);
  /** Every call, in order, with its arguments (deep copies). */
  readonly calls: CallRecord[] = [];
  /** Entries passed to flushConntrack, in order. */
  readonly conntrackFlushes: { proto: string; hostPort: number }[] = [];

  private readonly failures = new Map<KernelMethod, Injected[]>();

  readonly links: Links;
  readonly firewall: Firewall;
  readonly sysctl: Sysctl;

  constructor(init: { sysctls?: Record<string, string>; table?: string } = {}) {
    for (const [k, v] of Object.entries(init.sysctls ?? {})) this.sysctls.set(normalizeKey(k), v);
    this.table = init.table ?? DEFAULT_TABLE;
    this.links = {
      ensureBridge: (spec) => this.call('ensureBridge', [spec], () => this.doEnsureBridge(spec)),
      ensureVeth: (spec) => this.call('ensureVeth', [spec], () => this.doEnsureVeth(spec)),
      attachToBridge: (host, bridge) => this.call('attachToBridge', [host, bridge], () => this.doAttach(host, bridge)),
      ensureRoutes: (routes) => this.call('ensureRoutes', [routes], () => this.doEnsureRoutes(routes)),
      deleteLinks: (names) => this.call('deleteLinks', [names], () => this.doDeleteLinks(names)),
      list: () => this.call('list', [], () => this.doList()),
    };
    const real = new NftFirewall(this.runner, silentLogger());
    this.firewall = {
      apply: (view) => this.call('apply', [view], () => real.apply(view)),
      addEndpoint: (ep) => this.call('addEndpoint', [ep], () => real.addEndpoint(ep)),
      removeEndpoint: (ep) => this.call('removeEndpoint', [ep], () => real.removeEndpoint(ep)),
      addPorts: (ports) => this.call('addPorts', [ports], () => real.addPorts(ports)),
      removePorts: (ports) => this.call('removePorts', [ports], () => real.removePorts(ports)),
      refresh: (view) => this.call('refresh', [view], () => real.refresh(view)),
      flushConntrack: (entries) =>
        this.call('flushConntrack', [entries], async () => {
          this.conntrackFlushes.push(...entries.map((e) => ({ proto: e.proto, hostPort: e.hostPort })));
          await real.flushConntrack(entries);
        }),
    };
    this.sysctl = {
      ensure: (key, value) => this.call('sysctl', [key, value], () => this.doSysctl(key, value)),
    };
  }

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

  /** Injected failures not consumed yet. */
  pendingFailures(): KernelMethod[] {
    return [...this.failures.entries()].flatMap(([m, l]) => l.map(() => m));
  }

  /** A link some other program made (e.g. the host's eth0, a user's bridge). */
  addForeignLink(name: string, kind = 'dummy'): void {
    this.foreign.set(name, { name, kind, master: null, owned: false });
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
    return structuredClone({
      bridges: [...this.bridges.values()].sort(byName((b: FakeBridge) => b.name)),
      veths: [...this.veths.values()].sort(byName((v: FakeVeth) => v.host)),
      routes: [...this.routes].map(([to, dev]) => `${to} ${dev}`).sort(),
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
    const injected = at >= 0 ? queue.splice(at, 1)[0] : undefined;
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
    return this.bridges.has(name) || this.foreign.has(name) || this.vethEndOf(name) !== null;
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
    if (this.vethEndOf(spec.name)) {
      throw new TsbridgeError('BRIDGE_NAME_IN_USE', { name: spec.name, networkId: 'no network (it is a veth interface)' });
    }
    const have = this.bridges.get(spec.name);
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

  private doAttach(host: string, bridge: string): void {
    const v = this.veths.get(host);
    if (!v) throw kernelError('attachToBridge', `Cannot find device "${host}"`);
    if (!this.bridges.has(bridge)) throw kernelError('attachToBridge', `Cannot find device "${bridge}"`);
    v.bridge = bridge;
  }

  private doEnsureRoutes(routes: RouteSpec[]): void {
    for (const r of routes) if (!this.linkExists(r.dev)) throw kernelError('ensureRoutes', `Cannot find device "${r.dev}"`);
    for (const r of routes) this.routes.set(r.to, r.dev);
  }

  private doDeleteLinks(names: string[]): void {
    for (const name of names) {
      if (this.bridges.has(name)) {
        this.bridges.delete(name);
        this.dropLinkState(name);
        for (const v of this.veths.values()) if (v.bridge === name) v.bridge = null;
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
    this.veths.delete(v.host);
    this.dropLinkState(v.host);
    this.dropLinkState(v.peer);
  }

  private doList(): LinkInfo[] {
    const out: LinkInfo[] = [];
    for (const b of this.bridges.values()) out.push({ name: b.name, kind: 'bridge', master: null, owned: true });
    for (const v of this.veths.values()) {
      out.push({ name: v.host, kind: 'veth', master: v.bridge, owned: true });
      out.push({ name: v.peer, kind: 'veth', master: null, owned: true });
    }
    for (const f of this.foreign.values()) out.push({ ...f });
    return out;
  }

  // ------------------------------------------------------------------- sysctls

  private doSysctl(key: string, value: string): void {
    const k = normalizeKey(key);
    const m = /^net\.ipv[46]\.conf\.([^.]+)\./.exec(k);
    if (m && !['all', 'default'].includes(m[1]!) && !this.linkExists(m[1]!)) {
      throw kernelError(`sysctl ${k}`, `/proc/sys/${k.replace(/\./g, '/')}: No such file or directory`);
    }
    this.sysctls.set(k, value);
  }

  /** A link's routes and per-interface sysctls go with it. */
  private dropLinkState(ifname: string): void {
    for (const k of [...this.sysctls.keys()]) {
      if (k.startsWith(`net.ipv4.conf.${ifname}.`) || k.startsWith(`net.ipv6.conf.${ifname}.`)) this.sysctls.delete(k);
    }
    for (const [to, dev] of [...this.routes]) if (dev === ifname) this.routes.delete(to);
  }
}
