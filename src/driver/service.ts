/**
 * The network driver's use cases: networks, endpoints, joins and published ports — the same for
 * every kind of network. Orders the steps, persists each phase, and undoes what it did when a step
 * fails. What a network needs comes from its kind (src/kinds); the kernel is touched only through
 * the Kernel interface, and brought up through realize.ts, the path start-up takes as well.
 */
import { isDeepStrictEqual } from 'node:util';
import { fail, isTsbridgeError } from '../errors.js';
import { overlaps, parsePrefix } from '../net/addr.js';
import type { Logger } from '../logging.js';
import type { HostPorts, HostRoutes, Kernel } from '../kernel/types.js';
import type { EndpointSpec, JoinInfo, Network, NetworkSpec, PortMapping, PortRequest } from '../domain/types.js';
import { hostVethName, macFromId, peerVethName } from '../domain/names.js';
import { plainCopy, type Db } from '../state/db.js';
import type { Endpoint, State } from '../state/types.js';
import type { KindContext, KindRegistry, NetworkPlan } from '../kinds/types.js';
import { allocatePorts } from './ports.js';
import { checkAgainstHost, checkEndpointAddress, checkSubnets } from './subnets.js';
import { isEmpty, type Forgotten } from './converge.js';
import { forgetPools } from '../ipam/service.js';
import { claimedNames, endpointElements, firewallView, kindsRuntime, realizeEndpoint, realizeNetwork, releaseNetwork, unrealizeNetwork, type KindsRuntime, type Lifecycles } from './realize.js';

export { kindsRuntime, type KindsRuntime };

/** Waits for all; the first failure (by position) is thrown once every one has ended. */
async function settleAll(work: Promise<unknown>[]): Promise<void> {
  const r = await Promise.allSettled(work);
  const failed = r.find((x): x is PromiseRejectedResult => x.status === 'rejected');
  if (failed) throw failed.reason;
}

function specOf(n: Network): NetworkSpec {
  const { phase: _phase, created: _created, adopted: _adopted, ...spec } = n;
  return spec;
}

/**
 * Is `spec` the request that made `existing` (a retried CreateNetwork)? A kind that completes its
 * settings before creation (beforeCreate) stored more than the request had: the request's own
 * settings must then all be there, unchanged.
 */
function sameRequest(existing: Network, spec: NetworkSpec, completes: boolean): boolean {
  const { settings: have, ...rest } = specOf(existing);
  const { settings: want, ...asked } = spec;
  if (!isDeepStrictEqual(rest, asked)) return false;
  if (!completes) return isDeepStrictEqual(have, want);
  return Object.entries(want).every(([k, v]) => isDeepStrictEqual(have[k], v));
}

export class DriverService {
  private readonly kinds: KindRegistry;
  private readonly lifecycles: Lifecycles;
  private readonly ctx: KindContext;

  constructor(
    private readonly db: Db,
    private readonly kernel: Kernel,
    /** The host's sockets (port publishing) and, where given, its routes (a new network's subnets). */
    private readonly hostPorts: HostPorts & Partial<HostRoutes>,
    private readonly log: Logger,
    runtime: KindsRuntime = kindsRuntime(kernel, log),
    /** Wall clock (ms since the epoch) for the records' creation times. */
    private readonly now: () => number = Date.now,
  ) {
    this.kinds = runtime.kinds;
    this.lifecycles = runtime.lifecycles;
    this.ctx = runtime.ctx;
  }

  private view(s: State) {
    return firewallView(s, this.kinds);
  }

  // ---------------------------------------------------------------- networks

