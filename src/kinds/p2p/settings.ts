/** The point-to-point kind's options: the NAT bridge's that still mean something without a bridge (docs/options.md). */
import type { KindSettings } from '../../domain/types.js';
import { fail } from '../../errors.js';
import { goBool, ipv4Address } from '../../protocol/validate.js';
import { BRIDGE_OPTIONS } from '../bridge/settings.js';
import { MODE_OPTION } from '../select.js';
import type { CommonNetwork, KindOptions } from '../types.js';

export const P2P_OPTIONS = {
  ICC: BRIDGE_OPTIONS.ICC,
  MASQUERADE: BRIDGE_OPTIONS.MASQUERADE,
  HOST_BINDING_IPV4: BRIDGE_OPTIONS.HOST_BINDING_IPV4,
  HOST_IPV4: BRIDGE_OPTIONS.HOST_IPV4,
} as const;

export interface P2pSettings {
  /** false: containers of the network do not reach each other directly (through the host's routing). */
  icc: boolean;
  masquerade: boolean;
  /** Default host address for published ports, '' = all. */
  hostBindingIpv4: string;
  /** SNAT egress to this address instead of masquerade, '' = masquerade. */
  snatIpv4: string;
}

export const P2P_DEFAULTS: P2pSettings = { icc: true, masquerade: true, hostBindingIpv4: '', snatIpv4: '' };

export function parseP2pSettings(o: KindOptions, net: CommonNetwork): P2pSettings {
  // Every container's host end holds its subnet's gateway: without one there is nothing to route through.
  const subnets = [...net.ipv4, ...(net.enableIpv6 ? net.ipv6 : [])];
  const bare = subnets.find((x) => !x.gateway);
  if (bare) fail('BAD_OPTION', { option: MODE_OPTION, value: 'p2p', detail: `subnet ${bare.subnet} has no gateway address, which point-to-point links need` });
  const bool = (k: string, dflt: boolean) => (o[k] === undefined ? dflt : goBool(o[k], k));
  const binding = o[P2P_OPTIONS.HOST_BINDING_IPV4];
  const snat = o[P2P_OPTIONS.HOST_IPV4];
  return {
    icc: bool(P2P_OPTIONS.ICC, P2P_DEFAULTS.icc),
    masquerade: bool(P2P_OPTIONS.MASQUERADE, P2P_DEFAULTS.masquerade),
    hostBindingIpv4: binding !== undefined && binding !== '0.0.0.0' ? ipv4Address(binding, P2P_OPTIONS.HOST_BINDING_IPV4) : '',
    snatIpv4: snat !== undefined ? ipv4Address(snat, P2P_OPTIONS.HOST_IPV4) : '',
  };
}

export function p2pSettingsOf(net: { settings: KindSettings }): P2pSettings {
  return net.settings as unknown as P2pSettings;
}
