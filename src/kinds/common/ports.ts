/** Published ports as elements of the shared port maps (src/kernel/rules/nft.ts), for any kind that DNATs. */
import type { Endpoint, PortMapping } from '../../domain/types.js';
import type { Element } from '../../kernel/types.js';

function familyOf(addr: string): 4 | 6 {
  return addr.includes(':') ? 6 : 4;
}

function hostOf(cidr: string): string {
  return cidr.split('/')[0]!;
}

/**
 * One map element per (mapping, family) the endpoint has an address for: a wildcard host address
 * ('' both families, '0.0.0.0' IPv4 only, '::' IPv6 only) goes to `ports4`/`ports6` keyed by
 * protocol and port, a specific one to `ports4_addr`/`ports6_addr` keyed by address as well.
 */
export function portElements(ep: Pick<Endpoint, 'ipv4' | 'ipv6'>, ports: PortMapping[]): Element[] {
  const out: Element[] = [];
  for (const p of ports) {
    for (const fam of [4, 6] as const) {
      const target = fam === 4 ? ep.ipv4 : ep.ipv6;
      if (!target) continue;
      if (p.hostIp !== '' && familyOf(p.hostIp) !== fam) continue;
      const wildcard = p.hostIp === '' || p.hostIp === '0.0.0.0' || p.hostIp === '::';
      out.push({
        set: wildcard ? `inet ports${fam}` : `inet ports${fam}_addr`,
        key: wildcard ? `${p.proto} . ${p.hostPort}` : `${p.hostIp} . ${p.proto} . ${p.hostPort}`,
        value: `${hostOf(target)} . ${p.containerPort}`,
      });
    }
  }
  return out;
}