  async createNetwork(spec: NetworkSpec): Promise<void> {
    // A failure whose rollback could not give the host back what the network took: the record
    // stays (the transaction commits it), and the failure is thrown after.
    let kept: unknown;
    await this.db.tx(async (s) => {
      const kind = this.kinds.get(spec.kind);
      const existing = s.networks[spec.id];
      if (existing) {
        if (existing.phase === 'ready' && sameRequest(existing, spec, kind.lifecycle?.beforeCreate !== undefined)) {
          // A retry: make sure the kernel has it.
          await realizeNetwork(this.kernel, kind.network(existing));
          await this.kernel.firewall.apply(this.view(s));
          await this.lifecycles.start(existing);
          return;
        }
        fail('NETWORK_EXISTS', { networkId: spec.id });
      }
      checkSubnets(spec);
      const net: Network = { ...spec, phase: 'creating', created: this.now() };
      const first = kind.network(net);
      const claimed = claimedNames(first);
      for (const other of Object.values(s.networks)) {
        const theirs = this.kinds.get(other.kind).network(other);
        const taken = claimedNames(theirs);
        const clash = claimed.find((l) => taken.includes(l));
        const uplink = (p: NetworkPlan, name: string | undefined) => (p.uplinks ?? []).some((u) => u.name === name);
        if (clash && uplink(theirs, clash)) fail('INTERFACE_IN_USE', { name: clash, networkId: other.id });
        if (clash) fail('BRIDGE_NAME_IN_USE', { name: clash, networkId: other.id });
        for (const a of [...spec.ipv4, ...spec.ipv6]) {
          for (const b of [...other.ipv4, ...other.ipv6]) {
            if (overlaps(parsePrefix(a.subnet), parsePrefix(b.subnet))) fail('POOL_OVERLAP', { pool: a.subnet, other: `${b.subnet} of network ${other.id.slice(0, 12)}` });
          }
        }
      }
      const listed = await this.kernel.links.list();
      const links = new Set(listed.map((l) => l.name));
      const held = first.links.find((l) => links.has(l));
      if (held) fail('BRIDGE_NAME_IN_USE', { name: held, networkId: 'another program (an interface of that name exists)' });
      if (!kind.sharesHostSubnet && this.hostPorts.routeTable && this.hostPorts.nameservers) {
        // Routes through tsbridge's own links are other networks': checked against the state above.
        const own = new Set(listed.filter((l) => l.owned).map((l) => l.name));
        checkAgainstHost(spec, await this.hostPorts.routeTable(), await this.hostPorts.nameservers(), own);
      }
      // What the kind takes over from the host is recorded before anything changes: a crash
      // from here on leaves a record start-up gives it back from.
      // A kind may complete its settings with what only the host or the cluster knows.
      const found = await kind.lifecycle?.beforeCreate?.(net, this.ctx);
      if (found?.settings) net.settings = found.settings;
      if (found?.adopted) net.adopted = found.adopted;
      const plan = kind.network(net);

      s.networks[net.id] = net;
      await this.db.save();
      try {
        await realizeNetwork(this.kernel, plan);
        await this.kernel.firewall.apply(this.view(s));
        await this.lifecycles.start(net);
        net.phase = 'ready';
        await this.db.save();
      } catch (e) {
        await this.undo('createNetwork', () => this.lifecycles.stop(net.id));
        const released = await this.undo('createNetwork', () => releaseNetwork(this.kernel, plan));
        if (!released) {
          // What it took from the host is not back: keep the record and its links, marked
          // `deleting` (so it has no rules), for the next start — or a DeleteNetwork — to give
          // back from and finish.
          net.phase = 'deleting';
          await this.undo('createNetwork', () => this.kernel.firewall.apply(this.view(s)));
          await this.undo('createNetwork', () => this.db.save());
          kept = e;
          return;
        }
        await this.undo('createNetwork', () => unrealizeNetwork(this.kernel, plan));
        delete s.networks[net.id];
        await this.undo('createNetwork', () => this.kernel.firewall.apply(this.view(s)));
        await this.undo('createNetwork', () => this.db.save());
        throw e;
      }
    });
    if (kept !== undefined) throw kept;
  }

