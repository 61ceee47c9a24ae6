/**
 * Who this host is in the cluster: a host id made once and kept in the state directory (so a
 * restarted plugin is the same host), and its underlay address — TSBRIDGE_VTEP_ADDRESS, or the
 * source address of its route to the first etcd endpoint — with the MTU of that route's interface.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import path from 'node:path';
import { HOST_ID } from './keys.js';

const ID_FILE = 'cluster-host-id';

/** Reads this host's id from the state directory, making and saving one the first time. */
export async function hostId(stateDir: string): Promise<string> {
  const file = path.join(stateDir, ID_FILE);
  try {
    const id = (await fs.readFile(file, 'utf8')).trim();
    if (HOST_ID.test(id)) return id;
    throw new Error(`${file} does not hold a host id (16 hex digits): "${id.slice(0, 40)}"`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const id = randomBytes(8).toString('hex');
  await fs.mkdir(stateDir, { recursive: true });
  const tmp = `${file}.tmp`;
  await fs.writeFile(tmp, `${id}\n`, { mode: 0o644 });
  await fs.rename(tmp, file);
  return id;
}

/** What `ip -j route get` says about a destination. */
export interface RouteInfo {
  dev: string;
  prefsrc?: string;
}

export interface Underlay {
  /** This host's VTEP address. */
  vtep: string;
  /** The interface it sits on, and that interface's MTU. */
  dev: string;
  mtu: number;
}

/** The host part of an etcd client URL (`http://[fd00::1]:2379` → `fd00::1`). */
export function endpointHost(url: string): string {
  const u = new URL(url);
  return u.hostname.replace(/^\[(.*)\]$/, '$1');
}

/** Bytes VXLAN adds around a frame: outer IP + UDP + VXLAN header + inner Ethernet. */
export function vxlanOverhead(vtep: string): number {
  return (net.isIPv6(vtep) ? 40 : 20) + 8 + 8 + 14;
}

/**
 * This host's underlay: `configured` (TSBRIDGE_VTEP_ADDRESS) or the preferred source of the route
 * to the first etcd endpoint (its name resolved first). `route` and `mtuOf` read the kernel.
 */
export async function findUnderlay(
  configured: string,
  firstEndpoint: string,
  route: (to: string) => Promise<RouteInfo>,
  mtuOf: (dev: string) => Promise<number>,
  devOf: (address: string) => Promise<string | undefined>,
): Promise<Underlay> {
  if (configured) {
    const dev = await devOf(configured);
    if (!dev) throw new Error(`TSBRIDGE_VTEP_ADDRESS=${configured} is not an address of this host`);
    return { vtep: configured, dev, mtu: await mtuOf(dev) };
  }
  const host = endpointHost(firstEndpoint);
  const target = net.isIP(host) ? host : (await lookup(host)).address;
  if (/^127\./.test(target) || target === '::1') {
    throw new Error(`etcd is reached on loopback (${target}): other hosts cannot use that as this host's address; set TSBRIDGE_VTEP_ADDRESS`);
  }
  const r = await route(target);
  if (!r.prefsrc) throw new Error(`the route to etcd (${target}) has no source address; set TSBRIDGE_VTEP_ADDRESS`);
  // etcd on this host, on its underlay address: the route goes through lo, the address is ours.
  const dev = r.dev === 'lo' ? await devOf(r.prefsrc) : r.dev;
  if (!dev) throw new Error(`no interface holds ${r.prefsrc}, the source address towards etcd; set TSBRIDGE_VTEP_ADDRESS`);
  return { vtep: r.prefsrc, dev, mtu: await mtuOf(dev) };
}
