/**
 * Start-up reconciliation and the periodic sweep. Brings the kernel to the
 * state (recreating what is missing, removing what is stale) and finishes or
 * undoes operations a crash interrupted. Runs before the socket is opened.
 */
import type { Logger } from '../logging.js';
import type { Kernel } from '../kernel/types.js';
import type { Db } from '../state/db.js';
import { isOurLinkName, macFromId } from './names.js';
import { bridgeAddresses, firewallView } from './service.js';

export interface ReconcileReport {
  networksRestored: number;
  networksDropped: number;
  endpointsDropped: number;
  vethsRecreated: number;
  staleLinksRemoved: string[];
}

export class Reconciler {
  constructor(private readonly db: Db, private readonly kernel: Kernel, private readonly log: Logger) {}

  async startup(): Promise<ReconcileReport> {
    return this.db.tx(async (s) => {
      const report: ReconcileReport = { networksRestored: 0, networksDropped: 0, endpointsDropped: 0, vethsRecreated: 0, staleLinksRemoved: [] };
      const links = new Map((await this.kernel.links.list()).map((l) => [l.name, l]));
      const toDelete: string[] = [];

      for (const n of Object.values(s.networks)) {
        if (n.phase !== 'ready') {
          // creating: never answered to Docker (it retries); deleting: Docker already forgot it.
          toDelete.push(n.bridge);
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

      for (const n of Object.values(s.networks)) {
        await this.kernel.sysctl.ensure('net.ipv4.ip_forward', '1');
        if (n.enableIpv6 && n.ipv6.length) await this.kernel.sysctl.ensure('net.ipv6.conf.all.forwarding', '1');
        await this.kernel.links.ensureBridge({ name: n.bridge, mtu: n.mtu, addresses: bridgeAddresses(n), mac: macFromId(n.id, 'bridge') });
        await this.kernel.sysctl.ensure(`net.ipv4.conf.${n.bridge}.route_localnet`, '1');
        report.networksRestored++;
      }
      for (const e of Object.values(s.endpoints)) {
        const net = s.networks[e.networkId]!;
        const link = links.get(e.hostVeth);
        if (link) {
          // A surviving veth whose bridge was rebuilt has no master any more: put it back.
          if (link.master !== net.bridge) await this.kernel.links.attachToBridge(e.hostVeth, net.bridge);
          continue;
        }
        if (e.joined) continue; // dropped above: its container is gone
        await this.kernel.links.ensureVeth({ hostName: e.hostVeth, peerName: e.peerVeth, bridge: net.bridge, mtu: net.mtu, mac: e.mac });
        report.vethsRecreated++;
      }
      const known = new Set<string>();
      for (const n of Object.values(s.networks)) known.add(n.bridge);
      for (const e of Object.values(s.endpoints)) known.add(e.hostVeth).add(e.peerVeth);
      // Only links this instance made (their alias says so): another instance's are not ours to judge.
      const stale = [...links.values()]
        .filter((l) => l.owned && isOurLinkName(l.name) && !known.has(l.name) && !toDelete.includes(l.name))
        .map((l) => l.name);
      await this.kernel.links.deleteLinks(stale);
      report.staleLinksRemoved = stale;
      await this.kernel.firewall.applyAll(firewallView(s));
      return report;
    });
  }

  /**
   * Forgets endpoints whose container died without Docker telling us (its
   * namespace, and so both veth ends, are gone), and re-checks the firewall
   * (what dockerd may have changed around the forward shim since).
   */
  async sweep(): Promise<number> {
    return this.db.tx(async (s) => {
      if (Object.keys(s.networks).length > 0) await this.kernel.firewall.refresh?.(firewallView(s));
      const joined = Object.values(s.endpoints).filter((e) => e.joined && e.phase === 'ready');
      if (joined.length === 0) return 0;
      const links = new Set((await this.kernel.links.list()).map((l) => l.name));
      const dead = joined.filter((e) => !links.has(e.hostVeth));
      if (dead.length === 0) return 0;
      for (const e of dead) delete s.endpoints[e.id];
      await this.kernel.firewall.applyAll(firewallView(s));
      await this.db.save();
      this.log.info('swept endpoints of dead containers', { endpoints: dead.map((e) => e.id.slice(0, 12)) });
      return dead.length;
    });
  }
}
