/**
 * The one way a network or an endpoint is brought into the kernel from its record, whatever its
 * kind: CreateNetwork / CreateEndpoint and start-up reconciliation both come through here. The
 * kind says what is needed (src/kinds); this file makes it so, idempotently.
 */
import { fail } from '../errors.js';
import type { Endpoint, Network } from '../domain/types.js';
import type { EndpointElements, FirewallView, Kernel, LinkInfo } from '../kernel/types.js';
import type { Logger } from '../logging.js';
import type { ClusterService } from '../cluster/service.js';
import { plainCopy, type Db } from '../state/db.js';
import type { State } from '../state/types.js';
import { KINDS } from '../kinds/registry.js';
import type { EndpointPlan, KindContext, KindRegistry, NetworkPlan, Running } from '../kinds/types.js';

/**
 * Makes the kernel hold what the network's plan says: its links, routes and sysctls, then the
 * uplinks it takes over (not its rules). An uplink that does not exist fails the call, unless
 * `missingUplink` is given (start-up: the network comes back without it, and that is said).
 */
export async function realizeNetwork(kernel: Kernel, plan: NetworkPlan, missingUplink?: (name: string) => void): Promise<void> {
  if (plan.bridge) await kernel.links.ensureBridge(plan.bridge);
  if (plan.vxlan) await kernel.links.ensureVxlan(plan.vxlan);
  if (plan.routes.length) await kernel.links.ensureRoutes(plan.routes);
  for (const s of plan.sysctls) {
    if (s.optional) await kernel.sysctl.ensure(s.key, s.value).catch(() => undefined);
    else await kernel.sysctl.ensure(s.key, s.value);
  }
  for (const u of plan.uplinks ?? []) {
    if ((await kernel.links.adoptUplink(u)) === 'missing') {
      if (!missingUplink) fail('KERNEL', { op: `taking ${u.name} as a port of ${u.bridge}`, detail: `there is no interface named ${u.name}` });
      missingUplink(u.name);
    }
  }
}

/**
 * Gives back what the network took over from the host (its uplinks, as they were), before its
 * links are deleted. An uplink that is gone is fine: there is nothing left to give back.
 */
export async function releaseNetwork(kernel: Kernel, plan: NetworkPlan): Promise<void> {
  for (const u of plan.uplinks ?? []) await kernel.links.releaseUplink(u);
}

/** Interface names a network's plan claims: the links it makes and the uplinks it takes over. */
export function claimedNames(plan: NetworkPlan): string[] {
  return [...plan.links, ...(plan.uplinks ?? []).map((u) => u.name)];
}

/**
 * Removes what realizeNetwork made of the network's plan — its routes (those through no link do
 * not go by themselves), then its links — and `links` besides (its endpoints' veths). Sysctls stay:
 * they are host-wide switches other networks (and Docker) rely on, or went with their link.
 */
export async function unrealizeNetwork(kernel: Kernel, plan: NetworkPlan, links: string[] = []): Promise<void> {
  if (plan.routes.length) await kernel.links.deleteRoutes(plan.routes);
  await kernel.links.deleteLinks([...links, ...plan.links]);
}

/**
 * Makes the kernel hold what the endpoint's plan says. `have` is its host link as start-up found
 * it: a surviving veth is kept (put back on its bridge when that was rebuilt); without it the
 * pair is made, replacing any leftover of the same name. Says which it did.
 */
export async function realizeEndpoint(kernel: Kernel, plan: EndpointPlan, have: LinkInfo | null): Promise<'created' | 'kept'> {
  const { veth } = plan;
  let done: 'created' | 'kept' = 'kept';
  if (!have) {
    await kernel.links.ensureVeth(veth);
    done = 'created';
  } else if (veth.master && have.master !== veth.master) {
    await kernel.links.attachToBridge(veth.hostName, veth.master);
  }
  if (plan.routes.length) await kernel.links.ensureRoutes(plan.routes);
  for (const s of plan.sysctls) await kernel.sysctl.ensure(s.key, s.value);
  return done;
}

/** Networks the firewall writes rules for: all but those being deleted. */
function live(s: State): Network[] {
  return Object.values(s.networks).filter((n) => n.phase !== 'deleting');
}

/** The firewall's view of the state: every live network's rules, every ready endpoint's elements. */
export function firewallView(s: State, kinds: KindRegistry): FirewallView {
  const nets = live(s);
  const byId = new Map(nets.map((n) => [n.id, n]));
  return {
    networks: nets.map((n) => ({ id: n.id, rules: kinds.get(n.kind).rules(n) })),
    endpoints: Object.values(s.endpoints)
      .filter((e) => e.phase === 'ready' && byId.has(e.networkId))
      .map((e) => {
        const n = byId.get(e.networkId)!;
        const k = kinds.get(n.kind);
        return { id: e.id, elements: [...k.ports(e, n, e.ports), ...k.members(e, n)] };
      }),
  };
}

/** An endpoint's elements, its published ports as they are recorded. */
export function endpointElements(ep: Endpoint, net: Network, kinds: KindRegistry): EndpointElements {
  const k = kinds.get(net.kind);
  return { member: k.members(ep, net), ports: k.ports(ep, net, ep.ports) };
}

/** The long-running work of networks (a kind's lifecycle.start), by network ID. */
export class Lifecycles {
  private readonly running = new Map<string, Running>();

  constructor(private readonly kinds: KindRegistry, private readonly ctx: KindContext) {}

  /** Starts the network's work, unless its kind has none or it runs already. */
  async start(net: Network): Promise<void> {
    const start = this.kinds.get(net.kind).lifecycle?.start;
    if (!start || this.running.has(net.id)) return;
    this.running.set(net.id, await start(net, this.ctx));
  }

  async stop(networkId: string): Promise<void> {
    const r = this.running.get(networkId);
    if (!r) return;
    this.running.delete(networkId);
    await r.stop();
  }

  /** Stops everything (shutdown); a failure is logged, the others still stop. */
  async stopAll(log: Logger): Promise<void> {
    for (const id of [...this.running.keys()]) {
      await this.stop(id).catch((e: unknown) => log.warn('stopping a network\'s work failed', { networkId: id.slice(0, 12), error: String(e) }));
    }
  }

  has(networkId: string): boolean {
    return this.running.has(networkId);
  }
}

/** Kinds and the running work of networks; main.ts shares one between the driver and the reconciler. */
export interface KindsRuntime {
  kinds: KindRegistry;
  lifecycles: Lifecycles;
  /** What kinds' hooks get. */
  ctx: KindContext;
}

/** What a runtime may add to the kinds' context: the state (for running networks to update) and the cluster. */
export interface RuntimeExtras {
  db?: Db;
  cluster?: ClusterService;
}

export function kindsRuntime(kernel: Kernel, log: Logger, kinds: KindRegistry = KINDS, extras: RuntimeExtras = {}): KindsRuntime {
  const { db, cluster } = extras;
  const ctx: KindContext = { kernel, log, cluster };
  if (db) {
    ctx.state = () => db.state;
    ctx.updateSettings = (networkId, change) =>
      db.tx(async (s) => {
        const n = s.networks[networkId];
        if (!n || n.phase !== 'ready') return;
        const next = change(plainCopy(n.settings));
        if (!next) return;
        n.settings = next;
        // Kernel first: a failure leaves the saved state as it was (and memory too: Db puts it back).
        await kernel.firewall.apply(firewallView(s, kinds));
        await db.save();
      });
  }
  return { kinds, lifecycles: new Lifecycles(kinds, ctx), ctx };
}
