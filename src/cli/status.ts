/**
 * `tsbridge status`: what one instance holds and whether it is serving. Networks, endpoints and
 * pools from the state file; names from Docker when it answers; liveness, the iptables variant
 * and the last sweep from the plugin's health call.
 */
import type { HealthReport } from '../metrics/health.js';
import type { ClusterReport } from '../cluster/report.js';
import type { PoolRecord } from '../ipam/types.js';
import { KINDS } from '../kinds/registry.js';
import type { Network, PortMapping, State } from '../state/types.js';
import type { Names } from '../docker/client.js';
import { duration, shortOr, table } from './table.js';

export interface NetworkStatus {
  id: string;
  name: string | null;
  /** The kind of network (src/kinds/registry.ts). */
  kind: string;
  phase: string;
  bridge: string;
  subnets: string[];
  gateways: string[];
  /** Options that differ from Docker's bridge defaults, as `docker network create -o` would set them. */
  options: Record<string, string | number | boolean>;
}

export interface EndpointStatus {
  id: string;
  networkId: string;
  containerName: string | null;
  addresses: string[];
  mac: string;
  hostVeth: string;
  joined: boolean;
  ports: PortMapping[];
}

export interface PoolStatus {
  id: string;
  pool: string;
  range: string | null;
  auto: boolean;
  /** Addresses held, by kind. */
  allocated: { gateway: number; endpoint: number; aux: number };
}

export type PluginStatus = ({ serving: true } & HealthReport) | { serving: false; error: string };

export interface Status {
  instance: string;
  socket: string;
  stateDir: string;
  /** The state could not be read: why (the rest is then empty). */
  stateError: string | null;
  plugin: PluginStatus;
  /** Docker's names were not available: why; null when Docker answered. */
  dockerNames: string | null;
  networks: NetworkStatus[];
  endpoints: EndpointStatus[];
  pools: PoolStatus[];
}

/** Options of a network that differ from the defaults: the common ones, then its kind's. */
export function networkOptions(n: Network): Record<string, string | number | boolean> {
  const o: Record<string, string | number | boolean> = {};
  if (n.mtu !== 1500) o['com.docker.network.driver.mtu'] = n.mtu;
  if (n.internal) o.internal = true;
  if (n.ifacePrefix !== 'eth') o['com.docker.network.container_iface_prefix'] = n.ifacePrefix;
  if (n.enableIpv6) o.ipv6 = true;
  if (n.ipv4.length === 0) o.ipv4 = false;
  const kind = KINDS.all.find((k) => k.name === n.kind);
  return kind ? { ...o, ...kind.describe(n) } : o;
}

/** The network's interface on the host, as its kind names it ('-' for a kind without one or unknown to this version). */
function hostInterfaceOf(n: Network): string {
  const kind = KINDS.all.find((k) => k.name === n.kind);
  return (kind && kind.hostInterface(n)) ?? '-';
}

function poolStatus(p: PoolRecord): PoolStatus {
  const allocated = { gateway: 0, endpoint: 0, aux: 0 };
  for (const kind of Object.values(p.allocated)) allocated[kind]++;
  return { id: p.id, pool: p.pool, range: p.subPool, auto: p.auto, allocated };
}

export function buildStatus(args: { instance: string; socket: string; stateDir: string; state: State | null; stateError: string | null; plugin: PluginStatus; names: Names }): Status {
  const s = args.state;
  const byId = <T extends { id: string }>(xs: T[]) => xs.sort((a, b) => a.id.localeCompare(b.id));
  return {
    instance: args.instance,
    socket: args.socket,
    stateDir: args.stateDir,
    stateError: args.stateError,
    plugin: args.plugin,
    dockerNames: args.names.unavailable,
    networks: s
      ? byId(Object.values(s.networks)).map((n) => ({
          id: n.id,
          name: args.names.networks.get(n.id) ?? null,
          kind: n.kind,
          phase: n.phase,
          bridge: hostInterfaceOf(n),
          subnets: [...n.ipv4, ...n.ipv6].map((x) => x.subnet),
          gateways: [...n.ipv4, ...n.ipv6].map((x) => x.gateway).filter((g): g is string => !!g),
          options: networkOptions(n),
        }))
      : [],
    endpoints: s
      ? Object.values(s.endpoints)
          .sort((a, b) => a.networkId.localeCompare(b.networkId) || a.id.localeCompare(b.id))
          .map((e) => ({
            id: e.id,
            networkId: e.networkId,
            containerName: args.names.containers.get(e.id) ?? null,
            addresses: [e.ipv4, e.ipv6].filter((a): a is string => !!a),
            mac: e.mac,
            hostVeth: e.hostVeth,
            joined: e.joined,
            ports: [...(e.ports ?? [])].sort((a, b) => a.hostPort - b.hostPort || a.proto.localeCompare(b.proto) || a.hostIp.localeCompare(b.hostIp)),
          }))
      : [],
    pools: s ? byId(Object.values(s.pools)).map(poolStatus) : [],
  };
}

