/**
 * Convergence with Docker: what Docker no longer has — a network removed while the plugin was
 * down, an endpoint it forgot, a pool or an address nothing of Docker's holds — is removed from
 * the kernel, the rules and the state, so the same subnet and host ports are free again.
 *
 * Docker never tells a plugin again about what it did while the plugin was down, so tsbridge asks
 * (src/docker/observe.ts): the plugin's sweep when it is given Docker's socket, or `tsbridge gc`
 * on demand through the admin call. Never from a request handler, never at start-up, and never
 * while holding the state lock (Docker may be waiting on a call of ours while we wait on it).
 *
 * Races. Docker creates things in steps — RequestPool, RequestAddress, CreateNetwork, then it
 * stores the network; RequestAddress, CreateEndpoint, then it stores the endpoint — so for a
 * moment tsbridge holds what Docker's list does not show yet. Two rules keep convergence off
 * those:
 *   - grace: a record younger than `graceMs` (when it was created or last requested, recorded on
 *     it; a record of an older tsbridge counts from when this process started) is never judged;
 *   - confirmation: a record is removed only when two observations at least `confirmMs` apart
 *     both lack it (the second is this one), and it was old enough at the first.
 * Everything is judged again under the state lock, against the state as it is then.
 *
 * What counts as "Docker has it":
 *   network   Docker lists a network of that ID;
 *   endpoint  its network's inspect lists an endpoint of that ID (an endpoint of a network
 *             Docker lacks goes with its network);
 *   pool      a Docker network whose IPAM driver is not Docker's own (`default`, `null`) has the
 *             pool's subnet in its IPAM configuration — so pools serve `-d bridge --ipam-driver
 *             tsbridge` networks too, matched by subnet (a pool is never released while any
 *             third-party-IPAM network has that subnet: keeping a dead pool is the safe mistake);
 *   address   in a pool a Docker network holds: that network's gateway, an aux address, or an
 *             address of an endpoint on it (Docker's, or one tsbridge's state still has).
 * The veth sweep (reconcile.ts) stays: it needs no Docker, for containers that died unseen.
 */
import type { Logger } from '../logging.js';
import type { State } from '../state/types.js';
import { BUILTIN_IPAM, observe, type DockerObservation, type ObservedNetwork } from '../docker/observe.js';
import { DockerUnreachable, type DockerEngine } from '../docker/client.js';

export interface ConvergeSettings {
  /** Records younger than this are never judged (ms). */
  graceMs: number;
  /** Two observations at least this far apart must both lack a record (ms). */
  confirmMs: number;
}

/** Docker creates a network in well under a minute; a kernel command may take 10 s to time out. */
export const DEFAULT_GRACE_MS = 60_000;
export const DEFAULT_CONFIRM_MS = 2_000;

export interface AddressRef {
  pool: string;
  address: string;
}

/** What convergence removes, by ID. */
export interface Forgotten {
  networks: string[];
  endpoints: string[];
  pools: string[];
  addresses: AddressRef[];
}

export function nothing(): Forgotten {
  return { networks: [], endpoints: [], pools: [], addresses: [] };
}

export function isEmpty(f: Forgotten): boolean {
  return f.networks.length + f.endpoints.length + f.pools.length + f.addresses.length === 0;
}

/** What one observation led to. */
export interface ConvergeReport {
  /** Removed now (dry run: what would be, confirmation aside). */
  removed: Forgotten;
  /** Lacking in Docker and old enough, waiting for a second observation `confirmMs` later. */
  confirming: Forgotten;
  /** Lacking in Docker but younger than the grace period: left alone (Docker may be creating them). */
  young: Forgotten;
  /** Milliseconds until the records waiting for confirmation can be confirmed (0: none waiting). */
  confirmInMs: number;
  dryRun: boolean;
}

const oldEnough = (created: number | undefined, unknown: number, at: number, grace: number) => (created ?? unknown) <= at - grace;

/**
 * Pure: the records of `s` that Docker's observation lacks, split into those old enough to judge
 * (`created` ≤ `at` − grace; a record without a time counts from `unknownCreated`) and young ones.
 */
