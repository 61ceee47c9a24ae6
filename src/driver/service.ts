/**
 * The network driver's use cases: networks, endpoints, joins and published
 * ports. Orders the steps, persists each phase, and undoes what it did when a
 * step fails. Touches the kernel only through the Kernel interface.
 */
import { fail, isTsbridgeError } from '../errors.js';
import { overlaps, parsePrefix } from '../net/addr.js';
import type { Logger } from '../logging.js';
import type { HostPorts, Kernel } from '../kernel/types.js';
import type { FirewallView } from '../kernel/rules/nft.js';
import type { EndpointSpec, NetworkSpec, PortRequest } from '../protocol/network.js';
import type { Db } from '../state/db.js';
import type { EndpointRecord, NetworkRecord, PortMapping, State } from '../state/types.js';
import { hostVethName, macFromId, peerVethName } from './names.js';
import { allocatePorts } from './ports.js';

export interface JoinResult {
  srcName: string;
  dstPrefix: string;
  gateway: string;
  gatewayIpv6: string;
}

export function firewallView(s: State): FirewallView {
  return { networks: Object.values(s.networks), endpoints: Object.values(s.endpoints) };
}

export function bridgeAddresses(n: NetworkRecord): string[] {
  const v4 = n.inhibitIpv4 ? [] : n.ipv4.map((x) => x.gateway).filter((g): g is string => !!g);
  const v6 = n.enableIpv6 ? n.ipv6.map((x) => x.gateway).filter((g): g is string => !!g) : [];
  return [...v4, ...v6];
}

function sameNetwork(a: NetworkRecord, b: NetworkSpec): boolean {
  const pick = (n: NetworkSpec | NetworkRecord) => JSON.stringify({ ...n, phase: undefined });
  return pick(a) === pick({ ...b, phase: 'ready' } as NetworkRecord);
}

export class DriverService {
  constructor(
    private readonly db: Db,
    private readonly kernel: Kernel,
    private readonly hostPorts: HostPorts,
    private readonly log: Logger,
  ) {}

  // ---------------------------------------------------------------- networks

  async createNetwork(spec: NetworkSpec): Promise<void> {
    await this.db.tx(async (s) => {
      const existing = s.networks[spec.id];
      if (existing) {
        if (existing.phase === 'ready' && sameNetwork(existing, spec)) {
          await this.realizeNetwork(existing, s); // a retry: make sure the kernel has it
          return;
        }
        fail('NETWORK_EXISTS', { networkId: spec.id });
      }
      for (const other of Object.values(s.networks)) {
        if (other.bridge === spec.bridge) fail('BRIDGE_NAME_IN_USE', { name: spec.bridge, networkId: other.id });
        for (const a of [...spec.ipv4, ...spec.ipv6]) {
          for (const b of [...other.ipv4, ...other.ipv6]) {
            if (overlaps(parsePrefix(a.subnet), parsePrefix(b.subnet))) fail('POOL_OVERLAP', { pool: a.subnet, other: `${b.subnet} of network ${other.id.slice(0, 12)}` });
          }
        }
      }
      const links = await this.kernel.links.list();
      if (links.some((l) => l.name === spec.bridge)) {
        fail('BRIDGE_NAME_IN_USE', { name: spec.bridge, networkId: 'another program (an interface of that name exists)' });
      }
      const rec: NetworkRecord = { ...spec, phase: 'creating' };
      s.networks[rec.id] = rec;
      await this.db.save();
      try {
        await this.realizeNetwork(rec, s);
        rec.phase = 'ready';
        await this.db.save();
      } catch (e) {
        await this.undo('createNetwork', () => this.kernel.links.deleteLinks([rec.bridge]));
        delete s.networks[rec.id];
        await this.undo('createNetwork', () => this.kernel.firewall.applyAll(firewallView(s)));
        await this.undo('createNetwork', () => this.db.save());
        throw e;
      }
    });
  }

  /** Brings the kernel to what the record says (bridge, sysctls, all firewall rules). */
  private async realizeNetwork(rec: NetworkRecord, s: State): Promise<void> {
    await this.kernel.sysctl.ensure('net.ipv4.ip_forward', '1');
    if (rec.enableIpv6 && rec.ipv6.length > 0) {
      await this.kernel.sysctl.ensure('net.ipv6.conf.all.forwarding', '1');
    }
    await this.kernel.links.ensureBridge({ name: rec.bridge, mtu: rec.mtu, addresses: bridgeAddresses(rec), mac: macFromId(rec.id, 'bridge') });
    // Published ports reached through 127.0.0.1 are DNATed onto the bridge: allow that source there.
    await this.kernel.sysctl.ensure(`net.ipv4.conf.${rec.bridge}.route_localnet`, '1');
    await this.kernel.firewall.applyAll(firewallView(s));
  }

