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
import { claimedNames, firewallView, kindsRuntime, realizeEndpoint, realizeNetwork, releaseNetwork, type KindsRuntime } from './realize.js';

export interface ReconcileReport {
  networksRestored: number;
  networksDropped: number;
  endpointsDropped: number;
  vethsRecreated: number;
  staleLinksRemoved: string[];
}

/**
 * How long a joined endpoint's container end must be seen in the host namespace, sweep after
 * sweep, before the sweep counts its container dead. Docker moves that end into the container
 * only when runc runs its hook, after Join has answered: with fifty `docker run` at once on a
 * loaded two-core host that took more than one 30 s sweep interval (CI, Docker 20.10), and the
 * sweep took the veth away from under a starting container. A container removed while the
 * plugin was down is start-up's to drop, at once; this is for the rarer Leave that never came.
 */
export const PEER_BACK_MS = 180_000;

export class Reconciler {
  /** Joined endpoints whose container end the sweeps have found back in the host namespace, each with when first seen so (ms). */
  private peerBack = new Map<string, number>();

  constructor(
    private readonly db: Db,
    private readonly kernel: Kernel,
    private readonly log: Logger,
    private readonly runtime: KindsRuntime = kindsRuntime(kernel, log),
    private readonly now: () => number = Date.now,
    private readonly peerBackMs: number = PEER_BACK_MS,
  ) {}