export function lacking(s: State, obs: DockerObservation, at: number, graceMs: number, unknownCreated: number): { old: Forgotten; young: Forgotten } {
  const old = nothing();
  const young = nothing();
  const put = (created: number | undefined, add: (f: Forgotten) => void) => add(oldEnough(created, unknownCreated, at, graceMs) ? old : young);
  const docker = new Map(obs.networks.map((n) => [n.id, n]));

  for (const n of Object.values(s.networks)) {
    if (n.phase !== 'ready') continue; // creating: never answered to Docker; deleting: start-up finishes it
    if (!docker.has(n.id)) put(n.created, (f) => f.networks.push(n.id));
  }
  const goingNets = new Set(old.networks);
  for (const e of Object.values(s.endpoints)) {
    if (goingNets.has(e.networkId)) continue; // goes with its network
    const n = docker.get(e.networkId);
    if (!n || n.endpoints === null) continue;
    if (!n.endpoints.some((x) => x.id === e.id)) put(e.created, (f) => f.endpoints.push(e.id));
  }

  // Pools: held by a Docker network using a third-party IPAM with that subnet.
  const holders = new Map<string, ObservedNetwork[]>();
  for (const n of obs.networks) {
    if (BUILTIN_IPAM.has(n.ipamDriver)) continue;
    for (const x of n.subnets) holders.set(x.subnet, [...(holders.get(x.subnet) ?? []), n]);
  }
  const goingEps = new Set([...old.endpoints, ...Object.values(s.endpoints).filter((e) => goingNets.has(e.networkId)).map((e) => e.id)]);
  for (const p of Object.values(s.pools)) {
    const held = holders.get(p.pool) ?? [];
    if (held.length === 0) {
      put(p.created, (f) => f.pools.push(p.id));
      continue;
    }
    if (held.some((n) => n.endpoints === null)) continue; // cannot tell which addresses are used
    const used = new Set<string>();
    for (const n of held) {
      for (const x of n.subnets) {
        if (x.subnet !== p.pool) continue;
        if (x.gateway) used.add(x.gateway);
        for (const a of x.aux) used.add(a);
      }
      for (const e of n.endpoints!) for (const a of [e.ipv4, e.ipv6]) if (a) used.add(a);
    }
    // What tsbridge's own state still uses on that subnet stays too (it goes when that goes).
    for (const n of Object.values(s.networks)) {
      for (const x of [...n.ipv4, ...n.ipv6]) if (x.subnet === p.pool && x.gateway) used.add(x.gateway.split('/')[0]!);
    }
    for (const e of Object.values(s.endpoints)) {
      if (goingEps.has(e.id)) continue;
      for (const a of [e.ipv4, e.ipv6]) if (a) used.add(a.split('/')[0]!);
    }
    for (const a of Object.keys(p.allocated)) {
      if (!used.has(a)) put(p.since?.[a], (f) => f.addresses.push({ pool: p.id, address: a }));
    }
  }
  return { old, young };
}

const keysOf = (f: Forgotten): string[] => [
  ...f.networks.map((id) => `network ${id}`),
  ...f.endpoints.map((id) => `endpoint ${id}`),
  ...f.pools.map((id) => `pool ${id}`),
  ...f.addresses.map((a) => `address ${a.pool} ${a.address}`),
];

function only(f: Forgotten, keep: (key: string) => boolean): Forgotten {
  return {
    networks: f.networks.filter((id) => keep(`network ${id}`)),
    endpoints: f.endpoints.filter((id) => keep(`endpoint ${id}`)),
    pools: f.pools.filter((id) => keep(`pool ${id}`)),
    addresses: f.addresses.filter((a) => keep(`address ${a.pool} ${a.address}`)),
  };
}

/** Removes, in one transaction under the state lock, what `decide` (run under that lock) names. */
export interface Remover {
  removeForgotten(decide: (s: State) => Forgotten): Promise<Forgotten>;
}

export interface Clock {
  /** Wall clock, ms since the epoch (records' creation times). */
  wall(): number;
  /** Monotonic ms (the time between two observations). */
  mono(): number;
}

export const systemClock: Clock = { wall: () => Date.now(), mono: () => performance.now() };

/**
 * Keeps what earlier observations lacked and removes what two of them confirm. One per plugin:
 * the sweep and the admin call feed the same one.
 */
