/**
 * A strict in-memory kernel for unit tests. It keeps what the real one would
 * hold (bridges, veth pairs, published ports, ICC membership, sysctls) and
 * refuses what the real one refuses: a veth on a missing bridge, an element
 * added to a table that does not exist, a per-interface sysctl of a missing
 * interface. Deleting either end of a veth removes the pair, and deleting a
 * link removes its per-interface sysctls, as in Linux.
 *
 * `failNext(method)` makes the next call of that method throw; with
 * `{ partial: true }` it first does its work (a command that half-succeeded).
 * `snapshot()` describes everything in a form `toEqual` can compare.
 */
import { TsbridgeError } from '../../src/errors.js';
import type { FirewallView } from '../../src/kernel/rules/nft.js';
import type { BridgeSpec, Firewall, Kernel, LinkInfo, Links, Sysctl, VethSpec } from '../../src/kernel/types.js';
import type { EndpointRecord, NetworkRecord, PortMapping } from '../../src/state/types.js';

export type KernelMethod =
  | 'ensureBridge'
  | 'ensureVeth'
  | 'deleteLinks'
  | 'attachToBridge'
  | 'list'
  | 'applyAll'
  | 'applyEndpoint'
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
  /** The bridge the host end is enslaved to; null once that bridge was deleted. */
  bridge: string | null;
  mtu: number;
  /** MAC of the container end. */
  mac: string;
}

/** One published port as the firewall holds it. */
export interface FakePublished extends PortMapping {
  endpoint: string;
  /** Container addresses the port leads to (without prefix length). */
  targets: string[];
}

