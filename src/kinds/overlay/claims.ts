/**
 * What this host has in the cluster, read from its local state: the overlays its pools joined and
 * the addresses of their endpoints. The cluster session puts these back in etcd when it registers
 * again, and deletes this host's keys the state no longer has (src/cluster/session.ts).
 */
import type { LocalClaims } from '../../cluster/session.js';
import type { State } from '../../state/types.js';
import { settingsOf } from './settings.js';

export function overlayClaims(s: Readonly<State>): LocalClaims {
  const claims: LocalClaims = { overlays: [], addresses: [] };
  for (const p of Object.values(s.pools)) {
    const o = p.overlay;
    if (!o) continue;
    claims.overlays.push({ name: o.name, config: { vni: o.vni, subnet: p.pool, gateway: o.gateway, gatewayMac: o.gatewayMac } });
    const endpoints = Object.values(s.endpoints).filter((e) => {
      const n = s.networks[e.networkId];
      return n?.kind === 'overlay' && settingsOf(n).overlay === o.name;
    });
    for (const [address, why] of Object.entries(p.allocated)) {
      if (why !== 'endpoint') continue;
      const ep = endpoints.find((e) => e.ipv4?.split('/')[0] === address);
      claims.addresses.push({ overlay: o.name, address, mac: ep?.mac ?? '', endpoint: ep?.id ?? '' });
    }
  }
  return claims;
}