  /**
   * Rules first (the view leaves out a network being deleted), then links, then the record: a
   * failure at any step puts the network back as it was — phase, bridge, unjoined veths, rules,
   * its running work — and the call fails, so Docker keeps the network and may try again.
   */
  async deleteNetwork(networkId: string): Promise<void> {
    await this.db.tx(async (s) => {
      const net = s.networks[networkId];
      if (!net) return; // repeated or unknown: already gone
      const kind = this.kinds.get(net.kind);
      const eps = Object.values(s.endpoints).filter((e) => e.networkId === networkId);
      const saved = plainCopy({ net, eps });
      net.phase = 'deleting';
      await this.db.save();
      try {
        await this.lifecycles.stop(networkId);
        await this.kernel.firewall.apply(this.view(s));
        // Uplinks first, while the bridge still holds what moved to it: the host's addresses
        // and routes go back before the bridge goes.
        const plan = kind.network(net);
        await releaseNetwork(this.kernel, plan);
        await unrealizeNetwork(this.kernel, plan, eps.map((e) => e.hostVeth));
        for (const e of eps) delete s.endpoints[e.id];
        delete s.networks[networkId];
        await this.db.save();
      } catch (e) {
        await this.restoreNetwork(s, saved.net, saved.eps, 'deleteNetwork');
        throw e;
      }
      // The kind's clean-up after the commit: its failure is logged, never undoes the delete.
      await this.undo('deleteNetwork afterDelete', async () => kind.lifecycle?.afterDelete?.(net, this.ctx));
    });
  }

  /**
   * Puts a network whose removal failed back: record (phase ready), bridge, routes and sysctls,
   * the veths of endpoints not joined yet (a joined endpoint whose veth went with the container
   * cannot be brought back: the sweep drops it), the rules, its running work, the saved state.
   */
  private async restoreNetwork(s: State, net: Network, eps: Endpoint[], op: string): Promise<void> {
    const kind = this.kinds.get(net.kind);
    s.networks[net.id] = net;
    for (const e of eps) s.endpoints[e.id] = e;
    await this.undo(op, () => realizeNetwork(this.kernel, kind.network(net)));
    const have = await this.kernel.links.list().then((l) => new Map(l.map((x) => [x.name, x])), () => new Map());
    for (const e of eps) {
      const link = have.get(e.hostVeth) ?? null;
      if (!link && e.joined) continue;
      await this.undo(op, () => realizeEndpoint(this.kernel, kind.endpoint(e, net), link));
    }
    await this.undo(op, () => this.kernel.firewall.apply(this.view(s)));
    await this.undo(op, () => this.lifecycles.start(net));
    await this.undo(op, () => this.db.save());
  }

