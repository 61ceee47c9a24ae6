/**
 * `tsbridge status`: what one instance holds and whether it is serving. Networks, endpoints and
 * pools from the state file; names from Docker when it answers; liveness, the iptables variant
 * and the last sweep from the plugin's health call.
 */
import type { HealthReport } from '../metrics/health.js';
import type { PoolRecord } from '../ipam/types.js';
import { NETWORK_DEFAULTS, type NetworkRecord, type PortMapping, type State } from '../state/types.js';
import type { Names } from './docker.js';
import { duration, shortOr, table } from './table.js';

export interface NetworkStatus {
  id: string;
  name: string | null;
  /** The kind of network (today every tsbridge network is a bridge). */
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

/** Options of a network that differ from what Docker's bridge would do by default. */
export function networkOptions(n: NetworkRecord): Record<string, string | number | boolean> {
  const o: Record<string, string | number | boolean> = {};
  const D = NETWORK_DEFAULTS;
  if (n.bridgeNamedByUser) o.bridge_name = n.bridge;
  if (n.mtu !== D.mtu) o.mtu = n.mtu;
  if (n.internal !== D.internal) o.internal = n.internal;
  if (n.icc !== D.icc) o.enable_icc = n.icc;
  if (n.masquerade !== D.masquerade) o.enable_ip_masquerade = n.masquerade;
  if (n.hostBindingIpv4 !== D.hostBindingIpv4) o.host_binding_ipv4 = n.hostBindingIpv4;
  if (n.snatIpv4 !== D.snatIpv4) o.host_ipv4 = n.snatIpv4;
  if (n.inhibitIpv4 !== D.inhibitIpv4) o.inhibit_ipv4 = n.inhibitIpv4;
  if (n.ifacePrefix !== D.ifacePrefix) o.container_iface_prefix = n.ifacePrefix;
  if (n.enableIpv6 !== D.enableIpv6) o.ipv6 = n.enableIpv6;
  return o;
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
          kind: (n as NetworkRecord & { kind?: string }).kind ?? 'bridge',
          phase: n.phase,
          bridge: n.bridge,
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
            ports: e.ports ?? [],
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
  const one = (m: PortMapping) => `${m.hostIp ? (m.hostIp.includes(':') ? `[${m.hostIp}]` : m.hostIp) + ':' : ''}${m.hostPort}->${m.containerPort}/${m.proto}`;
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
  return parts.join('');
}
