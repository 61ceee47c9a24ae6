/**
 * `tsbridge ports`: every published port, read from the plugin's state file.
 *
 * Docker cannot show a remote driver's ports (`docker port` and `docker ps` stay empty), so
 * this is where users look. It reads state.json — no kernel, no lock: the plugin replaces the
 * file atomically, so a read sees one whole version. The plugin knows endpoint IDs, not
 * container names: the command asks Docker for those (src/cli/docker.ts), and shows IDs
 * alone when Docker does not answer.
 */
import { KINDS } from '../kinds/registry.js';
import type { Proto, State } from '../state/types.js';
import type { Names } from '../docker/client.js';
import { shortOr, table } from './table.js';

/** One forwarding the kernel does: a (published mapping, address family) pair — one map element. */
export interface PortRow {
  networkId: string;
  /** The network's bridge interface. */
  bridge: string;
  endpointId: string;
  proto: Proto;
  /** Host address as published: '' = every address of the family. */
  hostIp: string;
  hostPort: number;
  /** The family forwarded; null when the container has no address of the family the host address asks for. */
  family: 4 | 6 | null;
  /** Container-side address (no prefix length); '' when family is null. */
  containerIp: string;
  containerPort: number;
}

function plain(cidr: string | null): string {
  return cidr ? cidr.split('/')[0]! : '';
}

/** A row with Docker's names: null where Docker did not say (not asked, not reachable, not its). */
export interface NamedPortRow extends PortRow {
  networkName: string | null;
  containerName: string | null;
}

export function withNames(rows: PortRow[], names: Names): NamedPortRow[] {
  return rows.map((r) => ({ ...r, networkName: names.networks.get(r.networkId) ?? null, containerName: names.containers.get(r.endpointId) ?? null }));
}

/** One row per map element, sorted by network, host port, protocol, family, host address. */
export function portRows(state: State): PortRow[] {
  const rows: PortRow[] = [];
  for (const ep of Object.values(state.endpoints)) {
    const net = state.networks[ep.networkId];
    const bridge = (net && KINDS.get(net.kind).hostInterface(net)) ?? '';
    for (const m of ep.ports ?? []) {
      const wanted: (4 | 6)[] = m.hostIp === '' ? [4, 6] : m.hostIp.includes(':') ? [6] : [4];
      const base = { networkId: ep.networkId, bridge, endpointId: ep.id, proto: m.proto, hostIp: m.hostIp, hostPort: m.hostPort, containerPort: m.containerPort };
      let any = false;
      for (const family of wanted) {
        const target = plain(family === 4 ? ep.ipv4 : ep.ipv6);
        if (!target) continue;
        rows.push({ ...base, family, containerIp: target });
        any = true;
      }
      if (!any) rows.push({ ...base, family: null, containerIp: '' });
    }
  }
  return rows.sort(
    (a, b) =>
      a.networkId.localeCompare(b.networkId) ||
      a.hostPort - b.hostPort ||
      a.proto.localeCompare(b.proto) ||
      (a.family ?? 0) - (b.family ?? 0) ||
      a.hostIp.localeCompare(b.hostIp),
  );
}

function addrPort(ip: string, port: number): string {
  return `${ip.includes(':') ? `[${ip}]` : ip}:${port}`;
}

/**
 * The host side as a user would type it: every address of the family is 0.0.0.0 / [::]. A
 * mapping without a host port (routed gateway mode: the container port opened on the container's
 * own address) is `(routed)`.
 */
export function hostSide(r: PortRow): string {
  if (r.hostPort === 0) return '(routed)';
  const ip = r.hostIp !== '' ? r.hostIp : r.family === 6 ? '::' : '0.0.0.0';
  return addrPort(ip, r.hostPort);
}

/**
 * A fixed-width table, `docker ps`-like; IDs shortened to 12 characters unless `full`. With
 * `names`, a NAME column holds the container's name ('-' where Docker did not give one).
 */
export function formatTable(rows: (PortRow & Partial<NamedPortRow>)[], opts: { full?: boolean; names?: boolean } = {}): string {
  const header = ['NETWORK', 'BRIDGE', 'ENDPOINT', ...(opts.names ? ['NAME'] : []), 'PROTO', 'HOST', 'CONTAINER'];
  const body = rows.map((r) => [
    shortOr(r.networkId, opts.full),
    r.bridge,
    shortOr(r.endpointId, opts.full),
    ...(opts.names ? [r.containerName ?? '-'] : []),
    r.proto,
    hostSide(r),
    r.family === null ? `(no IPv${r.hostIp.includes(':') ? 6 : 4} address):${r.containerPort}` : addrPort(r.containerIp, r.containerPort),
  ]);
  return table(header, body);
}