  /**
   * Convergence with Docker (converge.ts): in one transaction under the state lock, `decide`
   * names what Docker no longer has, judged against the state as it is now; those networks
   * (with their endpoints), endpoints, pools and addresses go — rules first, then links, then
   * the records — and on any failure all of it is put back, as DeleteNetwork does.
   */
  async removeForgotten(decide: (s: State) => Forgotten): Promise<Forgotten> {
    return this.db.tx(async (s) => {
      const plan = decide(s);
      const nets = plan.networks.filter((id) => Object.hasOwn(s.networks, id)).map((id) => s.networks[id]!);
      const netIds = new Set(nets.map((n) => n.id));
      const eps = Object.values(s.endpoints).filter((e) => netIds.has(e.networkId) || plan.endpoints.includes(e.id));
      const done: Forgotten = {
        networks: nets.map((n) => n.id),
        endpoints: eps.filter((e) => !netIds.has(e.networkId)).map((e) => e.id),
        pools: plan.pools.filter((id) => Object.hasOwn(s.pools, id)),
        addresses: plan.addresses.filter((a) => Object.hasOwn(s.pools, a.pool) && Object.hasOwn(s.pools[a.pool]!.allocated, a.address)),
      };
      if (isEmpty(done)) return done;
      const saved = plainCopy({ nets, eps, pools: s.pools });
      for (const e of eps) delete s.endpoints[e.id];
      for (const n of nets) delete s.networks[n.id];
      forgetPools(s, done.pools, done.addresses);
      try {
        for (const n of nets) await this.lifecycles.stop(n.id);
        await this.kernel.firewall.apply(this.view(s));
        const plans = nets.map((n) => this.kinds.get(n.kind).network(n));
        const routes = plans.flatMap((p) => p.routes);
        if (routes.length) await this.kernel.links.deleteRoutes(routes);
        const links = [...eps.flatMap((e) => [e.hostVeth, e.peerVeth]), ...plans.flatMap((p) => p.links)];
        await this.kernel.links.deleteLinks(links);
        await this.db.save();
      } catch (e) {
        // The pools record by record (the state's collections are never replaced).
        for (const id of Object.keys(s.pools)) if (!Object.hasOwn(saved.pools, id)) delete s.pools[id];
        for (const [id, p] of Object.entries(saved.pools)) if (JSON.stringify(s.pools[id]) !== JSON.stringify(p)) s.pools[id] = p;
        for (const n of saved.nets) s.networks[n.id] = n;
        for (const ep of saved.eps) s.endpoints[ep.id] = ep;
        for (const n of saved.nets) await this.restoreNetwork(s, n, saved.eps.filter((x) => x.networkId === n.id), 'converge');
        const loose = saved.eps.filter((x) => !netIds.has(x.networkId));
        if (loose.length) {
          const have = await this.kernel.links.list().then((l) => new Map(l.map((x) => [x.name, x])), () => new Map());
          for (const ep of loose) {
            const net = s.networks[ep.networkId];
            const link = have.get(ep.hostVeth) ?? null;
            if (net && (link || !ep.joined)) await this.undo('converge', () => realizeEndpoint(this.kernel, this.kinds.get(net.kind).endpoint(ep, net), link));
          }
          await this.undo('converge', () => this.kernel.firewall.apply(this.view(s)));
          await this.undo('converge', () => this.db.save());
        }
        throw e;
      }
      for (const n of nets) await this.undo('converge afterDelete', async () => this.kinds.get(n.kind).lifecycle?.afterDelete?.(n, this.ctx));
      return done;
    });
  }

  // --------------------------------------------------------------- endpoints

  async createEndpoint(spec: EndpointSpec): Promise<{ mac: string }> {
    return this.db.tx(async (s) => {
      const net = s.networks[spec.networkId];
      if (!net || net.phase !== 'ready') fail('UNKNOWN_NETWORK', { networkId: spec.networkId });
      const kind = this.kinds.get(net.kind);
      const existing = s.endpoints[spec.endpointId];
      const mac = spec.mac ?? kind.endpointMac?.(spec.ipv4, net) ?? macFromId(spec.endpointId);
      if (existing) {
        if (existing.networkId === spec.networkId && existing.ipv4 === spec.ipv4 && existing.ipv6 === spec.ipv6 && existing.mac === mac) {
          return { mac };
        }
        fail('ENDPOINT_EXISTS', { endpointId: spec.endpointId });
      }
      if (net.ipv6.length > 0 && net.enableIpv6 === false && spec.ipv6) {
        fail('BAD_REQUEST', { detail: 'IPv6 address given on a network without IPv6' });
      }
      if (net.ipv4.length === 0 && spec.ipv4) fail('BAD_REQUEST', { detail: 'IPv4 address given on a network without IPv4' });
      checkEndpointAddress(spec.ipv4, net);
      checkEndpointAddress(spec.ipv6, net);
      const rec: Endpoint = {
        id: spec.endpointId,
        networkId: spec.networkId,
        phase: 'ready',
        hostVeth: hostVethName(spec.endpointId),
        peerVeth: peerVethName(spec.endpointId),
        mac,
        ipv4: spec.ipv4,
        ipv6: spec.ipv6,
        joined: false,
        ports: [],
        created: this.now(),
      };
      const elements = endpointElements(rec, net, this.kinds);
      // Kernel first, then one save: a crash in between leaves only links with
      // tsbridge's prefixes that no state names, which start-up removes.
      try {
        // The links and the elements (keyed by interface name: they need no link) side by side.
        await settleAll([realizeEndpoint(this.kernel, kind.endpoint(rec, net), null), this.kernel.firewall.addEndpoint(elements)]);
        await kind.lifecycle?.endpointCreated?.(rec, net, this.ctx);
        s.endpoints[rec.id] = rec;
        await this.db.save();
      } catch (e) {
        await this.undo('createEndpoint', () => this.kernel.links.deleteLinks([rec.hostVeth, rec.peerVeth]));
        await this.undo('createEndpoint', () => this.kernel.firewall.removeEndpoint(elements));
        delete s.endpoints[rec.id];
        throw e;
      }
      return { mac };
    });
  }

