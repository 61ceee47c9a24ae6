/**
 * Prometheus metrics (prom-client), one registry per plugin. Everything tsbridge exports is
 * declared here, with its meaning; docs/operations.md lists them with example queries. Counts of
 * live objects are read from the state when scraped, never kept twice.
 *
 * Label values are bounded: call names come from the route table, outcomes from the error
 * catalogue, commands are program names.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { State } from '../state/types.js';

/** Seconds: from a fast `nft` call to a kernel command hitting its timeout. */
const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export type CommandOutcome = 'ok' | 'failed' | 'timeout';

/** What one kernel command did, as src/kernel/real/exec.ts reports it. */
export interface CommandEvent {
  /** The program's file name: ip, nft, iptables-nft, conntrack, … */
  command: string;
  seconds: number;
  outcome: CommandOutcome;
  /** It started a process (false: a line handed to a long-lived one). */
  spawned?: boolean;
}

/** One write of the state to disk (src/state/store.ts): a journal append or a full snapshot. */
export interface StateWriteEvent {
  kind: 'journal' | 'snapshot';
  bytes: number;
  /** fsync/fdatasync calls it made. */
  syncs: number;
}

export interface SweepResult {
  ok: boolean;
  seconds: number;
  /** Endpoints of dead containers forgotten. */
  endpointsRemoved: number;
}

export interface ReconcileResult {
  ok: boolean;
  seconds: number;
  /** The reconcile report's counts (networksRestored, endpointsDropped, …). */
  counts: Record<string, number>;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly calls: Counter<'method' | 'outcome'>;
  private readonly callSeconds: Histogram<'method'>;
  private readonly commandSeconds: Histogram<'command'>;
  private readonly commandFailures: Counter<'command' | 'reason'>;
  private readonly processes: Counter<'command'>;
  private readonly stateWrites: Counter<'kind'>;
  private readonly stateBytes: Counter<'kind'>;
  private readonly stateSyncs: Counter;
  private readonly sweeps: Counter<'outcome'>;
  private readonly sweptEndpoints: Counter;
  private readonly lastSweep: Gauge;
  private readonly lastSweepOk: Gauge;
  private readonly reconciles: Counter<'outcome'>;
  private readonly reconcileSeconds: Gauge;
  private readonly reconcileObjects: Gauge<'action'>;
  private readonly reapplied: Counter<'reason'>;

