/**
 * `tsbridge doctor`: what the state says against what the kernel has — bridges, veths and their
 * masters, addresses, MTU, routes, sysctls, nftables tables and elements, the iptables shim and
 * its jump — and against what Docker has (convergence). Each difference comes with its likely
 * cause and the fix. `--fix` repairs through the plugin: start-up reconciliation (the kernel
 * brought to the state, dead endpoints dropped, leftovers removed, every rule applied again) and
 * convergence with Docker; never by editing state.json.
 *
 * The findings are a pure function of what was read (`examine`); `Doctor` reads it all under the
 * state lock, so the state and the kernel are compared at one moment, between Docker's calls.
 */
import { isOurLinkName } from '../domain/names.js';
import type { Db } from '../state/db.js';
import type { State } from '../state/types.js';
import type { FirewallFinding, Kernel, LinkDetail, RouteSpec } from '../kernel/types.js';
import type { KindRegistry } from '../kinds/types.js';
import type { DockerObservation } from '../docker/observe.js';
import type { Convergence, Forgotten } from './converge.js';
import { firewallView } from './realize.js';

export type Repair = 'reconcile' | 'converge' | 'manual';

export interface Finding {
  /** The object: `bridge tsb-…`, `endpoint 1a2b… (veth tsv…)`, `sysctl …`, `Docker network …`. */
  object: string;
  problem: string;
  cause: string;
  fix: string;
  /** What `tsbridge doctor --fix` does about it: reconcile (the plugin), converge (gc), or nothing (manual). */
  repair: Repair;
}

export interface DoctorInput {
  state: State;
  kinds: KindRegistry;
  links: LinkDetail[];
  routes: RouteSpec[];
  /** Values of the sysctls the plans name (null: no such sysctl). */
  sysctls: Map<string, string | null>;
  firewall: FirewallFinding[];
  /** Docker's side, when it was asked: what it lacks (old enough to judge), and its networks. */
  docker?: { lacking: Forgotten; observation: DockerObservation; instance: string } | null;
}

const RECONCILE_FIX = 'tsbridge doctor --fix (the plugin brings the kernel back to its state)';

/** The sysctl keys the plans of every network and endpoint name. */
export function sysctlKeys(s: State, kinds: KindRegistry): string[] {
  const keys = new Set<string>();
  for (const n of Object.values(s.networks)) {
    if (n.phase !== 'ready') continue;
    const k = kinds.get(n.kind);
    for (const x of k.network(n).sysctls) keys.add(x.key);
    for (const e of Object.values(s.endpoints)) if (e.networkId === n.id) for (const x of k.endpoint(e, n).sysctls) keys.add(x.key);
  }
  return [...keys];
}

/** A route as doctor compares it: `CIDR DEV`, or `CIDR unreachable`. */
function routeKey(r: RouteSpec): string {
  return 'dev' in r ? `${r.to} ${r.dev}` : `${r.to} unreachable`;
}

