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
import type { HostPorts, Kernel } from '../kernel/types.js';
import type { EndpointSpec, JoinInfo, Network, NetworkSpec, PortMapping, PortRequest } from '../domain/types.js';
import { hostVethName, macFromId, peerVethName } from '../domain/names.js';
import type { Db } from '../state/db.js';
import type { Endpoint, State } from '../state/types.js';
import type { KindContext, KindRegistry } from '../kinds/types.js';
import { allocatePorts } from './ports.js';
import { endpointElements, firewallView, kindsRuntime, realizeEndpoint, realizeNetwork, type KindsRuntime, type Lifecycles } from './realize.js';

export { kindsRuntime, type KindsRuntime };

function specOf(n: Network): NetworkSpec {
  const { phase: _phase, ...spec } = n;
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
    private readonly hostPorts: HostPorts,
    private readonly log: Logger,
    runtime: KindsRuntime = kindsRuntime(kernel, log),
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
      const net: Network = { ...spec, phase: 'creating' };
      let plan = kind.network(net);
      for (const other of Object.values(s.networks)) {
        const taken = this.kinds.get(other.kind).network(other).links;
        const clash = plan.links.find((l) => taken.includes(l));
        if (clash) fail('BRIDGE_NAME_IN_USE', { name: clash, networkId: other.id });
        for (const a of [...spec.ipv4, ...spec.ipv6]) {
          for (const b of [...other.ipv4, ...other.ipv6]) {
            if (overlaps(parsePrefix(a.subnet), parsePrefix(b.subnet))) fail('POOL_OVERLAP', { pool: a.subnet, other: `${b.subnet} of network ${other.id.slice(0, 12)}` });
          }
        }
      }
      const links = new Set((await this.kernel.links.list()).map((l) => l.name));
      const held = plan.links.find((l) => links.has(l));
      if (held) fail('BRIDGE_NAME_IN_USE', { name: held, networkId: 'another program (an interface of that name exists)' });
      const completed = await kind.lifecycle?.beforeCreate?.(net, this.ctx);
      if (completed) {
        net.settings = completed;
        plan = kind.network(net);
      }

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
        await this.undo('createNetwork', () => this.kernel.links.deleteLinks(plan.links));
        delete s.networks[net.id];
        await this.undo('createNetwork', () => this.kernel.firewall.apply(this.view(s)));
        await this.undo('createNetwork', () => this.db.save());
        throw e;
      }
    });
  }

  async deleteNetwork(networkId: string): Promise<void> {
    await this.db.tx(async (s) => {
      const net = s.networks[networkId];
      if (!net) return; // repeated or unknown: already gone
      const kind = this.kinds.get(net.kind);
      net.phase = 'deleting';
      await this.db.save();
      await this.lifecycles.stop(networkId);
      const eps = Object.values(s.endpoints).filter((e) => e.networkId === networkId);
      await this.kernel.links.deleteLinks([...eps.map((e) => e.hostVeth), ...kind.network(net).links]);
      for (const e of eps) delete s.endpoints[e.id];
      delete s.networks[networkId];
      await this.kernel.firewall.apply(this.view(s));
      await this.db.save();
      await kind.lifecycle?.afterDelete?.(net, this.ctx);
    });
  }

  // --------------------------------------------------------------- endpoints

  async createEndpoint(spec: EndpointSpec): Promise<{ mac: string }> {
    return this.db.tx(async (s) => {
      const net = s.networks[spec.networkId];
      if (!net || net.phase !== 'ready') fail('UNKNOWN_NETWORK', { networkId: spec.networkId });
      const kind = this.kinds.get(net.kind);
      const existing = s.endpoints[spec.endpointId];
      const mac = spec.mac ?? macFromId(spec.endpointId);
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
      };
      const elements = endpointElements(rec, net, this.kinds);
      // Kernel first, then one save: a crash in between leaves only links with
      // tsbridge's prefixes that no state names, which start-up removes.
      try {
        await realizeEndpoint(this.kernel, kind.endpoint(rec, net), null);
        await this.kernel.firewall.addEndpoint(elements);
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
      if (net) await this.kernel.firewall.removeEndpoint(endpointElements(rec, net, this.kinds));
      delete s.endpoints[endpointId];
      await this.db.save();
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
        await this.db.save();
      }
      return this.kinds.get(net.kind).join(ep, net);
    });
  }

  async leave(networkId: string, endpointId: string): Promise<void> {
    await this.db.tx(async (s) => {
      const ep = s.endpoints[endpointId];
      if (!ep || ep.networkId !== networkId || !ep.joined) return;
      ep.joined = false;
      await this.db.save();
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
      const publishing = net.internal ? null : kind.publishing(net);
      if (!publishing || reqs.length === 0) return [];
      const taken = Object.values(s.endpoints)
        .filter((e) => e.id !== ep.id)
        .flatMap((e) => e.ports.map((mapping) => ({ mapping, owner: `endpoint ${e.id.slice(0, 12)}` })));
      const families = { v4: ep.ipv4 !== null, v6: ep.ipv6 !== null };
      const mappings = allocatePorts(reqs, { taken, listening, ephemeral, defaultHostIp: publishing.defaultHostIp, families });
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
      } catch (e) {
        // Back to what was published before, in the kernel and on disk (Db puts memory back).
        await this.undo('programExternalConnectivity', () => this.kernel.firewall.removePorts(elementsOf(mappings)));
        if (previous.length) await this.undo('programExternalConnectivity', () => this.kernel.firewall.addPorts(elementsOf(previous)));
        ep.ports = previous;
        await this.undo('programExternalConnectivity', () => this.db.save());
        throw e;
      }
      // Flows that reached these host ports before (the host itself, a replaced container) must not stick.
      await this.kernel.firewall.flushConntrack([...previous, ...mappings].filter((m) => m.proto !== 'tcp'));
      return mappings;
    });
  }

  async revokeExternalConnectivity(networkId: string, endpointId: string): Promise<void> {
    await this.db.tx(async (s) => {
      const net = s.networks[networkId];
      const ep = s.endpoints[endpointId];
      if (!net || !ep || ep.ports.length === 0) return;
      // Exactly this endpoint's port elements: its membership stays (the endpoint may stay joined).
      await this.kernel.firewall.removePorts(this.kinds.get(net.kind).ports(ep, net, ep.ports));
      const gone = ep.ports;
      ep.ports = [];
      await this.db.save();
      await this.kernel.firewall.flushConntrack(gone.filter((m) => m.proto !== 'tcp'));
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

  /** Runs an undo step; an undo that fails is logged, never thrown over the original error. */
  private async undo(op: string, fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      this.log.warn('rollback step failed', { op, error: isTsbridgeError(e) ? e.message : String(e) });
    }
  }
}
