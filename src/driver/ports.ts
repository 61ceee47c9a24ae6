/**
 * Host-port reservation: pure. Decides which host port each binding gets and
 * refuses one that tsbridge already published or that a host process listens on.
 */
import { fail } from '../errors.js';
import type { Listener, PortMapping, PortRequest, Proto } from '../domain/types.js';

export type { Listener };

export interface PortContext {
  /** Mappings already published by tsbridge (other endpoints). */
  taken: { mapping: PortMapping; owner: string }[];
  /** Sockets listening on the host. */
  listening: Listener[];
  /** Range for HostPort 0 (the kernel's ip_local_port_range). */
  ephemeral: [number, number];
  /** The network's com.docker.network.bridge.host_binding_ipv4, '' = none. */
  defaultHostIp: string;
  /** Address families the endpoint has (default both): a host address of a family it lacks is refused. */
  families?: { v4: boolean; v6: boolean };
}

function fam(ip: string): 0 | 4 | 6 {
  if (ip === '') return 0;
  return ip.includes(':') ? 6 : 4;
}

const WILDCARD = new Set(['', '0.0.0.0', '::']);

/** An IPv4-mapped IPv6 address (a dual-stack socket bound to an IPv4 address) as the IPv4 address. */
function unmapped(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice('::ffff:'.length) : ip;
}

/** Do two host addresses overlap? '' is every address; 0.0.0.0 / :: every address of a family. */
export function hostIpsOverlap(a: string, b: string): boolean {
  a = unmapped(a);
  b = unmapped(b);
  if (a === '' || b === '') return true;
  if (fam(a) !== fam(b)) return false;
  return a === b || WILDCARD.has(a) || WILDCARD.has(b);
}

/**
 * Host addresses kernel NAT cannot serve, refused rather than published to no effect:
 * IPv6 loopback (IPv6 has no route_localnet: the kernel drops a reply to ::1 that arrives on
 * a bridge), and a specific address of a family the container has no address of (no NAT64).
 * The wildcards 0.0.0.0 and :: are accepted whatever the container has: they publish in the
 * families it has (Docker may send both for one `-p`).
 */
function checkHostIp(hostIp: string, families: { v4: boolean; v6: boolean }): void {
  if (hostIp === '::1') { // host addresses arrive canonical (src/protocol/validate.ts)
    fail('BAD_ADDRESS', {
      value: hostIp,
      detail: 'IPv6 loopback cannot be published by kernel NAT (IPv6 has no route_localnet); bind to 127.0.0.1 or to an address of the host',
    });
  }
  if (WILDCARD.has(hostIp)) return;
  const f = fam(hostIp);
  if (f === 4 && !families.v4) fail('BAD_ADDRESS', { value: hostIp, detail: 'the container has no IPv4 address on this network to forward it to' });
  if (f === 6 && !families.v6) {
    fail('BAD_ADDRESS', { value: hostIp, detail: 'the container has no IPv6 address on this network to forward it to (create the network with --ipv6)' });
  }
}

export function allocatePorts(reqs: PortRequest[], ctx: PortContext): PortMapping[] {
  const out: PortMapping[] = [];
  const busy = (proto: Proto, ip: string, port: number): string | null => {
    for (const t of ctx.taken) {
      if (t.mapping.proto === proto && t.mapping.hostPort === port && hostIpsOverlap(t.mapping.hostIp, ip)) return ` (published by ${t.owner})`;
    }
    for (const m of out) {
      if (m.proto === proto && m.hostPort === port && hostIpsOverlap(m.hostIp, ip)) return ' (twice in this request)';
    }
    for (const l of ctx.listening) {
      if (l.proto === proto && l.port === port && hostIpsOverlap(l.ip, ip)) return ' (a host process listens on it)';
    }
    return null;
  };
  for (const r of reqs) {
    const hostIp = r.hostIp === '' ? ctx.defaultHostIp : r.hostIp;
    checkHostIp(hostIp, ctx.families ?? { v4: true, v6: true });
    let lo: number;
    let hi: number;
    if (r.hostPort === 0) [lo, hi] = ctx.ephemeral;
    else [lo, hi] = [r.hostPort, r.hostPortEnd > r.hostPort ? r.hostPortEnd : r.hostPort];
    let chosen = 0;
    let lastReason = '';
    for (let p = lo; p <= hi; p++) {
      const why = busy(r.proto, hostIp, p);
      if (why === null) {
        chosen = p;
        break;
      }
      lastReason = why;
    }
    if (chosen === 0) {
      if (lo === hi) fail('PORT_IN_USE', { hostIp: hostIp.includes(':') ? `[${hostIp}]` : hostIp || '0.0.0.0', port: lo, proto: r.proto, owner: lastReason });
      fail('NO_FREE_PORT', { proto: r.proto, range: `${lo}-${hi}` });
    }
    out.push({ proto: r.proto, hostIp, hostPort: chosen, containerPort: r.containerPort });
  }
  return out;
}