export class Convergence {
  /** Record key → monotonic time of the first observation in a row that lacked it. */
  private readonly firstLacking = new Map<string, number>();
  /** Records without a creation time count as created when this process started. */
  private readonly started: number;

  constructor(
    private readonly remover: Remover,
    private readonly log: Logger,
    readonly settings: ConvergeSettings = { graceMs: DEFAULT_GRACE_MS, confirmMs: DEFAULT_CONFIRM_MS },
    private readonly clock: Clock = systemClock,
  ) {
    this.started = clock.wall();
  }

  /**
   * One observation of Docker, taken just before this call (outside the state lock). Returns
   * what it removed and what is waiting. A dry run changes nothing, remembers nothing, and
   * reports as removed what is lacking and old enough.
   */
  async observe(obs: DockerObservation, opts: { dryRun?: boolean } = {}): Promise<ConvergeReport> {
    const { graceMs, confirmMs } = this.settings;
    const wall = this.clock.wall();
    const mono = this.clock.mono();
    let young = nothing();
    let confirming = nothing();
    let confirmInMs = 0;
    let wouldRemove = nothing();
    const done = await this.remover.removeForgotten((s) => {
      const found = lacking(s, obs, wall, graceMs, this.started);
      young = found.young;
      if (opts.dryRun) {
        wouldRemove = found.old;
        return nothing();
      }
      const now = new Set(keysOf(found.old));
      for (const k of [...this.firstLacking.keys()]) if (!now.has(k)) this.firstLacking.delete(k); // seen again, or gone
      for (const k of now) if (!this.firstLacking.has(k)) this.firstLacking.set(k, mono);
      const confirmed = (k: string) => mono - this.firstLacking.get(k)! >= confirmMs;
      confirming = only(found.old, (k) => !confirmed(k));
      const waits = keysOf(confirming).map((k) => confirmMs - (mono - this.firstLacking.get(k)!));
      confirmInMs = waits.length ? Math.max(1, Math.ceil(Math.max(...waits))) : 0;
      const go = only(found.old, confirmed);
      for (const k of keysOf(go)) this.firstLacking.delete(k);
      return go;
    });
    const removed = opts.dryRun ? wouldRemove : done;
    const report: ConvergeReport = { removed, confirming, young, confirmInMs, dryRun: !!opts.dryRun };
    if (!isEmpty(removed)) {
      this.log.info('converged with Docker: removed what Docker no longer has', {
        networks: removed.networks.map((id) => id.slice(0, 12)),
        endpoints: removed.endpoints.map((id) => id.slice(0, 12)),
        pools: removed.pools,
        addresses: removed.addresses.map((a) => `${a.pool} ${a.address}`),
      });
    }
    return report;
  }
}

/** Both observations' removals, and what still waits after the second. */
function merged(a: ConvergeReport, b: ConvergeReport): ConvergeReport {
  const cat = (x: Forgotten, y: Forgotten): Forgotten => ({
    networks: [...x.networks, ...y.networks],
    endpoints: [...x.endpoints, ...y.endpoints],
    pools: [...x.pools, ...y.pools],
    addresses: [...x.addresses, ...y.addresses],
  });
  return { ...b, removed: cat(a.removed, b.removed) };
}

/**
 * One round with Docker, as the sweep does it (and `tsbridge gc`, through the admin call): an
 * observation; when it found records to confirm, a second one `confirmInMs` later. Docker not
 * answering is no error of the round: it returns why, and nothing changed.
 */
export async function convergeOnce(
  engine: DockerEngine,
  conv: Convergence,
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
): Promise<{ report: ConvergeReport | null; unreachable: string | null }> {
  const ask = async () => {
    try {
      return { obs: await observe(engine), unreachable: null };
    } catch (e) {
      if (e instanceof DockerUnreachable) return { obs: null, unreachable: e.message };
      throw e;
    }
  };
  const first = await ask();
  if (!first.obs) return { report: null, unreachable: first.unreachable };
  let report = await conv.observe(first.obs);
  if (report.confirmInMs > 0) {
    await sleep(report.confirmInMs);
    const second = await ask();
    if (!second.obs) return { report, unreachable: second.unreachable };
    report = merged(report, await conv.observe(second.obs));
  }
  return { report, unreachable: null };
}
