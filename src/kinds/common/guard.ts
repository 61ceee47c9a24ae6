/**
 * Anti-spoofing on a bridge port: an endpoint's elements of the shared guard sets of the bridge
 * table (src/kernel/rules/nft.ts holds the rules that use them), for any kind whose endpoints sit
 * on a bridge.
 */
import { parseAddress } from '../../net/addr.js';
import type { Endpoint } from '../../domain/types.js';
import type { Element } from '../../kernel/types.js';

const q = (s: string) => `"${s}"`;

/**
 * The port (the endpoint's host veth) is guarded; frames from it must carry its MAC and its own
 * addresses; its neighbour advertisements may claim its IPv6 address and its EUI-64 link-local one.
 */
export function guardElements(ep: Pick<Endpoint, 'hostVeth' | 'mac' | 'ipv4' | 'ipv6'>): Element[] {
  const port = q(ep.hostVeth);
  const v4 = ep.ipv4 ? ep.ipv4.split('/')[0]! : null;
  const v6 = ep.ipv6 ? ep.ipv6.split('/')[0]! : null;
  const out: Element[] = [
    { set: 'bridge guarded', key: port },
    { set: 'bridge mac', key: `${port} . ${ep.mac}` },
  ];
  if (v4) out.push({ set: 'bridge addr4', key: `${port} . ${v4}` });
  if (v6) out.push({ set: 'bridge addr6', key: `${port} . ${v6}` });
  for (const target of [...(v6 ? [parseAddress(v6).value] : []), linkLocal(ep.mac)]) {
    out.push({ set: 'bridge nd_target', key: `${port} . ${hex128(target)}` });
  }
  return out;
}

/** The EUI-64 link-local address the kernel gives an interface with this MAC (RFC 4291 appendix A). */
export function linkLocal(mac: string): bigint {
  const b = mac.split(':').map((x) => parseInt(x, 16));
  const iid = [b[0]! ^ 0x02, b[1]!, b[2]!, 0xff, 0xfe, b[3]!, b[4]!, b[5]!];
  return (0xfe80n << 112n) | iid.reduce((acc, x) => (acc << 8n) | BigInt(x), 0n);
}

function hex128(v: bigint): string {
  return `0x${v.toString(16).padStart(32, '0')}`;
}
