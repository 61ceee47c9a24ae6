/**
 * Start-up reconciliation and the periodic sweep. Brings the kernel to the state (recreating what
 * is missing, removing what is stale) and finishes or undoes operations a crash interrupted, for
 * every kind of network alike — through realize.ts, the path CreateNetwork and CreateEndpoint take.
 * Runs before the socket is opened.
 */
import type { Logger } from '../logging.js';
import type { Kernel } from '../kernel/types.js';
import type { Db } from '../state/db.js';
import { isOurLinkName } from '../domain/names.js';
import { firewallView, kindsRuntime, realizeEndpoint, realizeNetwork, type KindsRuntime } from './realize.js';

export interface ReconcileReport {
  networksRestored: number;
  networksDropped: number;
  endpointsDropped: number;
  vethsRecreated: number;
  staleLinksRemoved: string[];
}

export class Reconciler {
  constructor(
    private readonly db: Db,
    private readonly kernel: Kernel,
    private readonly log: Logger,
    private readonly runtime: KindsRuntime = kindsRuntime(kernel, log),
  ) {}

  async startup(): Promise<ReconcileReport> {
    const { kinds, lifecycles } = this.runtime;
    return this.db.tx(async (s) => {
      // A network of a kind this version does not know (a newer one wrote the state): refuse
      // before anything is changed.
      for (const n of Object.values(s.networks)) kinds.get(n.kind);
      const report: ReconcileReport = { networksRestored: 0, networksDropped: 0, endpointsDropped: 0, vethsRecreated: 0, staleLinksRemoved: [] };
      const links = new Map((await this.kernel.links.list()).map((l) => [l.name, l]));
      const toDelete: string[] = [];

      for (const n of Object.values(s.networks)) {
        if (n.phase !== 'ready') {
          // creating: never answered to Docker (it retries); deleting: Docker already forgot it.
          toDelete.push(...kinds.get(n.kind).network(n).links);
          delete s.networks[n.id];
          report.networksDropped++;
        }
      }
      for (const e of Object.values(s.endpoints)) {
        const net = s.networks[e.networkId];
        const gone = e.joined && !links.has(e.hostVeth); // its container's namespace died with the veth
        if (!net || e.phase !== 'ready' || gone) {
          toDelete.push(e.hostVeth, e.peerVeth);
          delete s.endpoints[e.id];
          report.endpointsDropped++;
        }
      }
      await this.kernel.links.deleteLinks(toDelete.filter((n) => links.has(n)));
      await this.db.save();

      const known = new Set<string>();
      for (const n of Object.values(s.networks)) {
        const plan = kinds.get(n.kind).network(n);
        await realizeNetwork(this.kernel, plan);
        for (const l of plan.links) known.add(l);
        report.networksRestored++;
      }
      for (const e of Object.values(s.endpoints)) {
        const net = s.networks[e.networkId]!;
        known.add(e.hostVeth).add(e.peerVeth);
        const have = links.get(e.hostVeth) ?? null;
        if (!have && e.joined) continue; // dropped above: its container is gone
        const done = await realizeEndpoint(this.kernel, kinds.get(net.kind).endpoint(e, net), have);
        if (done === 'created') report.vethsRecreated++;
      }
      // Only links this instance made (their alias says so): another instance's are not ours to judge.
      const stale = [...links.values()]
        .filter((l) => l.owned && isOurLinkName(l.name) && !known.has(l.name) && !toDelete.includes(l.name))
        .map((l) => l.name);
      await this.kernel.links.deleteLinks(stale);
      report.staleLinksRemoved = stale;
      await this.kernel.firewall.apply(firewallView(s, kinds));
      for (const n of Object.values(s.networks)) {
        // A network's work failing to start does not keep the others (or the socket) down.
        await lifecycles.start(n).catch((e: unknown) => this.log.error('a network\'s work did not start', { networkId: n.id.slice(0, 12), kind: n.kind, error: String(e) }));
      }
      return report;
    });
  }

  /**
   * Forgets endpoints whose container died without Docker telling us (its
   * namespace, and so both veth ends, are gone), and re-checks the firewall
   * (what dockerd may have changed around the forward shim since).
   */
  async sweep(): Promise<number> {
    const { kinds } = this.runtime;
    return this.db.tx(async (s) => {
      if (Object.keys(s.networks).length > 0) await this.kernel.firewall.refresh(firewallView(s, kinds));
      const joined = Object.values(s.endpoints).filter((e) => e.joined && e.phase === 'ready');
      if (joined.length === 0) return 0;
      const links = new Set((await this.kernel.links.list()).map((l) => l.name));
      const dead = joined.filter((e) => !links.has(e.hostVeth));
      if (dead.length === 0) return 0;
      for (const e of dead) delete s.endpoints[e.id];
      await this.kernel.firewall.apply(firewallView(s, kinds));
      await this.db.save();
      this.log.info('swept endpoints of dead containers', { endpoints: dead.map((e) => e.id.slice(0, 12)) });
      return dead.length;
    });
  }
}