export interface KernelSnapshot {
  bridges: FakeBridge[];
  veths: FakeVeth[];
  /** Links tsbridge did not make (see addForeignLink). */
  foreign: LinkInfo[];
  firewall: {
    /** True while tsbridge's tables exist (at least one live network in the last full apply). */
    tables: boolean;
    /** Bridges the last full apply wrote rules for. */
    bridges: string[];
    /** Published ports, as `endpoint proto hostIp:hostPort -> containerPort` lines, sorted. */
    ports: string[];
    /** Host-side veths whose traffic to other ports of their bridge is dropped. */
    noIcc: string[];
  };
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

function kernelError(op: string, detail: string): TsbridgeError {
  return new TsbridgeError('KERNEL', { op, detail });
}

function normalizeKey(key: string): string {
  return key.replace(/^\/proc\/sys\//, '').replace(/\//g, '.');
}

function hostOf(cidr: string | null): string | null {
  return cidr === null ? null : cidr.split('/')[0]!;
}

function publishedLine(p: FakePublished): string {
  const host = p.hostIp.includes(':') ? `[${p.hostIp}]` : p.hostIp || '*';
  return `${p.endpoint} ${p.proto} ${host}:${p.hostPort} -> ${p.containerPort}`;
}

export class FakeKernel implements Kernel {
  readonly bridges = new Map<string, FakeBridge>();
  /** Keyed by the host end's name. */
  readonly veths = new Map<string, FakeVeth>();
  readonly foreign = new Map<string, LinkInfo>();
  readonly sysctls = new Map<string, string>();
  /** Every call, in order, with its arguments (deep copies). */
  readonly calls: CallRecord[] = [];
  /** Entries passed to flushConntrack, in order. */
  readonly conntrackFlushes: { proto: string; hostPort: number }[] = [];
  /** A deep copy of the view of the last successful applyAll, or null. */
  lastView: FirewallView | null = null;
  /** Endpoint deltas applied since the last full apply, in order. */
  readonly deltas: { endpoint: string; op: 'add' | 'delete' }[] = [];

  private tables = false;
  private ruleBridges: string[] = [];
  private published = new Map<string, FakePublished>();
  private noIcc = new Set<string>();
  private readonly failures = new Map<KernelMethod, Injected[]>();

  readonly links: Links;
  readonly firewall: Firewall;
  readonly sysctl: Sysctl;

  constructor(init: { sysctls?: Record<string, string> } = {}) {
    for (const [k, v] of Object.entries(init.sysctls ?? {})) this.sysctls.set(normalizeKey(k), v);
    this.links = {
      ensureBridge: (spec) => this.call('ensureBridge', [spec], () => this.doEnsureBridge(spec)),
      ensureVeth: (spec) => this.call('ensureVeth', [spec], () => this.doEnsureVeth(spec)),
      deleteLinks: (names) => this.call('deleteLinks', [names], () => this.doDeleteLinks(names)),
      attachToBridge: (host, bridge) => this.call('attachToBridge', [host, bridge], () => this.doAttach(host, bridge)),
      list: () => this.call('list', [], () => this.doList()),
    };
    this.firewall = {
      applyAll: (view) => this.call('applyAll', [view], () => this.doApplyAll(view)),
      applyEndpoint: (ep, net, op) => this.call('applyEndpoint', [ep, net, op], () => this.doApplyEndpoint(ep, net, op)),
      flushConntrack: (entries) =>
        this.call('flushConntrack', [entries], () => {
          this.conntrackFlushes.push(...entries.map((e) => ({ proto: e.proto, hostPort: e.hostPort })));
        }),
    };
    this.sysctl = {
      ensure: (key, value) => this.call('sysctl', [key, value], () => this.doSysctl(key, value)),
    };
  }

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
    this.veths.delete(hostName);
  }

  callsOf(method: KernelMethod): unknown[][] {
    return this.calls.filter((c) => c.method === method).map((c) => c.args);
  }

  /** Published ports as in snapshot().firewall.ports. */
  publishedPorts(): FakePublished[] {
    return [...this.published.values()].map((p) => structuredClone(p));
  }

  snapshot(): KernelSnapshot {
    const byName = <T>(key: (x: T) => string) => (a: T, b: T) => key(a).localeCompare(key(b));
    return structuredClone({
      bridges: [...this.bridges.values()].sort(byName((b: FakeBridge) => b.name)),
      veths: [...this.veths.values()].sort(byName((v: FakeVeth) => v.host)),
      foreign: [...this.foreign.values()].sort(byName((l: LinkInfo) => l.name)),
      firewall: {
        tables: this.tables,
        bridges: [...this.ruleBridges].sort(),
        ports: [...this.published.values()].map(publishedLine).sort(),
        noIcc: [...this.noIcc].sort(),
      },
      sysctls: Object.fromEntries([...this.sysctls.entries()].sort(([a], [b]) => a.localeCompare(b))),
    });
  }

  // ------------------------------------------------------------------ plumbing

  private async call<T>(method: KernelMethod, args: unknown[], fn: () => T): Promise<T> {
    this.calls.push({ method, args: structuredClone(args) });
    await Promise.resolve(); // like the real thing, never synchronous
    const queue = this.failures.get(method) ?? [];
    const at = queue.findIndex((f) => f.when(args));
    const injected = at >= 0 ? queue.splice(at, 1)[0] : undefined;
    if (injected) {
      if (injected.partial) {
        try {
          fn();
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
    if (!this.bridges.has(spec.bridge) && this.foreign.get(spec.bridge)?.kind !== 'bridge') {
      throw kernelError('ensureVeth', `cannot enslave ${spec.hostName}: no bridge named ${spec.bridge}`);
    }
    const old = this.veths.get(spec.hostName);
    if (old) this.removeVeth(old); // a leftover of the same name is replaced
    if (this.linkExists(spec.hostName) || this.linkExists(spec.peerName)) {
      throw kernelError('ensureVeth', `RTNETLINK answers: File exists (${spec.hostName}/${spec.peerName})`);
    }
    this.veths.set(spec.hostName, { host: spec.hostName, peer: spec.peerName, bridge: spec.bridge, mtu: spec.mtu, mac: spec.mac });
  }

  private doAttach(host: string, bridge: string): void {
    const v = this.veths.get(host);
    if (!v) throw kernelError('attachToBridge', `Cannot find device "${host}"`);
    if (!this.bridges.has(bridge)) throw kernelError('attachToBridge', `Cannot find device "${bridge}"`);
    v.bridge = bridge;
  }

  private doDeleteLinks(names: string[]): void {
    for (const name of names) {
      if (this.bridges.has(name)) {
        this.bridges.delete(name);
        this.dropInterfaceSysctls(name);
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
        this.dropInterfaceSysctls(name);
      }
      // missing: fine
    }
  }

  private removeVeth(v: FakeVeth): void {
    this.veths.delete(v.host);
    this.dropInterfaceSysctls(v.host);
    this.dropInterfaceSysctls(v.peer);
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

  // ------------------------------------------------------------------ firewall

  private doApplyAll(view: FirewallView): void {
    const nets = view.networks.filter((n) => n.phase !== 'deleting');
    this.lastView = structuredClone(view);
    this.deltas.length = 0;
    this.tables = nets.length > 0;
    this.ruleBridges = nets.map((n) => n.bridge);
    this.published = new Map();
    this.noIcc = new Set();
    if (!this.tables) return;
    for (const ep of view.endpoints) {
      const net = nets.find((n) => n.id === ep.networkId);
      if (!net || ep.phase !== 'ready') continue;
      this.addEndpoint(ep, net);
    }
  }

  private doApplyEndpoint(ep: EndpointRecord, net: NetworkRecord, op: 'add' | 'delete'): void {
    const writes = ep.ports.length > 0 || !net.icc;
    if (!writes) return; // an empty transaction: the real firewall runs nothing
    if (!this.tables) {
      throw kernelError('applyEndpoint', `Error: No such file or directory (table inet tsbridge does not exist)`);
    }
    this.deltas.push({ endpoint: ep.id, op });
    if (op === 'add') this.addEndpoint(ep, net);
    else {
      for (const p of ep.ports) this.published.delete(this.portKey(p));
      if (!net.icc) this.noIcc.delete(ep.hostVeth);
    }
  }

  /** Map keys are (host address, proto, host port): a second add of the same key keeps the first value, as nft does. */
  private portKey(p: PortMapping): string {
    return `${p.proto} ${p.hostIp} ${p.hostPort}`;
  }

  private addEndpoint(ep: EndpointRecord, net: NetworkRecord): void {
    const targets = [hostOf(ep.ipv4), hostOf(ep.ipv6)].filter((x): x is string => x !== null);
    for (const p of ep.ports) {
      const key = this.portKey(p);
      if (!this.published.has(key)) this.published.set(key, { ...p, endpoint: ep.id, targets });
    }
    if (!net.icc) this.noIcc.add(ep.hostVeth);
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

  private dropInterfaceSysctls(ifname: string): void {
    for (const k of [...this.sysctls.keys()]) {
      if (k.startsWith(`net.ipv4.conf.${ifname}.`) || k.startsWith(`net.ipv6.conf.${ifname}.`)) this.sysctls.delete(k);
    }
  }
}