/** A problem worth exit code 1: the state unreadable, the plugin not serving or not healthy. */
export function statusProblems(st: Status): string[] {
  const out: string[] = [];
  if (st.stateError) out.push(st.stateError);
  if (!st.plugin.serving) out.push(`plugin not serving: ${st.plugin.error}`);
  else if (!st.plugin.healthy) out.push(...st.plugin.problems);
  return out;
}

function ports(ps: PortMapping[]): string {
  if (ps.length === 0) return '-';
  const one = (m: PortMapping) => m.hostPort === 0 ? `routed ${m.hostIp.includes(':') ? 'IPv6' : 'IPv4'} ${m.containerPort}/${m.proto}` : `${m.hostIp ? (m.hostIp.includes(':') ? `[${m.hostIp}]` : m.hostIp) + ':' : ''}${m.hostPort}->${m.containerPort}/${m.proto}`;
  return ps.length <= 3 ? ps.map(one).join(', ') : `${ps.slice(0, 2).map(one).join(', ')}, … (${ps.length}; tsbridge ports)`;
}

function optionsText(o: Record<string, string | number | boolean>): string {
  const kv = Object.entries(o).map(([k, v]) => `${k}=${v}`);
  return kv.length ? kv.join(' ') : '-';
}

function pluginLine(p: PluginStatus, now: number): string[] {
  if (!p.serving) return [`plugin      not serving: ${p.error}`];
  const lines = [`plugin      serving, ${p.healthy ? 'healthy' : 'NOT HEALTHY'}; pid ${p.pid}, up ${duration(p.uptimeSeconds)}, version ${p.version}, ${p.networks} networks, ${p.endpoints} endpoints${p.callsInFlight ? `, ${p.callsInFlight} calls in flight` : ''}`];
  for (const problem of p.problems) lines.push(`            ! ${problem}`);
  lines.push(`iptables    ${p.iptables ? `${p.iptables.variant} (${p.iptables.why})` : 'unknown'}`);
  const sweep = p.lastSweep;
  lines.push(
    `last sweep  ${sweep ? `${duration((now - Date.parse(sweep.at)) / 1000)} ago, ${sweep.ok ? `ok, ${sweep.endpointsRemoved} endpoints of dead containers removed` : `FAILED: ${sweep.error}`}` : p.sweepIntervalSeconds > 0 ? `none yet (every ${p.sweepIntervalSeconds} s)` : 'off (TSBRIDGE_GC_INTERVAL=0)'}`,
  );
  return lines;
}

/**
 * The cluster section: this host in etcd, then per overlay it has, the overlay's hosts and
 * endpoints as the plugin's etcd watch last saw them. Empty without TSBRIDGE_ETCD_ENDPOINTS.
 */