  async deleteNetwork(networkId: string): Promise<void> {
    await this.db.tx(async (s) => {
      const rec = s.networks[networkId];
      if (!rec) return; // repeated or unknown: already gone
      rec.phase = 'deleting';
      await this.db.save();
      const eps = Object.values(s.endpoints).filter((e) => e.networkId === networkId);
      await this.kernel.links.deleteLinks([...eps.map((e) => e.hostVeth), rec.bridge]);
      for (const e of eps) delete s.endpoints[e.id];
      delete s.networks[networkId];
      await this.kernel.firewall.applyAll(firewallView(s));
      await this.db.save();
    });
  }

  // --------------------------------------------------------------- endpoints

  async createEndpoint(spec: EndpointSpec): Promise<{ mac: string }> {
    return this.db.tx(async (s) => {
      const net = s.networks[spec.networkId];
      if (!net || net.phase !== 'ready') fail('UNKNOWN_NETWORK', { networkId: spec.networkId });
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
      const rec: EndpointRecord = {
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
      // Kernel first, then one save: a crash in between leaves only links with
      // tsbridge's prefixes that no state names, which start-up removes.
      try {
        await this.kernel.links.ensureVeth({ hostName: rec.hostVeth, peerName: rec.peerVeth, bridge: net.bridge, mtu: net.mtu, mac });
        await this.kernel.firewall.applyEndpoint(rec, net, 'add');
        s.endpoints[rec.id] = rec;
        await this.db.save();
      } catch (e) {
        await this.undo('createEndpoint', () => this.kernel.links.deleteLinks([rec.hostVeth, rec.peerVeth]));
        await this.undo('createEndpoint', () => this.kernel.firewall.applyEndpoint(rec, net, 'delete'));
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
      if (net) await this.kernel.firewall.applyEndpoint(rec, net, 'delete');
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

  async join(networkId: string, endpointId: string): Promise<JoinResult> {
    return this.db.tx(async (s) => {
      const net = s.networks[networkId];
      const ep = s.endpoints[endpointId];
      if (!net) fail('UNKNOWN_NETWORK', { networkId });
      if (!ep || ep.networkId !== networkId || ep.phase !== 'ready') fail('UNKNOWN_ENDPOINT', { endpointId, networkId });
      if (!ep.joined) {
        ep.joined = true;
        await this.db.save();
      }
      // inhibit_ipv4 keeps the address off the bridge, not the route: as with Docker's bridge,
      // the gateway is a router on the bridge's segment (and without one, Docker would hang
      // the container on its docker_gwbridge for egress).
      const gw4 = net.internal ? '' : (net.ipv4[0]?.gateway ?? '').split('/')[0]!;
      const gw6 = net.internal || !net.enableIpv6 || !ep.ipv6 ? '' : (net.ipv6[0]?.gateway ?? '').split('/')[0]!;
      return { srcName: ep.peerVeth, dstPrefix: net.ifacePrefix, gateway: gw4, gatewayIpv6: gw6 };
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
      if (net.internal || reqs.length === 0) return [];
      const taken = Object.values(s.endpoints)
        .filter((e) => e.id !== ep.id)
        .flatMap((e) => e.ports.map((mapping) => ({ mapping, owner: `endpoint ${e.id.slice(0, 12)}` })));
      const families = { v4: ep.ipv4 !== null, v6: ep.ipv6 !== null };
      const mappings = allocatePorts(reqs, { taken, listening, ephemeral, defaultHostIp: net.hostBindingIpv4, families });
      // Port elements only (scope 'ports'): the endpoint's anti-spoofing and no_icc membership
      // are not this method's to touch. (icc on as well, for kernels that only know that hint.)
      const portsNet: NetworkRecord = { ...net, icc: true };
      const portsOf = (ports: PortMapping[]) => ({ ...ep, ports });
      const previous = ep.ports;
      // Intent first: a crash from here on leaves state that start-up applies in full.
      ep.ports = mappings;
      await this.db.save();
      try {
        if (previous.length) await this.kernel.firewall.applyEndpoint(portsOf(previous), portsNet, 'delete', 'ports');
        await this.kernel.firewall.applyEndpoint(portsOf(mappings), portsNet, 'add', 'ports');
      } catch (e) {
        // Back to what was published before, in the kernel and on disk (Db puts memory back).
        await this.undo('programExternalConnectivity', () => this.kernel.firewall.applyEndpoint(portsOf(mappings), portsNet, 'delete', 'ports'));
        if (previous.length) await this.undo('programExternalConnectivity', () => this.kernel.firewall.applyEndpoint(portsOf(previous), portsNet, 'add', 'ports'));
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
      // Exactly this endpoint's map elements (scope 'ports'): its anti-spoofing and no_icc
      // membership stay (the endpoint may stay joined).
      await this.kernel.firewall.applyEndpoint(ep, { ...net, icc: true }, 'delete', 'ports');
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
