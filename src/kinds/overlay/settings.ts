/**
 * An overlay network's options and settings. The options are the overlay's name and a few of the
 * NAT bridge's (an overlay network is a NAT bridge whose segment spans hosts); the settings are
 * completed before creation with what the cluster decided (VNI, gateway MAC) and this host's
 * underlay, and then kept current with the VTEPs allowed to send into it (from the etcd watch).
 */
import type { KindSettings } from '../../domain/types.js';
import { vxlanName } from '../../domain/names.js';
import { fail } from '../../errors.js';
import { OVERLAY_NAME } from '../../cluster/keys.js';
import { mtu as parseMtu } from '../../protocol/validate.js';
import { BRIDGE_OPTIONS, parseBridgeSettings, type BridgeSettings } from '../bridge/settings.js';
import type { CommonNetwork, KindOptions } from '../types.js';

/** `-o io.tsbridge.overlay=NAME` (and `--ipam-opt` of the same name): the overlay this network is part of. */
export const OVERLAY_OPTION = 'io.tsbridge.overlay';
const MTU_OPTION = 'com.docker.network.driver.mtu';
/** VXLAN's UDP port (IANA). */
export const VXLAN_PORT = 4789;

export const OVERLAY_OPTIONS = [
  OVERLAY_OPTION,
  MTU_OPTION,
  BRIDGE_OPTIONS.ICC,
  BRIDGE_OPTIONS.MASQUERADE,
  BRIDGE_OPTIONS.HOST_BINDING_IPV4,
  BRIDGE_OPTIONS.HOST_IPV4,
] as const;

export interface OverlaySettings extends BridgeSettings {
  overlay: string;
  /** The MTU the user asked for; 0: the underlay's minus VXLAN's overhead. */
  mtuAsked: number;
  /** Its VXLAN device (do not change once stored). */
  vxlan: string;
  // Completed before creation (0 / '' until then):
  vni: number;
  gatewayMac: string;
  /** This host's underlay address when the network was made. */
  vtep: string;
  /** The MTU of its bridge, VXLAN device and veths. */
  mtu: number;
  /** Underlay addresses allowed to send VXLAN into it (its other members'), kept from the watch. */
  vteps: string[];
}

export function parseOverlaySettings(o: KindOptions, net: CommonNetwork): OverlaySettings {
  const name = o[OVERLAY_OPTION] ?? '';
  if (!OVERLAY_NAME.test(name)) {
    fail('BAD_OPTION', { option: OVERLAY_OPTION, value: name, detail: 'an overlay name is 1-63 of letters, digits, ".", "_", "-", starting with a letter or digit' });
  }
  if (net.ipv4.length !== 1 || net.ipv6.length > 0 || net.enableIpv6) {
    fail('BAD_OPTION', { option: OVERLAY_OPTION, value: name, detail: 'an overlay network has exactly one IPv4 subnet and no IPv6 (for now)' });
  }
  if (!net.ipv4[0]!.gateway) fail('BAD_OPTION', { option: OVERLAY_OPTION, value: name, detail: 'an overlay network needs its gateway (the anycast gateway every host holds)' });
  const mtuAsked = o[MTU_OPTION] !== undefined ? parseMtu(o[MTU_OPTION], MTU_OPTION) : 0;
  return {
    ...parseBridgeSettings(o, net),
    overlay: name,
    mtuAsked,
    vxlan: vxlanName(net.id),
    vni: 0,
    gatewayMac: '',
    vtep: '',
    mtu: mtuAsked || net.mtu,
    vteps: [],
  };
}

/** An overlay network's settings (what parseOverlaySettings stored, completed before creation). */
export function settingsOf(net: { settings: KindSettings }): OverlaySettings {
  return net.settings as unknown as OverlaySettings;
}

export function toSettings(s: OverlaySettings): KindSettings {
  return { ...s, vteps: [...s.vteps] };
}