  constructor(opts: { state: () => State; info: { instance: string; version: string }; processMetrics?: boolean }) {
    const registers = [this.registry];
    new Gauge({
      name: 'tsbridge_info',
      help: 'Always 1; the labels say which tsbridge this is',
      labelNames: ['instance', 'version'],
      registers,
    }).set({ instance: opts.info.instance, version: opts.info.version }, 1);
    this.calls = new Counter({
      name: 'tsbridge_calls_total',
      help: 'Calls answered on the plugin socket, by method (e.g. NetworkDriver.Join) and outcome (ok, or the error code)',
      labelNames: ['method', 'outcome'],
      registers,
    });
    this.callSeconds = new Histogram({
      name: 'tsbridge_call_duration_seconds',
      help: 'Time from a call arriving to its reply, by method',
      labelNames: ['method'],
      buckets: BUCKETS,
      registers,
    });
    this.commandSeconds = new Histogram({
      name: 'tsbridge_kernel_command_duration_seconds',
      help: 'Run time of each kernel command (ip, nft, iptables, conntrack, …), by program',
      labelNames: ['command'],
      buckets: BUCKETS,
      registers,
    });
    this.commandFailures = new Counter({
      name: 'tsbridge_kernel_command_failures_total',
      help: 'Kernel commands that failed (reason "failed": non-zero exit or could not run) or were killed at TSBRIDGE_COMMAND_TIMEOUT_MS ("timeout")',
      labelNames: ['command', 'reason'],
      registers,
    });
    this.processes = new Counter({
      name: 'tsbridge_processes_started_total',
      help: 'Processes tsbridge started (ip, nft, iptables-nft, conntrack, …), by program',
      labelNames: ['command'],
      registers,
    });
    this.stateWrites = new Counter({
      name: 'tsbridge_state_writes_total',
      help: 'Writes of the state to disk, by kind (journal: a record appended; snapshot: the whole state)',
      labelNames: ['kind'],
      registers,
    });
    this.stateBytes = new Counter({
      name: 'tsbridge_state_written_bytes_total',
      help: 'Bytes of state written to disk, by kind (journal, snapshot)',
      labelNames: ['kind'],
      registers,
    });
    this.stateSyncs = new Counter({ name: 'tsbridge_state_syncs_total', help: 'fsync and fdatasync calls made to keep the state on disk', registers });
    const state = opts.state;
    new Gauge({
      name: 'tsbridge_networks',
      help: 'Networks in the state',
      registers,
      collect() {
        this.set(Object.keys(state().networks).length);
      },
    });
    new Gauge({
      name: 'tsbridge_endpoints',
      help: 'Endpoints in the state, by whether a container has joined them',
      labelNames: ['joined'],
      registers,
      collect() {
        const eps = Object.values(state().endpoints);
        const joined = eps.filter((e) => e.joined).length;
        this.set({ joined: 'true' }, joined);
        this.set({ joined: 'false' }, eps.length - joined);
      },
    });
    new Gauge({
      name: 'tsbridge_published_ports',
      help: 'Published port mappings (one per -p binding and host address), by protocol',
      labelNames: ['proto'],
      registers,
      collect() {
        const n: Record<string, number> = { tcp: 0, udp: 0, sctp: 0 };
        for (const e of Object.values(state().endpoints)) for (const m of e.ports ?? []) n[m.proto] = (n[m.proto] ?? 0) + 1;
        for (const [proto, v] of Object.entries(n)) this.set({ proto }, v);
      },
    });
    new Gauge({
      name: 'tsbridge_pools',
      help: 'Address pools held by the IPAM',
      registers,
      collect() {
        this.set(Object.keys(state().pools).length);
      },
    });
    this.sweeps = new Counter({ name: 'tsbridge_sweeps_total', help: 'Periodic sweeps run, by outcome (ok, failed)', labelNames: ['outcome'], registers });
    this.sweptEndpoints = new Counter({ name: 'tsbridge_sweep_endpoints_removed_total', help: 'Endpoints of containers that died unseen, forgotten by sweeps', registers });
    this.lastSweep = new Gauge({ name: 'tsbridge_sweep_last_timestamp_seconds', help: 'When the last sweep ended (Unix time)', registers });
    this.lastSweepOk = new Gauge({ name: 'tsbridge_sweep_last_success', help: '1 when the last sweep succeeded, 0 when it failed', registers });
    this.reconciles = new Counter({ name: 'tsbridge_reconciles_total', help: 'Start-up reconciliations, by outcome (ok, failed)', labelNames: ['outcome'], registers });
    this.reconcileSeconds = new Gauge({ name: 'tsbridge_reconcile_duration_seconds', help: 'How long the last start-up reconciliation took', registers });
    this.reconcileObjects = new Gauge({
      name: 'tsbridge_reconcile_objects',
      help: 'What the last start-up reconciliation did, by action (networks_restored, networks_dropped, endpoints_dropped, veths_recreated, stale_links_removed)',
      labelNames: ['action'],
      registers,
    });
    this.reapplied = new Counter({
      name: 'tsbridge_rules_reapplied_total',
      help: "Full re-applications of tsbridge's rules after another program changed or removed them, by what was found (reason)",
      labelNames: ['reason'],
      registers,
    });
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry });
  }

  call(method: string, outcome: string, seconds: number): void {
    this.calls.inc({ method, outcome });
    this.callSeconds.observe({ method }, seconds);
  }

  command(e: CommandEvent): void {
    this.commandSeconds.observe({ command: e.command }, e.seconds);
    if (e.outcome !== 'ok') this.commandFailures.inc({ command: e.command, reason: e.outcome });
    if (e.spawned ?? true) this.processes.inc({ command: e.command });
  }

  stateWrite(e: StateWriteEvent): void {
    // A sync alone (of journal lines written without one) writes nothing: only its sync counts.
    if (e.bytes > 0 || e.syncs === 0) this.stateWrites.inc({ kind: e.kind });
    this.stateBytes.inc({ kind: e.kind }, e.bytes);
    if (e.syncs > 0) this.stateSyncs.inc(e.syncs);
  }

  sweep(r: SweepResult): void {
    this.sweeps.inc({ outcome: r.ok ? 'ok' : 'failed' });
    if (r.endpointsRemoved > 0) this.sweptEndpoints.inc(r.endpointsRemoved);
    this.lastSweep.set(Date.now() / 1000);
    this.lastSweepOk.set(r.ok ? 1 : 0);
  }

  reconcile(r: ReconcileResult): void {
    this.reconciles.inc({ outcome: r.ok ? 'ok' : 'failed' });
    this.reconcileSeconds.set(r.seconds);
    for (const [k, v] of Object.entries(r.counts)) this.reconcileObjects.set({ action: snake(k) }, v);
  }

  /**
   * The firewall sweep found tsbridge's rules missing or altered (an `nft flush ruleset`, a
   * firewalld reload, …) and applied them again. `reason` says what it found, e.g.
   * "table_missing", "chain_altered", "shim_missing".
   */
  rulesReapplied(reason: string): void {
    this.reapplied.inc({ reason });
  }

  /** The exposition text, as served on /metrics. */
  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** networksRestored → networks_restored */
function snake(k: string): string {
  return k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