export function examine(input: DoctorInput): Finding[] {
  const { state: s, kinds } = input;
  const out: Finding[] = [];
  const links = new Map(input.links.map((l) => [l.name, l]));
  const routes = new Set(input.routes.map(routeKey));
  const known = new Set<string>();
  const add = (f: Finding) => out.push(f);

  const checkRoutes = (rs: RouteSpec[], owner: string) => {
    for (const r of rs) {
      if (!routes.has(routeKey(r))) add({ object: 'dev' in r ? `route ${r.to} dev ${r.dev}` : `route unreachable ${r.to}`, problem: `missing (${owner})`, cause: 'deleted by someone (ip route del), or its link was recreated', fix: RECONCILE_FIX, repair: 'reconcile' });
    }
  };
  const checkSysctls = (xs: { key: string; value: string }[], owner: string) => {
    for (const x of xs) {
      const v = input.sysctls.get(x.key);
      if (v === undefined || v === x.value) continue;
      add({
        object: `sysctl ${x.key}`,
        problem: v === null ? `missing (${owner}: its interface is gone)` : `is ${v}, ${owner} needs ${x.value}`,
        cause: v === null ? 'the interface it belongs to is missing' : 'changed by someone (sysctl -w, a sysctl.d file applied again, a network manager)',
        fix: RECONCILE_FIX,
        repair: 'reconcile',
      });
    }
  };

  for (const n of Object.values(s.networks)) {
    if (n.phase !== 'ready') continue;
    const kind = kinds.get(n.kind);
    const plan = kind.network(n);
    const who = `network ${n.id.slice(0, 12)}`;
    for (const l of plan.links) known.add(l);
    if (plan.bridge) {
      const b = plan.bridge;
      const have = links.get(b.name);
      const obj = `bridge ${b.name} (${who})`;
      if (!have) add({ object: obj, problem: 'missing', cause: 'deleted by someone (ip link del), or lost with a reboot before the plugin started', fix: RECONCILE_FIX, repair: 'reconcile' });
      else if (have.kind !== 'bridge') add({ object: obj, problem: `is a ${have.kind || 'non-bridge'} interface`, cause: 'another program made an interface of that name', fix: `remove that interface (ip link del ${b.name}), then ${RECONCILE_FIX}`, repair: 'manual' });
      else {
        if (!have.up) add({ object: obj, problem: 'down', cause: 'set down by someone (ip link set down)', fix: RECONCILE_FIX, repair: 'reconcile' });
        if (have.mtu !== b.mtu) add({ object: obj, problem: `MTU ${have.mtu}, the network's is ${b.mtu}`, cause: 'changed by someone (ip link set mtu)', fix: RECONCILE_FIX, repair: 'reconcile' });
        const missing = b.addresses.filter((a) => !have.addresses.includes(a));
        if (missing.length) add({ object: obj, problem: `lacks the gateway address ${missing.join(', ')}`, cause: 'deleted by someone (ip addr del, a network manager)', fix: RECONCILE_FIX, repair: 'reconcile' });
      }
    }
    checkRoutes(plan.routes, who);
    checkSysctls(plan.sysctls, who);

    for (const e of Object.values(s.endpoints)) {
      if (e.networkId !== n.id || e.phase !== 'ready') continue;
      const ep = kind.endpoint(e, n);
      known.add(e.hostVeth).add(e.peerVeth);
      const obj = `endpoint ${e.id.slice(0, 12)} (veth ${e.hostVeth}, ${who})`;
      const host = links.get(e.hostVeth);
      if (!host) {
        if (e.joined) add({ object: obj, problem: 'its veth is gone', cause: 'its container died without Docker telling the plugin', fix: `the next sweep forgets it; ${RECONCILE_FIX} now`, repair: 'reconcile' });
        else add({ object: obj, problem: 'its veth is missing', cause: 'deleted by someone, or lost with a reboot', fix: RECONCILE_FIX, repair: 'reconcile' });
        continue;
      }
      if (e.joined && links.has(e.peerVeth)) {
        add({ object: obj, problem: "its container's end is back in the host", cause: 'Docker removed the container while the plugin was down', fix: `the sweep forgets it; ${RECONCILE_FIX} now`, repair: 'reconcile' });
      }
      if (ep.veth.master && host.master !== ep.veth.master) {
        add({ object: obj, problem: host.master ? `enslaved to ${host.master}, not ${ep.veth.master}` : `not on its bridge ${ep.veth.master}`, cause: 'detached by someone (ip link set nomaster), or its bridge was recreated', fix: RECONCILE_FIX, repair: 'reconcile' });
      }
      const missing = ep.veth.hostAddresses.filter((a) => !host.addresses.includes(a));
      if (missing.length) add({ object: obj, problem: `its host end lacks ${missing.join(', ')}`, cause: 'deleted by someone (ip addr del)', fix: RECONCILE_FIX, repair: 'reconcile' });
      checkRoutes(ep.routes, `endpoint ${e.id.slice(0, 12)}`);
      checkSysctls(ep.sysctls, `endpoint ${e.id.slice(0, 12)}`);
    }
  }

  for (const l of input.links) {
    // Only links this instance made (their alias says so): another instance's are not ours to judge.
    if (known.has(l.name) || !l.owned || !isOurLinkName(l.name)) continue;
    add({ object: `link ${l.name}`, problem: 'no network or endpoint of the state names it', cause: 'left over by a crash, or by a container removed while the plugin was down', fix: `${RECONCILE_FIX}: start-up removes leftovers`, repair: 'reconcile' });
  }

  for (const f of input.firewall) {
    add({
      object: f.what,
      problem: f.problem,
      cause: /jump|chain|rules/.test(f.problem) && f.what.startsWith('iptables')
        ? 'removed by someone (iptables -F, a flushed DOCKER-USER), or dockerd rebuilt its chains'
        : /present although/.test(f.problem)
          ? 'left over after the last network went'
          : 'changed by another program (nft flush ruleset, a firewalld reload, the nftables service, nft delete …)',
      fix: `${RECONCILE_FIX}: every rule applied again`,
      repair: 'reconcile',
    });
  }

  if (input.docker) {
    const { lacking, observation, instance } = input.docker;
    const gone = 'Docker no longer has it: removed while the plugin was down (Docker tells a plugin once)';
    const gc = 'tsbridge gc (or doctor --fix)';
    for (const id of lacking.networks) add({ object: `network ${id.slice(0, 12)}`, problem: 'held by tsbridge, unknown to Docker', cause: gone, fix: gc, repair: 'converge' });
    for (const id of lacking.endpoints) add({ object: `endpoint ${id.slice(0, 12)}`, problem: 'held by tsbridge, unknown to Docker', cause: gone, fix: gc, repair: 'converge' });
    for (const id of lacking.pools) add({ object: `pool ${id}`, problem: 'no Docker network uses its subnet', cause: "Docker removed the network, or a RequestPool's reply was lost", fix: gc, repair: 'converge' });
    for (const a of lacking.addresses) add({ object: `address ${a.address} (pool ${a.pool})`, problem: 'held, but nothing of Docker uses it', cause: 'Docker released it while the plugin was down', fix: gc, repair: 'converge' });
    for (const n of observation.networks) {
      const ours = n.driver === instance || n.driver.split(':')[0] === instance || n.driver.split('/').pop()?.split(':')[0] === instance;
      if (ours && !Object.hasOwn(s.networks, n.id)) {
        add({
          object: `Docker network ${n.id.slice(0, 12)} (driver ${n.driver})`,
          problem: 'unknown to tsbridge',
          cause: "the plugin's state was lost, or the plugin runs with another state directory",
          fix: 'docker network rm it and create it again (its containers need restarting on the new one)',
          repair: 'manual',
        });
      }
    }
  }
  return out;
}

/** Reads the kernel (and Docker's lacking records) under the state lock and examines them. */
export class Doctor {
  constructor(
    private readonly db: Db,
    private readonly kernel: Kernel,
    private readonly kinds: KindRegistry,
    private readonly instance: string,
    private readonly convergence: Convergence | null = null,
  ) {}

  async examine(observation: DockerObservation | null): Promise<Finding[]> {
    const lacking = observation && this.convergence ? (await this.convergence.observe(observation, { dryRun: true })).removed : null;
    const inspect = this.kernel.inspect;
    if (!inspect) throw new Error('this plugin cannot read its kernel objects (no inspector)');
    return this.db.tx(async (s) => {
      const [links, routes] = await Promise.all([inspect.links(), inspect.routes()]);
      const sysctls = new Map<string, string | null>();
      for (const k of sysctlKeys(s, this.kinds)) sysctls.set(k, await inspect.sysctl(k));
      const firewall = this.kernel.firewall.diagnose ? await this.kernel.firewall.diagnose(firewallView(s, this.kinds)) : [];
      return examine({
        state: s,
        kinds: this.kinds,
        links,
        routes,
        sysctls,
        firewall,
        docker: observation && lacking ? { lacking, observation, instance: this.instance } : null,
      });
    });
  }
}