  async deleteEndpoint(networkId: string, endpointId: string): Promise<void> {
    await this.db.tx(async (s) => {
      const rec = s.endpoints[endpointId];
      if (!rec || rec.networkId !== networkId) return;
      const net = s.networks[networkId];
      const elements = net ? endpointElements(rec, net, this.kinds) : null;
      try {
        if (elements) await this.kernel.firewall.removeEndpoint(elements);
        delete s.endpoints[endpointId];
        // Written, synced by the next durable save — ReleaseAddress's, which Docker sends next — or
        // the store's own a second later. A machine crash that loses it leaves a record whose veth
        // is gone: start-up drops it (src/driver/reconcile.ts).
        await this.db.save({ sync: false });
      } catch (e) {
        // Db puts the record back in memory: the kernel gets its elements back (a failed
        // removal may have removed them all the same).
        if (elements) await this.undo('deleteEndpoint', () => this.kernel.firewall.addEndpoint(elements));
        throw e;
      }
      // The veth is named by the endpoint ID, which Docker never reuses, and no
      // state refers to it any more: tearing it down (tens of ms in the kernel)
      // need not hold up Docker. A crash before it ends leaves a stale link that
      // start-up removes.
      this.inBackground(() => this.kernel.links.deleteLinks([rec.hostVeth, rec.peerVeth]));
    });
  }

  private background: Promise<void> = Promise.resolve();

  private inBackground(fn: () => Promise<void>): void {
    this.background = this.background.then(fn).catch((e) => {
      this.log.warn('background link removal failed', { error: e instanceof Error ? e.message : String(e) });
    });
  }

  /** Resolves when background work (link removal) has finished. */
  async settle(): Promise<void> {
    await this.background;
  }

  /** Stops the long-running work of every network (shutdown); the kernel keeps what it holds. */
  async shutdown(): Promise<void> {
    await this.lifecycles.stopAll(this.log);
  }

  async join(networkId: string, endpointId: string): Promise<JoinInfo> {
    return this.db.tx(async (s) => {
      const net = s.networks[networkId];
      const ep = s.endpoints[endpointId];
      if (!net) fail('UNKNOWN_NETWORK', { networkId });
      if (!ep || ep.networkId !== networkId || ep.phase !== 'ready') fail('UNKNOWN_ENDPOINT', { endpointId, networkId });
      if (!ep.joined) {
        ep.joined = true;
        // Written, synced by the next durable save (or soon after): a machine crash that loses it
        // loses the container's namespace too, and start-up reads `joined` from the veth where
        // that tells (src/driver/reconcile.ts). A killed plugin loses nothing.
        await this.db.save({ sync: false });
      }
      return this.kinds.get(net.kind).join(ep, net);
    });
  }

  async leave(networkId: string, endpointId: string): Promise<void> {
    await this.db.tx(async (s) => {
      const ep = s.endpoints[endpointId];
      if (!ep || ep.networkId !== networkId || !ep.joined) return;
      ep.joined = false;
      // As Join's: written, synced by the next durable save (DeleteEndpoint's, which follows).
      await this.db.save({ sync: false });
    });
  }

  // ----------------------------------------------------------- published ports

