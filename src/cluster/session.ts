/**
 * This host in the cluster: its registration (a key on a lease it keeps alive) and the keys it
 * owns, brought in line with its local state.
 *
 * - start() registers in the background and keeps trying while etcd is unreachable; nothing
 *   waits for it (a plugin starts and serves what it has without etcd).
 * - When the lease is lost (etcd unreachable for longer than its TTL, or revoked), etcd has
 *   deleted every key on it: the session registers again with a new lease and puts back what the
 *   local state says this host has (reconcile).
 * - reconcile() also runs periodically: keys of this host that the local state no longer has
 *   (left by a crash between etcd and the state file) are deleted; keys it has but etcd lacks are
 *   created again — unless another host took them meanwhile, which is reported as a conflict.
 */
import os from 'node:os';
import { fail, isTsbridgeError } from '../errors.js';
import { encodeAddress, encodeHost, parseAddress as parseRecord, parseMember, type OverlayConfig } from './keys.js';
import { guarded, type Cluster } from './context.js';
import { joinOverlay, leaveOverlay, type JoinedOverlay } from './overlays.js';
import type { Lease } from './store.js';

/** What the local state says this host has. */
export interface LocalClaims {
  overlays: { name: string; config: OverlayConfig }[];
  addresses: { overlay: string; address: string; mac: string; endpoint: string }[];
}

export interface SessionOptions {
  vtep: string;
  ttlSec: number;
  claims: () => LocalClaims;
  /** Seconds between reconciles while registered (0 = only after registering). */
  reconcileSec?: number;
  /** Milliseconds an address this process took is spared by reconcile (default 120 s). */
  freshMs?: number;
  hostname?: string;
  /** Milliseconds between registration attempts while etcd is unreachable (default 1000). */
  retryMs?: number;
}

export interface ReconcileReport {
  joined: string[];
  restored: string[];
  removed: string[];
  conflicts: string[];
}

/** How long an address this process took is spared by reconcile while the IPAM records it. */
const FRESH_MS = 120_000;

export class HostSession {
  private lease: Lease | undefined;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;
  /**
   * Address keys this process took in etcd lately, by key → when. Between the allocation in etcd
   * and the IPAM's save the local state does not claim them yet; a reconcile in that window must
   * not take them for a crash's leftovers (another host would get the address). A real leftover
   * comes from a crash, after which this map starts empty.
   */
  private readonly fresh = new Map<string, number>();
  private registering: Promise<void> | undefined;
  private readonly incarnations = new Map<string, JoinedOverlay>();
  private readonly listeners: ((registered: boolean) => void)[] = [];
  /** Conflicts of the last reconcile (for status). */
  conflicts: string[] = [];

  constructor(
    private readonly c: Cluster,
    private readonly opts: SessionOptions,
  ) {}

  get registered(): boolean {
    return this.lease !== undefined;
  }

  get vtep(): string {
    return this.opts.vtep;
  }

  /** The lease keys of this host go on; CLUSTER_UNAVAILABLE while not registered. */
  leaseId(op: string): string {
    if (!this.lease) fail('CLUSTER_UNAVAILABLE', { endpoints: this.c.endpoints, op, detail: 'this host is not registered in etcd (yet)' });
    return this.lease.id;
  }

  /** The overlay incarnation this host joined (set by join and reconcile). */
  incarnation(name: string): JoinedOverlay | undefined {
    return this.incarnations.get(name);
  }

  rememberJoin(name: string, joined: JoinedOverlay): void {
    this.incarnations.set(name, joined);
  }

  forget(name: string): void {
    this.incarnations.delete(name);
  }

  onRegistration(cb: (registered: boolean) => void): void {
    this.listeners.push(cb);
  }

  /** Registers in the background, retrying until it works. */
  start(): void {
    this.stopped = false;
    void this.register();
  }

