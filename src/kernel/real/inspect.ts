/**
 * Read-only views of the kernel for `tsbridge doctor`: links with their details (one
 * `ip -j -d addr show`), the main table's routes (`ip -j route`, both families) and sysctls
 * (read from /proc/sys, or where TSBRIDGE_SYSCTL_ROOT says). Nothing here writes.
 */
import { promises as fs } from 'node:fs';
import type { KernelInspect, LinkDetail, RouteSpec } from '../types.js';
import type { Runner } from './exec.js';

interface RawAddrLink {
  ifname: string;
  ifalias?: string;
  master?: string;
  mtu?: number;
  flags?: string[];
  address?: string;
  linkinfo?: { info_kind?: string };
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

interface RawRoute {
  dst: string;
  dev?: string;
  gateway?: string;
  scope?: string;
  type?: string;
}

export function parseAddrShow(json: string, alias = 'tsbridge'): LinkDetail[] {
  return (JSON.parse(json || '[]') as RawAddrLink[]).map((x) => ({
    name: x.ifname,
    kind: x.linkinfo?.info_kind ?? '',
    master: x.master ?? null,
    mtu: x.mtu ?? 0,
    up: (x.flags ?? []).includes('UP'),
    addresses: (x.addr_info ?? []).filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`),
    mac: x.address ?? '',
    owned: x.ifalias === alias,
  }));
}

export function parseRouteShow(json: string, v6: boolean): RouteSpec[] {
  return (JSON.parse(json || '[]') as RawRoute[])
    .filter((r) => (r.dev || r.type === 'unreachable') && !r.gateway && r.dst !== 'default')
    .map((r): RouteSpec => {
      const to = r.dst.includes('/') ? r.dst : `${r.dst}/${v6 ? 128 : 32}`;
      return r.type === 'unreachable' ? { to, unreachable: true } : { to, dev: r.dev! };
    });
}

export class IpInspect implements KernelInspect {
  constructor(
    private readonly runner: Runner,
    private readonly sysctlRoot = '/proc/sys',
    /** The ifalias this instance sets on its links. */
    private readonly alias = 'tsbridge',
  ) {}

  async links(): Promise<LinkDetail[]> {
    return parseAddrShow((await this.runner.run('ip', ['-j', '-d', 'addr', 'show'])).stdout, this.alias);
  }

  async routes(): Promise<RouteSpec[]> {
    const v4 = await this.runner.run('ip', ['-j', 'route', 'show', 'table', 'main']);
    const v6 = await this.runner.run('ip', ['-j', '-6', 'route', 'show', 'table', 'main']);
    return [...parseRouteShow(v4.stdout, false), ...parseRouteShow(v6.stdout, true)];
  }

  async sysctl(key: string): Promise<string | null> {
    try {
      return (await fs.readFile(`${this.sysctlRoot}/${key.replace(/\./g, '/')}`, 'utf8')).trim();
    } catch {
      return null;
    }
  }
}