  async programExternalConnectivity(networkId: string, endpointId: string, reqs: PortRequest[]): Promise<PortMapping[]> {
    // Reading the host's sockets happens outside the lock: it is the slow part.
    const [listening, ephemeral] = reqs.length ? await Promise.all([this.hostPorts.listening(), this.hostPorts.ephemeralRange()]) : [[], [0, 0] as [number, number]];
    return this.db.tx(async (s) => {
      const net = s.networks[networkId];
      const ep = s.endpoints[endpointId];
      if (!net) fail('UNKNOWN_NETWORK', { networkId });
      if (!ep || ep.networkId !== networkId) fail('UNKNOWN_ENDPOINT', { endpointId, networkId });
      const kind = this.kinds.get(net.kind);
      if (reqs.length === 0) return [];
      const publishing = net.internal ? null : kind.publishing(net);
      if (!publishing) return [];
      const taken = Object.values(s.endpoints)
        .filter((e) => e.id !== ep.id)
        .flatMap((e) => e.ports.map((mapping) => ({ mapping, owner: `endpoint ${e.id.slice(0, 12)}` })));
      const families = { v4: ep.ipv4 !== null, v6: ep.ipv6 !== null };
      const mappings = allocatePorts(reqs, { taken, listening, ephemeral, defaultHostIp: publishing.defaultHostIp, families, routed: publishing.routed });
      // Port elements only: the endpoint's membership (anti-spoofing, isolation) is not this
      // method's to touch.
      const elementsOf = (ports: PortMapping[]) => kind.ports(ep, net, ports);
      const previous = ep.ports;
      // Intent first: a crash from here on leaves state that start-up applies in full.
      ep.ports = mappings;
      await this.db.save();
      try {
        if (previous.length) await this.kernel.firewall.removePorts(elementsOf(previous));
        await this.kernel.firewall.addPorts(elementsOf(mappings));
        // Flows that reached these host ports before (the host itself, a replaced container)
        // must not stick. Part of the call: if it fails (no conntrack binary, a timeout), the
        // ports are unpublished again rather than left in the kernel with nothing recording them.
        await this.kernel.firewall.flushConntrack([...previous, ...mappings].filter((m) => m.proto !== 'tcp'));
      } catch (e) {
        // Back to what was published before, in the kernel and on disk (Db puts memory back).
        await this.undo('programExternalConnectivity', () => this.kernel.firewall.removePorts(elementsOf(mappings)));
        if (previous.length) await this.undo('programExternalConnectivity', () => this.kernel.firewall.addPorts(elementsOf(previous)));
        ep.ports = previous;
        await this.undo('programExternalConnectivity', () => this.db.save());
        throw e;
      }
      return mappings;
    });
  }

  async revokeExternalConnectivity(networkId: string, endpointId: string): Promise<void> {
    await this.db.tx(async (s) => {
      const net = s.networks[networkId];
      const ep = s.endpoints[endpointId];
      if (!net || !ep || ep.ports.length === 0) return;
      // Exactly this endpoint's port elements: its membership stays (the endpoint may stay joined).
      const elements = this.kinds.get(net.kind).ports(ep, net, ep.ports);
      const gone = ep.ports;
      try {
        await this.kernel.firewall.removePorts(elements);
        ep.ports = [];
        await this.db.save();
        await this.kernel.firewall.flushConntrack(gone.filter((m) => m.proto !== 'tcp'));
      } catch (e) {
        // Still published, in the kernel and on disk (Db puts memory back).
        await this.undo('revokeExternalConnectivity', () => this.kernel.firewall.addPorts(elements));
        ep.ports = gone;
        await this.undo('revokeExternalConnectivity', () => this.db.save());
        throw e;
      }
    });
  }

  endpointInfo(networkId: string, endpointId: string): Record<string, unknown> {
    const ep = this.db.state.endpoints[endpointId];
    if (!ep || ep.networkId !== networkId) return {};
    return {
      id: ep.id,
      hostInterface: ep.hostVeth,
      mac: ep.mac,
      ipv4: ep.ipv4,
      ipv6: ep.ipv6,
      ports: ep.ports,
    };
  }

  /** Runs an undo step; an undo that fails is logged, never thrown over the original error. Says whether it worked. */
  private async undo(op: string, fn: () => Promise<unknown>): Promise<boolean> {
    try {
      await fn();
      return true;
    } catch (e) {
      this.log.warn('rollback step failed', { op, error: isTsbridgeError(e) ? e.message : String(e) });
      return false;
    }
  }
}