export function formatCluster(c: ClusterReport | undefined, opts: { full?: boolean } = {}): string {
  if (!c) return '';
  const lines = [
    `\nCLUSTER     host ${c.hostId}, VTEP ${c.vtep}, ${c.registered ? 'registered in etcd' : 'NOT registered in etcd (unreachable?): existing endpoints work, new overlay endpoints fail'}${c.loaded ? '' : '; no view of the cluster yet'}`,
    ...c.conflicts.map((x) => `            ! ${x}`),
  ];
  const parts = [lines.join('\n') + '\n'];
  parts.push(
    `\nOVERLAYS (${c.overlays.length})\n` +
      (c.overlays.length
        ? table(
            ['OVERLAY', 'VNI', 'SUBNET', 'GATEWAY', 'HOSTS', 'ENDPOINTS'],
            c.overlays.map((o) => [o.name, o.config ? String(o.config.vni) : '?', o.config?.subnet ?? '(gone from etcd)', o.config?.gateway ?? '-', String(o.hosts.length), String(o.endpoints.length)]),
          )
        : ''),
  );
  const hosts = c.overlays.flatMap((o) => o.hosts.map((h) => ({ o: o.name, ...h })));
  if (hosts.length) {
    parts.push(
      `\nOVERLAY HOSTS (${hosts.length})\n` +
        table(
          ['OVERLAY', 'HOST', 'HOSTNAME', 'VTEP', 'STATE', 'ENDPOINTS'],
          hosts.map((h) => [h.o, h.id === c.hostId ? `${h.id} (this host)` : h.id, h.hostname || '-', h.vtep || '-', h.registered ? (h.member ? 'member' : 'leaving') : 'lease gone', String(h.endpoints)]),
        ),
    );
  }
  const eps = c.overlays.flatMap((o) => o.endpoints.map((e) => ({ o: o.name, ...e })));
  if (eps.length) {
    parts.push(
      `\nOVERLAY ENDPOINTS (${eps.length})\n` +
        table(
          ['OVERLAY', 'ADDRESS', 'HOST', 'MAC', 'ENDPOINT'],
          eps.map((e) => [e.o, e.address, e.host === c.hostId ? 'this host' : e.host, e.mac || '(reserved)', e.endpoint ? shortOr(e.endpoint, opts.full) : '-']),
        ),
    );
  }
  return parts.join('');
}

/** The human form: a header of facts, then one table per kind of object. */
export function formatStatus(st: Status, opts: { full?: boolean; now?: number } = {}): string {
  const now = opts.now ?? Date.now();
  const id = (x: string) => shortOr(x, opts.full);
  const head = [
    `instance    ${st.instance}`,
    `socket      ${st.socket}`,
    `state       ${st.stateDir}${st.stateError ? `  (${st.stateError})` : ''}`,
    ...pluginLine(st.plugin, now),
  ];
  if (st.dockerNames) head.push(`names       not available: ${st.dockerNames}`);
  const parts = [head.join('\n') + '\n'];
  parts.push(
    `\nNETWORKS (${st.networks.length})\n` +
      (st.networks.length
        ? table(
            ['ID', 'NAME', 'KIND', 'BRIDGE', 'SUBNETS', 'GATEWAYS', 'OPTIONS'],
            st.networks.map((n) => [id(n.id), n.name ?? '-', n.phase === 'ready' ? n.kind : `${n.kind} (${n.phase})`, n.bridge, n.subnets.join(',') || '-', n.gateways.map((g) => g.split('/')[0]).join(',') || '-', optionsText(n.options)]),
          )
        : ''),
  );
  parts.push(
    `\nENDPOINTS (${st.endpoints.length})\n` +
      (st.endpoints.length
        ? table(
            ['NETWORK', 'CONTAINER', 'ENDPOINT', 'ADDRESSES', 'MAC', 'HOST VETH', 'PORTS'],
            st.endpoints.map((e) => [id(e.networkId), e.containerName ?? (e.joined ? '-' : '(not joined)'), id(e.id), e.addresses.join(',') || '-', e.mac, e.hostVeth, ports(e.ports)]),
          )
        : ''),
  );
  parts.push(
    `\nPOOLS (${st.pools.length})\n` +
      (st.pools.length
        ? table(
            ['ID', 'POOL', 'RANGE', 'CHOSEN BY', 'HELD'],
            st.pools.map((p) => [p.id, p.pool, p.range ?? '-', p.auto ? 'tsbridge' : 'user', `${p.allocated.endpoint} endpoints, ${p.allocated.gateway} gateway, ${p.allocated.aux} aux`]),
          )
        : ''),
  );
  if (st.plugin.serving) parts.push(formatCluster(st.plugin.cluster, opts));
  return parts.join('');
}
