/**
 * An overlay network's rules: the NAT bridge's (masquerade on this host, published ports,
 * isolation from other networks, anti-spoofing of its endpoints), plus the VTEP allow-list —
 * VXLAN packets of its VNI are accepted only from the underlay addresses of its other members,
 * a set per network kept from the etcd watch. The VNI sits 4 bytes into the VXLAN header, 12 into
 * the UDP header: bits 96–119 of the transport header.
 */
import type { Network } from '../../domain/types.js';
import type { Element, NetworkRules } from '../../kernel/types.js';
import { bridgeRules } from '../bridge/rules.js';
import { settingsOf, VXLAN_PORT } from './settings.js';

/** The network's VTEP sets: `inet vteps4_<12 hex>` and `inet vteps6_<12 hex>`. */
export function vtepSets(n: Network): { v4: string; v6: string } {
  const id = n.id.slice(0, 12);
  return { v4: `inet vteps4_${id}`, v6: `inet vteps6_${id}` };
}

export function overlayRules(n: Network): NetworkRules {
  const s = settingsOf(n);
  const base = bridgeRules(n);
  const sets = vtepSets(n);
  const name = (ref: string) => ref.split(' ')[1]!;
  const vni = `udp dport ${VXLAN_PORT} @th,96,24 ${s.vni}`;
  const input = [...(base.chains['inet input'] ?? []), `${vni} ip saddr != @${name(sets.v4)} drop`, `${vni} ip6 saddr != @${name(sets.v6)} drop`];
  const elements: Element[] = s.vteps.map((v) => ({ set: v.includes(':') ? sets.v6 : sets.v4, key: v }));
  return {
    chains: { ...base.chains, 'inet input': input },
    elements: [...base.elements, ...elements],
    sets: [...base.sets, { set: sets.v4, type: 'ipv4_addr' }, { set: sets.v6, type: 'ipv6_addr' }],
    shim: base.shim,
  };
}
