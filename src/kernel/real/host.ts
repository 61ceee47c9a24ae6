/**
 * Read-only views of the host, straight from /proc and /etc (no processes):
 * routes and nameservers an automatic pool must avoid, sockets a published
 * port must not steal, and the kernel's ephemeral port range.
 */
import { promises as fs } from 'node:fs';
import type { Listener } from '../../driver/ports.js';
import type { HostPorts, HostRoute, HostRoutes, HostView } from '../types.js';
import type { Proto } from '../../state/types.js';
import { formatAddress } from '../../net/addr.js';

async function readOr(file: string, dflt = ''): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch {
    return dflt;
  }
}

function hexToIpv4LE(hex: string): string {
  const n = parseInt(hex, 16);
  return [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255].join('.');
}

function maskLength(hexMaskLE: string): number {
  let n = parseInt(hexMaskLE, 16) >>> 0;
  let bits = 0;
  while (n) {
    bits += n & 1;
    n >>>= 1;
  }
  return bits;
}

function hexToIpv6(hex: string): string {
  return hex.match(/.{4}/g)!.join(':');
}

/** Non-default IPv4 and IPv6 routes of the main table, as CIDRs. */
export function parseRoutes(route4: string, route6: string): string[] {
  const out: string[] = [];
  for (const line of route4.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const len = maskLength(f[7]!);
    if (len === 0) continue;
    out.push(`${hexToIpv4LE(f[1]!)}/${len}`);
  }
  for (const line of route6.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const len = parseInt(f[1]!, 16);
    if (len === 0) continue;
    out.push(`${hexToIpv6(f[0]!)}/${len}`);
  }
  return out;
}

/** Every route of the main table (default routes included), with next hop and device. */
export function parseRouteTable(route4: string, route6: string): HostRoute[] {
  const out: HostRoute[] = [];
  for (const line of route4.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    if (parseInt(f[3]!, 16) & 0x200) continue; // RTF_REJECT
    const gw = hexToIpv4LE(f[2]!);
    out.push({ to: `${hexToIpv4LE(f[1]!)}/${maskLength(f[7]!)}`, via: gw === '0.0.0.0' ? null : gw, dev: f[0]! });
  }
  for (const line of route6.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const flags = parseInt(f[8]!, 16);
    if (flags & 0x200) continue; // RTF_REJECT: unreachable routes, not the host's way anywhere
    const dev = f[9]!;
    if (dev === 'lo') continue; // local and multicast entries
    const hop = formatAddress(6, BigInt(`0x${f[4]!}`));
    out.push({ to: `${formatAddress(6, BigInt(`0x${f[0]!}`))}/${parseInt(f[1]!, 16)}`, via: hop === '::' ? null : hop, dev });
  }
  return out;
}

export function parseNameservers(resolvConf: string): string[] {
  return resolvConf
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[0] === 'nameserver' && f[1])
    .map((f) => f[1]!.split('%')[0]!);
}

/** Listening TCP sockets and bound UDP sockets from /proc/net/{tcp,udp}{,6}. */
export function parseSockets(text: string, proto: Proto, v6: boolean): Listener[] {
  const out: Listener[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    if (proto === 'tcp' && f[3] !== '0A') continue; // LISTEN
    const [addrHex, portHex] = f[1]!.split(':');
    const port = parseInt(portHex!, 16);
    let ip: string;
    if (!v6) ip = hexToIpv4LE(addrHex!);
    else {
      // /proc prints IPv6 as four little-endian 32-bit words; written canonically so it
      // compares equal to a (canonical) host address of a port binding.
      const words = addrHex!.match(/.{8}/g)!.map((w) => w.match(/../g)!.reverse().join(''));
      ip = formatAddress(6, BigInt(`0x${words.join('')}`));
    }
    const wildcard = /^[0.:]+$/.test(ip);
    // A wildcard IPv6 socket is usually dual-stack: treat it as every address.
    out.push({ proto, ip: wildcard ? (v6 ? '' : '0.0.0.0') : ip, port });
  }
  return out;
}

export class ProcHost implements HostView, HostPorts, HostRoutes {
  constructor(private readonly proc = '/proc', private readonly resolv = '/etc/resolv.conf') {}

  async routeTable(): Promise<HostRoute[]> {
    const [r4, r6] = await Promise.all([readOr(`${this.proc}/net/route`), readOr(`${this.proc}/net/ipv6_route`)]);
    return parseRouteTable(r4, r6);
  }

  async nameservers(): Promise<string[]> {
    return parseNameservers(await readOr(this.resolv));
  }

  async takenPrefixes(): Promise<string[]> {
    const [r4, r6, resolv] = await Promise.all([
      readOr(`${this.proc}/net/route`),
      readOr(`${this.proc}/net/ipv6_route`),
      readOr(this.resolv),
    ]);
    return [...parseRoutes(r4, r6), ...parseNameservers(resolv)];
  }

  async listening(): Promise<Listener[]> {
    const files: [string, Proto, boolean][] = [['tcp', 'tcp', false], ['tcp6', 'tcp', true], ['udp', 'udp', false], ['udp6', 'udp', true]];
    const texts = await Promise.all(files.map(([f]) => readOr(`${this.proc}/net/${f}`)));
    return files.flatMap(([, proto, v6], i) => parseSockets(texts[i]!, proto, v6));
  }

  async ephemeralRange(): Promise<[number, number]> {
    const t = (await readOr(`${this.proc}/sys/net/ipv4/ip_local_port_range`, '32768 60999')).trim().split(/\s+/).map(Number);
    return [t[0] ?? 32768, t[1] ?? 60999];
  }
}
