/**
 * The cluster as this host sees it, for `tsbridge status` (through the plugin's health call): this
 * host's id, VTEP and registration, and for each overlay it has, the overlay's config, hosts and
 * endpoints as the etcd watch last told — no etcd call, so it answers while etcd is away too.
 */
import type { OverlayView } from './peers.js';
import type { ClusterService } from './service.js';

export interface ClusterReport {
  hostId: string;
  vtep: string;
  /** Registered in etcd right now (holding a lease). */
  registered: boolean;
  /** The watch has loaded at least once since start-up (what follows is etcd's view, not nothing). */
  loaded: boolean;
  /** What the last reconcile with etcd could not put right. */
  conflicts: string[];
  overlays: OverlayView[];
}

export function clusterReport(cluster: ClusterService, overlays: string[]): ClusterReport {
  return {
    hostId: cluster.hostId,
    vtep: cluster.vtep,
    registered: cluster.registered,
    loaded: cluster.mirror.loaded,
    conflicts: [...cluster.session.conflicts],
    overlays: [...new Set(overlays)].sort().map((name) => cluster.view(name)),
  };
}
