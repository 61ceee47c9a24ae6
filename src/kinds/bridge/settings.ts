/** The NAT bridge's options: Docker's bridge driver names, with Docker's meaning (docs/options.md). */
import type { KindSettings } from '../../domain/types.js';
import { BRIDGE_PREFIX, HOST_VETH_PREFIX, PEER_VETH_PREFIX, bridgeName } from '../../domain/names.js';
import { fail } from '../../errors.js';
import { goBool, ipv4Address, ownLinkName } from '../../protocol/validate.js';
import type { CommonNetwork, KindOptions } from '../types.js';

export const BRIDGE_OPTIONS = {
  BRIDGE_NAME: 'com.docker.network.bridge.name',
  ICC: 'com.docker.network.bridge.enable_icc',
  MASQUERADE: 'com.docker.network.bridge.enable_ip_masquerade',
  HOST_BINDING_IPV4: 'com.docker.network.bridge.host_binding_ipv4',
  HOST_IPV4: 'com.docker.network.host_ipv4',
  INHIBIT_IPV4: 'com.docker.network.bridge.inhibit_ipv4',
  GATEWAY_MODE_IPV4: 'com.docker.network.bridge.gateway_mode_ipv4',
  GATEWAY_MODE_IPV6: 'com.docker.network.bridge.gateway_mode_ipv6',
} as const;

/**
 * Docker's gateway modes (Docker 27+), per address family. `nat` (the default): egress
 * masqueraded, ports published on host ports by DNAT. `routed`: no NAT of any kind — containers
 * are reached at their own addresses by hosts that route the subnet to this host, only published
 * container ports (and ICMP) are open to them, egress keeps the container's address.
 */
export type GatewayMode = 'nat' | 'routed';

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
  /**
   * Present (and 'routed') only for a family in routed gateway mode: a network without them — every
   * network stored before gateway modes existed — is `nat` in both, and compares equal to one
   * created now with the same options.
   */
  gatewayModeIpv4?: 'routed';
  gatewayModeIpv6?: 'routed';
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

/** A gateway mode option's value: `nat` or `routed`; Docker's other two are refused by name. */
function gatewayMode(value: string, option: string): GatewayMode {
  if (value === 'nat' || value === 'routed') return value;
  if (value === 'nat-unprotected') {
    fail('BAD_OPTION', {
      option,
      value,
      detail: 'not supported: it opens every container port to hosts that route to the network; publish the ports you want open, with nat or routed',
    });
  }
  if (value === 'isolated') {
    fail('BAD_OPTION', {
      option,
      value,
      detail: 'not supported: an --internal tsbridge network already keeps its containers from reaching the host (the bridge keeps its address)',
    });
  }
  return fail('BAD_OPTION', { option, value, detail: 'the gateway modes are nat and routed' });
}

export function parseBridgeSettings(o: KindOptions, net: CommonNetwork): BridgeSettings {
  const bool = (k: string, dflt: boolean) => (o[k] === undefined ? dflt : goBool(o[k], k));
  const name = o[BRIDGE_OPTIONS.BRIDGE_NAME];
  const binding = o[BRIDGE_OPTIONS.HOST_BINDING_IPV4];
  const snat = o[BRIDGE_OPTIONS.HOST_IPV4];
  const s: BridgeSettings = {
    bridge: name !== undefined ? ownLinkName(name, BRIDGE_OPTIONS.BRIDGE_NAME, [BRIDGE_PREFIX, HOST_VETH_PREFIX, PEER_VETH_PREFIX]) : bridgeName(net.id),
    bridgeNamedByUser: name !== undefined,
    icc: bool(BRIDGE_OPTIONS.ICC, BRIDGE_DEFAULTS.icc),
    masquerade: bool(BRIDGE_OPTIONS.MASQUERADE, BRIDGE_DEFAULTS.masquerade),
    hostBindingIpv4: binding !== undefined && binding !== '0.0.0.0' ? ipv4Address(binding, BRIDGE_OPTIONS.HOST_BINDING_IPV4) : BRIDGE_DEFAULTS.hostBindingIpv4,
    snatIpv4: snat !== undefined ? ipv4Address(snat, BRIDGE_OPTIONS.HOST_IPV4) : BRIDGE_DEFAULTS.snatIpv4,
    inhibitIpv4: bool(BRIDGE_OPTIONS.INHIBIT_IPV4, BRIDGE_DEFAULTS.inhibitIpv4),
  };
  const mode4 = o[BRIDGE_OPTIONS.GATEWAY_MODE_IPV4];
  const mode6 = o[BRIDGE_OPTIONS.GATEWAY_MODE_IPV6];
  if (mode4 !== undefined && gatewayMode(mode4, BRIDGE_OPTIONS.GATEWAY_MODE_IPV4) === 'routed') {
    const refuse = (detail: string) => fail('BAD_OPTION', { option: BRIDGE_OPTIONS.GATEWAY_MODE_IPV4, value: mode4, detail });
    if (net.ipv4.length === 0) refuse('the network has no IPv4');
    // Options whose whole meaning is IPv4 NAT: silently ignored, they would look applied.
    if (s.snatIpv4) refuse(`no NAT in routed mode: ${BRIDGE_OPTIONS.HOST_IPV4} would have no effect`);
    if (s.hostBindingIpv4) refuse(`no host ports in routed mode (ports open on the containers' own addresses): ${BRIDGE_OPTIONS.HOST_BINDING_IPV4} would have no effect`);
    s.gatewayModeIpv4 = 'routed';
  }
  if (mode6 !== undefined && gatewayMode(mode6, BRIDGE_OPTIONS.GATEWAY_MODE_IPV6) === 'routed') {
    if (!net.enableIpv6 || net.ipv6.length === 0) {
      fail('BAD_OPTION', { option: BRIDGE_OPTIONS.GATEWAY_MODE_IPV6, value: mode6, detail: 'the network has no IPv6 (create it with --ipv6)' });
    }
    s.gatewayModeIpv6 = 'routed';
  }
  return s;
}

/** A bridge network's settings (what parseBridgeSettings stored). */
export function settingsOf(net: { settings: KindSettings }): BridgeSettings {
  return net.settings as unknown as BridgeSettings;
}

/** Is this family of the network in routed gateway mode? */
export function routed(s: BridgeSettings, family: 4 | 6): boolean {
  return (family === 4 ? s.gatewayModeIpv4 : s.gatewayModeIpv6) === 'routed';
}

export function toSettings(s: BridgeSettings): KindSettings {
  return { ...s };
}