  async startup(): Promise<ReconcileReport> {
    const { kinds, lifecycles } = this.runtime;
    return this.db.tx(async (s) => {
      // A network of a kind this version does not know (a newer one wrote the state), or a
      // record its kind cannot read: refuse before anything is changed.
      for (const n of Object.values(s.networks)) kinds.get(n.kind).network(n);
      const report: ReconcileReport = { networksRestored: 0, networksDropped: 0, endpointsDropped: 0, vethsRecreated: 0, staleLinksRemoved: [] };
      const links = new Map((await this.kernel.links.list()).map((l) => [l.name, l]));
      const toDelete: string[] = [];

      for (const n of Object.values(s.networks)) {
        if (n.phase !== 'ready') {
          // creating: never answered to Docker (it retries); deleting: Docker already forgot it.
          // What it took over from the host (an uplink and the addresses moved with it) is
          // given back first; when that fails the record stays, for the next start.
          const plan = kinds.get(n.kind).network(n);
          try {
            await releaseNetwork(this.kernel, plan);
          } catch (e) {
            this.log.error('could not give back what a half-made or half-deleted network took over from the host; its record is kept for the next start', {
              networkId: n.id.slice(0, 12), kind: n.kind, adopted: JSON.stringify(n.adopted ?? null), error: String(e),
            });
            n.phase = 'deleting';
            continue;
          }
          if (plan.routes.length) await this.kernel.links.deleteRoutes(plan.routes);
          toDelete.push(...plan.links);
          delete s.networks[n.id];
          report.networksDropped++;
        }
      }
      for (const e of Object.values(s.endpoints)) {
        const net = s.networks[e.networkId];
        // Join's save is synced after its reply (src/state/store.ts, `sync: false`): a machine
        // crash may lose it. Where the kernel tells — the host end here, the container end not in
        // the host namespace (it is in the container's) — the endpoint is joined whatever the flag.
        // (Leave's, lost so, leaves `joined` set on an endpoint Docker deletes next: dropped below
        // as its veth went back to the host, or with the namespaces of a crashed machine.)
        if (!e.joined && e.phase === 'ready' && links.has(e.hostVeth) && !links.has(e.peerVeth)) e.joined = true;
        // Its container is gone: the veth died with the container's namespace, or Docker removed
        // the container while the plugin was down and moved the container's end back to the host
        // (as it does when tearing a sandbox down). No Join is in flight: the socket is not open yet.
        const gone = e.joined && (!links.has(e.hostVeth) || links.has(e.peerVeth));
        if (!net || net.phase !== 'ready' || e.phase !== 'ready' || gone) {
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
        for (const l of claimedNames(plan)) known.add(l);
        if (n.phase !== 'ready') continue; // kept above: its uplink is still to be given back
        // An uplink that is gone (unplugged, renamed) does not keep the others down.
        await realizeNetwork(this.kernel, plan, (name) =>
          this.log.error('uplink missing: the network comes back without its way to the LAN; restart tsbridge once the interface is back', { networkId: n.id.slice(0, 12), uplink: name }),
        );
        report.networksRestored++;
      }
      for (const e of Object.values(s.endpoints)) {
        const net = s.networks[e.networkId]!;
        known.add(e.hostVeth).add(e.peerVeth);
        const have = links.get(e.hostVeth) ?? null;
        if (!have && e.joined) continue; // dropped above: its container is gone (not reached: dropped endpoints are no longer in the state)
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
      for (const n of Object.values(s.networks).filter((x) => x.phase === 'ready')) {
        // A network's work failing to start does not keep the others (or the socket) down.
        await lifecycles.start(n).catch((e: unknown) => this.log.error('a network\'s work did not start', { networkId: n.id.slice(0, 12), kind: n.kind, error: String(e) }));
      }
      return report;
    });
  }

  /**
   * Checks tsbridge's rules against the state now (the firewall's refresh, under the state
   * lock): a table, chain, rule or set element someone else removed is applied again, and so is
   * a removed forward shim. What the nft monitor calls when another program touched them.
   */
  async checkFirewall(): Promise<void> {
    const { kinds } = this.runtime;
    await this.db.tx(async (s) => {
      await this.kernel.firewall.refresh(firewallView(s, kinds));
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
      // Also what someone else did to tsbridge's rules: re-applied in full when they are gone or altered.
      if (Object.keys(s.networks).length > 0) await this.kernel.firewall.refresh(firewallView(s, kinds));
      const joined = Object.values(s.endpoints).filter((e) => e.joined && e.phase === 'ready');
      if (joined.length === 0) {
        this.peerBack.clear();
        return 0;
      }
      const links = new Set((await this.kernel.links.list()).map((l) => l.name));
      // A joined endpoint whose container end is in the host namespace: Docker moved it back when
      // it removed the container while the plugin was down — or Docker has not moved it into the
      // container yet: after Join, until runc's hook runs (seconds; tens of seconds under load).
      // Only sweeps that have seen it so for PEER_BACK_MS in a row count it dead.
      const t = this.now();
      const back = new Map(joined.filter((e) => links.has(e.hostVeth) && links.has(e.peerVeth)).map((e) => [e.id, this.peerBack.get(e.id) ?? t] as const));
      const dead = joined.filter((e) => !links.has(e.hostVeth) || t - (back.get(e.id) ?? t) >= this.peerBackMs);
      for (const e of dead) back.delete(e.id);
      this.peerBack = back;
      if (dead.length === 0) return 0;
      for (const e of dead) delete s.endpoints[e.id];
      try {
        await this.kernel.firewall.apply(firewallView(s, kinds));
        await this.db.save();
      } catch (err) {
        // Db puts the records back in memory; the kernel gets their elements back too.
        for (const e of dead) s.endpoints[e.id] = e;
        await this.kernel.firewall.apply(firewallView(s, kinds)).catch((x: unknown) => this.log.warn('rollback step failed', { op: 'sweep', error: String(x) }));
        throw err;
      }
      // Their veths, where Docker left them in the host: no state names them any more (a failure
      // here leaves links that start-up removes).
      const leftover = dead.filter((e) => links.has(e.hostVeth)).flatMap((e) => [e.hostVeth, e.peerVeth]);
      if (leftover.length) await this.kernel.links.deleteLinks(leftover).catch((x: unknown) => this.log.warn('removing the veths of dead containers failed', { error: String(x) }));
      this.log.info('swept endpoints of dead containers', { endpoints: dead.map((e) => e.id.slice(0, 12)) });
      return dead.length;
    });
  }
}
