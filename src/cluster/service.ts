/**
 * The cluster as the overlay sees it: this host's session (lease, registration, reconcile), a
 * mirror of the cluster's keys (what peers exist), and the operations the IPAM and the overlay
 * network make — each an etcd transaction, each failing with CLUSTER_UNAVAILABLE when etcd cannot
 * be reached, so a new endpoint fails clearly while what exists keeps working from local state.
 */
import { fail } from '../errors.js';
import type { Logger } from '../logging.js';
import { allocateAddress, attachEndpoint, releaseAddress } from './addresses.js';
import type { Cluster } from './context.js';
import { Keys } from './keys.js';
import { PrefixMirror } from './mirror.js';
import { joinOverlay, leaveOverlay, overlayRequest, type JoinedOverlay } from './overlays.js';
import { memberVteps, overlayView, remotePeers, remoteVteps, type OverlayView, type Peer } from './peers.js';
import type { Underlay } from './identity.js';
import { HostSession, type LocalClaims } from './session.js';
import type { ClusterStore } from './store.js';

export interface ClusterOptions {
  hostId: string;
  /** This host's underlay: its address (the VTEP), interface and MTU. */
  underlay: Underlay;
  /** Lease TTL (s). */
  ttlSec: number;
  /** Key prefix (default /tsbridge/). */
  prefix?: string;
  /** The endpoints as configured (for messages). */
  endpoints: string;
  /** Deadline of one store call (ms). */
  timeoutMs: number;
  /** Seconds between reconciles with etcd. */
  reconcileSec?: number;
  /** See HostSession's freshMs. */
  freshMs?: number;
  /** What the local state says this host has. */
  claims: () => LocalClaims;
  log: Logger;
  hostname?: string;
  /** Milliseconds between attempts while etcd is unreachable (default 1000). */
  retryMs?: number;
}

export class ClusterService {
  readonly cluster: Cluster;
  readonly session: HostSession;
  readonly mirror: PrefixMirror;
  readonly underlay: Underlay;
  private readonly queues = new Map<string, Promise<void>>();

  constructor(store: ClusterStore, opts: ClusterOptions) {
    const keys = new Keys(opts.prefix);
    this.underlay = opts.underlay;
    this.cluster = { store, keys, hostId: opts.hostId, endpoints: opts.endpoints, timeoutMs: opts.timeoutMs, log: opts.log };
    this.session = new HostSession(this.cluster, { vtep: opts.underlay.vtep, ttlSec: opts.ttlSec, claims: opts.claims, reconcileSec: opts.reconcileSec, freshMs: opts.freshMs, hostname: opts.hostname, retryMs: opts.retryMs });
    this.mirror = new PrefixMirror(store, keys.root, opts.log, opts.retryMs);
    // After (re)registering, look at the whole picture again: the watch may have missed nothing,
    // but a listing is cheap and makes the copy certain.
    this.session.onRegistration((up) => up && void this.mirror.resync());
  }

  get keys(): Keys {
    return this.cluster.keys;
  }

  get hostId(): string {
    return this.cluster.hostId;
  }

  get vtep(): string {
    return this.session.vtep;
  }

  get registered(): boolean {
    return this.session.registered;
  }

  /** Registers and starts watching, in the background: nothing here waits for etcd. */
  start(): void {
    this.session.start();
    this.mirror.start();
  }

  async stop(opts: { revoke?: boolean } = {}): Promise<void> {
    await this.mirror.stop();
    await this.session.stop(opts);
    await this.cluster.store.close();
  }

  /** Joins (or creates) the overlay; the subnet (and a named gateway) must match the other hosts'. */
  async join(name: string, subnet: string, gateway?: string): Promise<JoinedOverlay> {
    const req = overlayRequest(name, subnet, gateway);
    const lease = this.session.leaseId(`joining overlay ${name}`);
    const joined = await joinOverlay(this.cluster, req, lease, this.vtep);
    this.session.rememberJoin(name, joined);
    return joined;
  }

  /** Leaves the overlay; the last host to leave releases its VNI and subnet. */
  async leave(name: string): Promise<'left' | 'released' | 'absent'> {
    const r = await leaveOverlay(this.cluster, name);
    this.session.forget(name);
    return r;
  }

  private joined(name: string, op: string): JoinedOverlay {
    const j = this.session.incarnation(name);
    if (!j) fail('CLUSTER_UNAVAILABLE', { endpoints: this.cluster.endpoints, op, detail: `this host has not (re)joined overlay ${name} in etcd yet` });
    return j;
  }

  /**
   * An address for a new endpoint of this host (or `want`), taken cluster-wide. This host's own
   * allocations in one overlay go one at a time: they would only race each other.
   */
  async allocate(name: string, want?: string): Promise<string> {
    const previous = this.queues.get(name) ?? Promise.resolve();
    const mine = previous.then(() => {
      const op = `allocating an address in overlay ${name}`;
      const lease = this.session.leaseId(op);
      return allocateAddress(this.cluster, name, this.joined(name, op), lease, want).then((address) => {
        this.session.markFresh(this.cluster.keys.address(name, address));
        return address;
      });
    });
    const settled = mine.then(() => undefined, () => undefined);
    this.queues.set(name, settled);
    void settled.then(() => this.queues.get(name) === settled && this.queues.delete(name));
    return mine;
  }

  /** Records the endpoint's MAC behind its address: peers program it from here. */
  async attach(name: string, address: string, mac: string, endpoint: string): Promise<void> {
    const op = `recording endpoint ${address}`;
    const lease = this.session.leaseId(op);
    await attachEndpoint(this.cluster, name, this.joined(name, op), address, lease, { mac, endpoint });
    this.session.markFresh(this.cluster.keys.address(name, address));
  }

  async release(name: string, address: string): Promise<void> {
    await releaseAddress(this.cluster, name, address);
  }

  /** The remote endpoints of an overlay to program; undefined until the mirror has loaded. */
  peers(name: string): Peer[] | undefined {
    return this.mirror.loaded ? remotePeers(this.mirror.kvs.values(), this.keys, name, this.hostId) : undefined;
  }

  /** Underlay addresses of every other registered host; undefined until the mirror has loaded. */
  vteps(): string[] | undefined {
    return this.mirror.loaded ? remoteVteps(this.mirror.kvs.values(), this.keys, this.hostId) : undefined;
  }

  /** Underlay addresses allowed to send into an overlay (its other members'); undefined until the mirror has loaded. */
  vtepsOf(name: string): string[] | undefined {
    return this.mirror.loaded ? memberVteps(this.mirror.kvs.values(), this.keys, name, this.hostId) : undefined;
  }

  /** Called after every change the watch brings; returns the unsubscribe. */
  onChange(cb: () => void): () => void {
    return this.mirror.onChange(cb);
  }

  view(name: string): OverlayView {
    return overlayView(this.mirror.kvs.values(), this.keys, name);
  }
}
