/**
 * What `GET /Plugin.Health` on the plugin socket answers (and `tsbridge health` prints): is the
 * plugin serving, since when, and how its last start-up reconciliation and sweep went. Answered
 * without the state lock, so a watchdog learns about a plugin stuck inside a call too: its
 * sweeps stop finishing.
 */
import type { ReconcileResult, SweepResult } from './metrics.js';
import type { ClusterReport } from '../cluster/report.js';

export interface Outcome {
  /** ISO time it ended. */
  at: string;
  ok: boolean;
  ms: number;
  error?: string;
}

export interface HealthReport {
  /** Always true in a reply: a plugin that is not serving does not answer. */
  serving: true;
  /** False when the last sweep failed, or when no sweep has ended for three intervals. */
  healthy: boolean;
  /** Why not healthy; empty when healthy. */
  problems: string[];
  instance: string;
  version: string;
  pid: number;
  socket: string;
  stateDir: string;
  startedAt: string;
  uptimeSeconds: number;
  /** The iptables variant of the forward shim and why it was chosen. */
  iptables: { variant: string; why: string } | null;
  sweepIntervalSeconds: number;
  lastReconcile: (Outcome & { counts: Record<string, number> }) | null;
  lastSweep: (Outcome & { endpointsRemoved: number }) | null;
  /** Docker calls being answered or waiting for the state lock. */
  callsInFlight: number;
  networks: number;
  endpoints: number;
  /** With TSBRIDGE_ETCD_ENDPOINTS: this host in the cluster and its overlays (src/cluster/report.ts). */
  cluster?: ClusterReport;
}

export interface HealthInfo {
  instance: string;
  version: string;
  socket: string;
  stateDir: string;
  sweepIntervalSeconds: number;
}

export class Health {
  private readonly started: number;
  private reconcileOutcome: HealthReport['lastReconcile'] = null;
  private sweepOutcome: HealthReport['lastSweep'] = null;
  iptables: HealthReport['iptables'] = null;

  constructor(
    private readonly info: HealthInfo,
    private readonly live: () => { callsInFlight: number; networks: number; endpoints: number },
    private readonly now: () => number = Date.now,
  ) {
    this.started = now();
  }

  reconciled(r: ReconcileResult & { error?: string }): void {
    this.reconcileOutcome = { at: new Date(this.now()).toISOString(), ok: r.ok, ms: Math.round(r.seconds * 1000), counts: r.counts, ...(r.error ? { error: r.error } : {}) };
  }

  swept(r: SweepResult & { error?: string }): void {
    this.sweepOutcome = { at: new Date(this.now()).toISOString(), ok: r.ok, ms: Math.round(r.seconds * 1000), endpointsRemoved: r.endpointsRemoved, ...(r.error ? { error: r.error } : {}) };
  }

  report(): HealthReport {
    const now = this.now();
    const problems: string[] = [];
    const interval = this.info.sweepIntervalSeconds;
    if (this.sweepOutcome && !this.sweepOutcome.ok) problems.push(`the last sweep failed: ${this.sweepOutcome.error ?? 'unknown error'}`);
    if (interval > 0) {
      const since = this.sweepOutcome ? Date.parse(this.sweepOutcome.at) : this.started;
      const late = (now - since) / 1000;
      // A sweep waits for the calls before it; three intervals and a kernel timeout or two is stuck.
      if (late > 3 * interval + 30) problems.push(`no sweep has ended for ${Math.round(late)} s (interval ${interval} s): a call or a sweep may be stuck`);
    }
    if (this.reconcileOutcome && !this.reconcileOutcome.ok) problems.push(`the start-up reconciliation failed: ${this.reconcileOutcome.error ?? 'unknown error'}`);
    return {
      serving: true,
      healthy: problems.length === 0,
      problems,
      instance: this.info.instance,
      version: this.info.version,
      pid: process.pid,
      socket: this.info.socket,
      stateDir: this.info.stateDir,
      startedAt: new Date(this.started).toISOString(),
      uptimeSeconds: Math.round((now - this.started) / 1000),
      iptables: this.iptables,
      sweepIntervalSeconds: interval,
      lastReconcile: this.reconcileOutcome,
      lastSweep: this.sweepOutcome,
      ...this.live(),
    };
  }
}
