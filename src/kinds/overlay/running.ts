/**
 * An overlay network's long-running work: whenever the etcd watch brings a change (and every 30 s,
 * to repair drift), this host's kernel is brought to what the cluster says — the remote endpoints
 * on the VXLAN device (FDB + neighbour entries, a diff against what the device holds) and the VTEPs
 * allowed to send into the overlay (the network's settings, so the firewall renders them). While
 * nothing is known yet (etcd not reached since start-up) nothing is touched: what the kernel holds
 * keeps working.
 */
import { diffPeers } from '../../cluster/peers.js';
import type { Network } from '../../domain/types.js';
import type { RemoteEndpoint } from '../../kernel/types.js';
import type { KindContext, Running } from '../types.js';
import { settingsOf, toSettings } from './settings.js';

const REPAIR_MS = 30_000;
const DEBOUNCE_MS = 20;

export function startOverlay(net: Network, ctx: KindContext): Running {
  const cluster = ctx.cluster;
  const { overlay, vxlan } = settingsOf(net);
  if (!cluster) {
    ctx.log.error('overlay network without a cluster: its peers are not programmed (set TSBRIDGE_ETCD_ENDPOINTS)', { networkId: net.id.slice(0, 12), overlay });
    return { stop: async () => undefined };
  }
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let chain: Promise<void> = Promise.resolve();
  // What the device holds, as last programmed: read from the kernel at the start, after a
  // failure and at every repair, so most changes cost just the commands that make them.
  let programmed: RemoteEndpoint[] | undefined;

  const sync = async () => {
    if (stopped) return;
    const t0 = Date.now();
    const peers = cluster.peers(overlay);
    const vteps = cluster.vtepsOf(overlay);
    if (peers === undefined || vteps === undefined) return;
    const want: RemoteEndpoint[] = peers.map((p) => ({ address: p.address, mac: p.mac, vtep: p.vtep }));
    const have = programmed ?? (await ctx.kernel.links.remoteEndpoints(vxlan));
    programmed = undefined; // until this change is known to be made
    const diff = diffPeers(
      have.map((h) => ({ ...h, host: '' })),
      want.map((w) => ({ ...w, host: '' })),
    );
    const strip = (xs: { address: string; mac: string; vtep: string }[]) => xs.map(({ address, mac, vtep }) => ({ address, mac, vtep }));
    if (diff.add.length || diff.remove.length) {
      await ctx.kernel.links.changeRemoteEndpoints(vxlan, { add: strip(diff.add), remove: strip(diff.remove) });
    }
    programmed = want;
    const current = ctx.state?.().networks[net.id];
    const had = current ? settingsOf(current).vteps : [];
    const vtepsChanged = had.join(',') !== vteps.join(',');
    if (vtepsChanged && ctx.updateSettings) {
      await ctx.updateSettings(net.id, (st) => {
        const s = settingsOf({ settings: st });
        return s.vteps.join(',') === vteps.join(',') ? null : toSettings({ ...s, vteps });
      });
    }
    if (diff.add.length || diff.remove.length || vtepsChanged) {
      ctx.log.info('overlay peers programmed', {
        networkId: net.id.slice(0, 12),
        overlay,
        added: diff.add.map((p) => p.address),
        removed: diff.remove.map((p) => p.address),
        peers: want.length,
        vteps,
        ms: Date.now() - t0,
      });
    }
  };

  const schedule = () => {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      chain = chain.then(sync).catch((e: unknown) => {
        ctx.log.warn('programming overlay peers failed; trying again', { networkId: net.id.slice(0, 12), overlay, error: e instanceof Error ? e.message : String(e) });
        timer = setTimeout(schedule, 1000);
        timer.unref?.();
      });
    }, DEBOUNCE_MS);
    timer.unref?.();
  };

  const unsubscribe = cluster.onChange(schedule);
  const repair = setInterval(() => {
    programmed = undefined; // look at the kernel again: someone may have changed it
    schedule();
  }, REPAIR_MS);
  repair.unref?.();
  schedule();
  return {
    async stop() {
      stopped = true;
      unsubscribe();
      clearInterval(repair);
      clearTimeout(timer);
      await chain;
    },
  };
}
