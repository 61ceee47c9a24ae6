/** The NAT bridge's options: Docker's bridge driver names, with Docker's meaning (docs/options.md). */
import type { KindSettings } from '../../domain/types.js';
import { bridgeName } from '../../domain/names.js';
import { goBool, interfaceName, ipv4Address } from '../../protocol/validate.js';
import type { CommonNetwork, KindOptions } from '../types.js';

export const BRIDGE_OPTIONS = {
  BRIDGE_NAME: 'com.docker.network.bridge.name',
  ICC: 'com.docker.network.bridge.enable_icc',
  MASQUERADE: 'com.docker.network.bridge.enable_ip_masquerade',
  HOST_BINDING_IPV4: 'com.docker.network.bridge.host_binding_ipv4',
  HOST_IPV4: 'com.docker.network.host_ipv4',
  INHIBIT_IPV4: 'com.docker.network.bridge.inhibit_ipv4',
} as const;

export interface BridgeSettings {
  /** Bridge interface name (do not change once stored). */
  bridge: string;
  /** True when the user chose the bridge name. */
  bridgeNamedByUser: boolean;
  icc: boolean;
  masquerade: boolean;
  /** Default host address for published ports, '' = all. */
  hostBindingIpv4: string;
  /** SNAT egress to this address instead of masquerade, '' = masquerade. */
  snatIpv4: string;
  /** Do not put the IPv4 gateway address on the bridge. */
  inhibitIpv4: boolean;
}

/** What a network gets for every option the user did not set (Docker's bridge defaults). */
export const BRIDGE_DEFAULTS: Omit<BridgeSettings, 'bridge'> = {
  bridgeNamedByUser: false,
  icc: true,
  masquerade: true,
  hostBindingIpv4: '',
  snatIpv4: '',
  inhibitIpv4: false,
};

export function parseBridgeSettings(o: KindOptions, net: CommonNetwork): BridgeSettings {
  const bool = (k: string, dflt: boolean) => (o[k] === undefined ? dflt : goBool(o[k], k));
  const name = o[BRIDGE_OPTIONS.BRIDGE_NAME];
  const binding = o[BRIDGE_OPTIONS.HOST_BINDING_IPV4];
  const snat = o[BRIDGE_OPTIONS.HOST_IPV4];
  return {
    bridge: name !== undefined ? interfaceName(name, BRIDGE_OPTIONS.BRIDGE_NAME) : bridgeName(net.id),
    bridgeNamedByUser: name !== undefined,
    icc: bool(BRIDGE_OPTIONS.ICC, BRIDGE_DEFAULTS.icc),
    masquerade: bool(BRIDGE_OPTIONS.MASQUERADE, BRIDGE_DEFAULTS.masquerade),
    hostBindingIpv4: binding !== undefined && binding !== '0.0.0.0' ? ipv4Address(binding, BRIDGE_OPTIONS.HOST_BINDING_IPV4) : BRIDGE_DEFAULTS.hostBindingIpv4,
    snatIpv4: snat !== undefined ? ipv4Address(snat, BRIDGE_OPTIONS.HOST_IPV4) : BRIDGE_DEFAULTS.snatIpv4,
    inhibitIpv4: bool(BRIDGE_OPTIONS.INHIBIT_IPV4, BRIDGE_DEFAULTS.inhibitIpv4),
  };
}

/** A bridge network's settings (what parseBridgeSettings stored). */
export function settingsOf(net: { settings: KindSettings }): BridgeSettings {
  return net.settings as unknown as BridgeSettings;
}

export function toSettings(s: BridgeSettings): KindSettings {
  return { ...s };
}
