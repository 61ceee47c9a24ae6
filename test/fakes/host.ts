/**
 * The host as the IPAM and the port allocator see it, configurable per test:
 * routes/addresses a pool must avoid, sockets a published port must not steal,
 * and the ephemeral port range for HostPort 0.
 */
import type { Listener } from '../../src/driver/ports.js';
import type { HostPorts, HostRoute, HostRoutes, HostView } from '../../src/kernel/types.js';

export class FakeHost implements HostView, HostPorts, HostRoutes {
  /** The main routing table (default routes included), for the checks of a new network's subnets. */
  table: HostRoute[];
  resolvers: string[];
  /** Route destinations, interface addresses and nameservers (CIDRs or plain addresses). */
  routes: string[];
  listeners: Listener[];
  ephemeral: [number, number];
  /** How often each view was read. */
  readonly reads = { takenPrefixes: 0, listening: 0, ephemeralRange: 0 };

  constructor(init: { routes?: string[]; listeners?: Listener[]; ephemeral?: [number, number]; table?: HostRoute[]; resolvers?: string[] } = {}) {
    this.table = init.table ?? [];
    this.resolvers = init.resolvers ?? [];
    this.routes = init.routes ?? [];
    this.listeners = init.listeners ?? [];
    this.ephemeral = init.ephemeral ?? [49152, 49159];
  }

  async takenPrefixes(): Promise<string[]> {
    this.reads.takenPrefixes++;
    return [...this.routes];
  }

  async routeTable(): Promise<HostRoute[]> {
    return this.table.map((r) => ({ ...r }));
  }

  async nameservers(): Promise<string[]> {
    return [...this.resolvers];
  }

  async listening(): Promise<Listener[]> {
    this.reads.listening++;
    return this.listeners.map((l) => ({ ...l }));
  }

  async ephemeralRange(): Promise<[number, number]> {
    this.reads.ephemeralRange++;
    return [this.ephemeral[0], this.ephemeral[1]];
  }
}