  /** Resolves once registered (or rejects after `timeoutMs`). */
  async whenRegistered(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.registered) {
      if (Date.now() > deadline) throw new Error(`not registered in etcd within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** One registration attempt at a time; schedules the next on failure. */
  register(): Promise<void> {
    this.registering ??= this.tryRegister().finally(() => (this.registering = undefined));
    return this.registering;
  }

  private async tryRegister(): Promise<void> {
    if (this.stopped || this.lease) return;
    const t0 = Date.now();
    let lease: Lease | undefined;
    try {
      lease = await guarded(this.c, 'granting a lease', () => this.c.store.grantLease(this.opts.ttlSec));
      const got = lease;
      got.onLost((err) => this.lost(got, err));
      const record = encodeHost({ vtep: this.opts.vtep, hostname: this.opts.hostname ?? os.hostname(), since: new Date().toISOString() });
      await guarded(this.c, 'registering this host', () => this.c.store.txn([], [{ put: this.c.keys.host(this.c.hostId), value: record, lease: got.id }]));
      if (this.stopped) {
        got.release();
        return;
      }
      this.lease = got;
      const report = await this.reconcile();
      this.c.log.info('registered in etcd', { host: this.c.hostId, vtep: this.opts.vtep, lease: got.id, ttl: this.opts.ttlSec, ...report, ms: Date.now() - t0 });
      this.listeners.forEach((l) => l(true));
      this.scheduleReconcile();
    } catch (e) {
      if (lease && !this.lease) lease.release();
      this.c.log.warn('etcd registration failed; retrying', { host: this.c.hostId, error: e instanceof Error ? e.message : String(e), ms: Date.now() - t0 });
      this.retryLater();
    }
  }

  private lost(lease: Lease, err: Error): void {
    if (this.lease !== lease) return;
    this.lease = undefined;
    this.incarnations.clear();
    clearTimeout(this.reconcileTimer);
    this.c.log.warn('etcd lease lost: its keys are gone; registering again', { host: this.c.hostId, lease: lease.id, error: err.message });
    this.listeners.forEach((l) => l(false));
    this.retryLater(0);
  }

  private retryLater(ms = this.opts.retryMs ?? 1000): void {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.register(), ms);
    this.retryTimer.unref?.();
  }

  private scheduleReconcile(): void {
    const every = this.opts.reconcileSec ?? 30;
    if (!every || this.stopped) return;
    clearTimeout(this.reconcileTimer);
    this.reconcileTimer = setTimeout(() => {
      this.reconcile()
        .then((r) => {
          if (r.joined.length || r.restored.length || r.removed.length || r.conflicts.length) this.c.log.info('reconciled with etcd', { host: this.c.hostId, ...r });
        })
        .catch((e) => this.c.log.warn('reconcile with etcd failed', { host: this.c.hostId, error: e instanceof Error ? e.message : String(e) }))
        .finally(() => this.scheduleReconcile());
    }, every * 1000);
    this.reconcileTimer.unref?.();
  }

  /**
   * Brings this host's keys in etcd in line with the local state: joins its overlays again
   * (same subnet and VNI), puts back its addresses, deletes what it no longer has.
   */
  async reconcile(): Promise<ReconcileReport> {
    const lease = this.leaseId('reconciling with etcd');
    const claims = this.opts.claims();
    const report: ReconcileReport = { joined: [], restored: [], removed: [], conflicts: [] };
    const { kvs } = await guarded(this.c, 'reading this host\'s keys', () => this.c.store.list(this.c.keys.overlays()));
    const byKey = new Map(kvs.map((kv) => [kv.key, kv]));
    const claimedOverlays = new Set(claims.overlays.map((o) => o.name));

    for (const ov of claims.overlays) {
      const member = byKey.get(this.c.keys.member(ov.name, this.c.hostId));
      const config = byKey.get(this.c.keys.config(ov.name));
      const current = this.incarnations.get(ov.name);
      const fresh = member && member.lease === lease && parseMember(member.value)?.vtep === this.opts.vtep && config && current && config.createRevision === current.createRevision;
      if (fresh) continue;
      try {
        const joined = await joinOverlay(this.c, { name: ov.name, subnet: ov.config.subnet, gateway: ov.config.gateway, vni: ov.config.vni }, lease, this.opts.vtep);
        this.incarnations.set(ov.name, joined);
        report.joined.push(ov.name);
      } catch (e) {
        if (!isTsbridgeError(e, 'OVERLAY_MISMATCH')) throw e;
        report.conflicts.push(e.message);
      }
    }

    const claimed = new Map(claims.addresses.map((a) => [this.c.keys.address(a.overlay, a.address), a]));
    for (const kv of kvs) {
      const parsed = this.c.keys.parse(kv.key);
      if (parsed?.kind === 'member' && parsed.host === this.c.hostId && !claimedOverlays.has(parsed.overlay)) {
        // The network went while etcd was unreachable: leave now (the last host releases it).
        await leaveOverlay(this.c, parsed.overlay);
        report.removed.push(kv.key);
        continue;
      }
      if (parsed?.kind === 'address' && parseRecord(kv.value)?.host === this.c.hostId && !claimed.has(kv.key) && !this.isFresh(kv.key)) {
        await this.deleteIfUnchanged(kv.key, kv.modRevision);
        report.removed.push(kv.key);
      }
    }

    for (const [key, a] of claimed) {
      const joined = this.incarnations.get(a.overlay);
      if (!joined) continue; // its overlay is in conflict: reported above
      const want = encodeAddress({ host: this.c.hostId, mac: a.mac, endpoint: a.endpoint });
      const kv = byKey.get(key);
      if (kv && kv.value === want && kv.lease === lease) continue;
      const holder = kv && parseRecord(kv.value);
      if (kv && holder?.host !== this.c.hostId) {
        report.conflicts.push(`address ${a.address} of overlay ${a.overlay} is held by host ${holder?.host ?? '?'} in etcd, and used here`);
        continue;
      }
      const r = await guarded(this.c, `restoring ${a.address} in overlay ${a.overlay}`, () =>
        this.c.store.txn(
          [
            { key: this.c.keys.config(a.overlay), target: 'create', op: '=', value: joined.createRevision },
            kv ? { key, target: 'mod', op: '=', value: kv.modRevision } : { key, target: 'create', op: '=', value: 0 },
          ],
          [{ put: key, value: want, lease }],
        ),
      );
      if (r.succeeded) report.restored.push(key);
      else report.conflicts.push(`address ${a.address} of overlay ${a.overlay} changed in etcd while restoring it; next reconcile looks again`);
    }
    this.conflicts = report.conflicts;
    if (report.conflicts.length) this.c.log.error('conflicts with etcd', { host: this.c.hostId, conflicts: report.conflicts });
    return report;
  }

  /** An address key this process just took (see `fresh`). */
  markFresh(key: string): void {
    this.fresh.set(key, Date.now());
  }

  private isFresh(key: string): boolean {
    const at = this.fresh.get(key);
    if (at === undefined) return false;
    if (Date.now() - at < (this.opts.freshMs ?? FRESH_MS)) return true;
    this.fresh.delete(key);
    return false;
  }

  private async deleteIfUnchanged(key: string, modRevision: number): Promise<void> {
    await guarded(this.c, `removing ${key}`, () => this.c.store.txn([{ key, target: 'mod', op: '=', value: modRevision }], [{ delete: key }]));
  }

  /**
   * Stops keeping the lease alive. `revoke` deletes this host's keys at once (it leaves the
   * cluster); otherwise they stay until the TTL runs out, so a restart within it keeps peers'
   * entries in place.
   */
  async stop(opts: { revoke?: boolean } = {}): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.reconcileTimer);
    await this.registering?.catch(() => undefined);
    const lease = this.lease;
    this.lease = undefined;
    if (!lease) return;
    if (opts.revoke) await guarded(this.c, 'revoking the lease', () => lease.revoke()).catch(() => lease.release());
    else lease.release();
  }
}
