/**
 * The uplink kind's options and what it stores: its settings (from the options, pure) and what it
 * recorded of the uplink before taking it over (`adopted`: the interface as it was).
 */
import { fail } from '../../errors.js';
import type { KindSettings, Network } from '../../domain/types.js';
import { bridgeName, isOurLinkName } from '../../domain/names.js';
import type { HeldAddress, HeldRoute } from '../../kernel/types.js';
import { goBool, interfaceName } from '../../protocol/validate.js';
import type { CommonNetwork, KindOptions } from '../types.js';

export const UPLINK_OPTIONS = {
  /** The host interface the network's bridge takes over. */
  UPLINK: 'io.tsbridge.uplink',
  /** Move the interface's addresses and routes to the bridge (and back when the network goes). */
  MOVE_ADDRESSES: 'io.tsbridge.uplink_move_addresses',
  BRIDGE_NAME: 'com.docker.network.bridge.name',
  /**
   * A common option, read here as well: without it the network takes the uplink's MTU, so this
   * kind must tell "not given" from the default the protocol edge fills in.
   */
  MTU: 'com.docker.network.driver.mtu',
} as const;

export interface UplinkSettings {
  /** The host interface (do not change once stored). */
  uplink: string;
  moveAddresses: boolean;
  /** Bridge interface name (do not change once stored). */
  bridge: string;
  bridgeNamedByUser: boolean;
  /** No MTU given: the network takes the uplink's (recorded when it is taken over). */
  mtuFromUplink: boolean;
}

/** The uplink as it was before the network took it over (Network.adopted). */
export interface UplinkRecord {
  mac: string;
  mtu: number;
  up: boolean;
  /** What moved to the bridge (empty unless io.tsbridge.uplink_move_addresses). */
  addresses: HeldAddress[];
  routes: HeldRoute[];
}

export function parseUplinkSettings(o: KindOptions, net: CommonNetwork): UplinkSettings {
  const opt = UPLINK_OPTIONS.UPLINK;
  const given = o[opt];
  if (given === undefined || given === '') {
    fail('BAD_OPTION', { option: opt, value: given ?? '', detail: 'a network of mode uplink needs the host interface it takes over: -o io.tsbridge.uplink=IFACE' });
  }
  const uplink = interfaceName(given, opt);
  if (uplink === 'lo') fail('BAD_OPTION', { option: opt, value: uplink, detail: 'the loopback interface leads to no LAN' });
  if (isOurLinkName(uplink)) fail('BAD_OPTION', { option: opt, value: uplink, detail: "that name is one of tsbridge's own links (tsb-, tsv, tsc)" });
  if (net.internal) {
    fail('BAD_OPTION', { option: opt, value: uplink, detail: 'an internal network has no way out, and an uplink is one: drop --internal, or the uplink' });
  }
  const name = o[UPLINK_OPTIONS.BRIDGE_NAME];
  const bridge = name !== undefined ? interfaceName(name, UPLINK_OPTIONS.BRIDGE_NAME) : bridgeName(net.id);
  if (bridge === uplink) fail('BAD_OPTION', { option: UPLINK_OPTIONS.BRIDGE_NAME, value: bridge, detail: 'the bridge cannot be named after the uplink it takes over' });
  const move = o[UPLINK_OPTIONS.MOVE_ADDRESSES];
  return {
    uplink,
    moveAddresses: move === undefined ? false : goBool(move, UPLINK_OPTIONS.MOVE_ADDRESSES),
    bridge,
    bridgeNamedByUser: name !== undefined,
    mtuFromUplink: o[UPLINK_OPTIONS.MTU] === undefined,
  };
}

export function settingsOf(net: { settings: KindSettings }): UplinkSettings {
  return net.settings as unknown as UplinkSettings;
}

export function toSettings(s: UplinkSettings): KindSettings {
  return { ...s };
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * What the network recorded of its uplink, or null before it was taken over. A record of the
 * wrong shape is a STATE error: guessing how to give a host its addresses back is not an option.
 */
export function recordOf(net: Pick<Network, 'id' | 'adopted'>): UplinkRecord | null {
  const a = net.adopted;
  if (a === undefined) return null;
  const ok =
    isObj(a) && typeof a.mac === 'string' && typeof a.mtu === 'number' && typeof a.up === 'boolean' &&
    Array.isArray(a.addresses) && a.addresses.every((x) => isObj(x) && typeof x.cidr === 'string') &&
    Array.isArray(a.routes) && a.routes.every((x) => isObj(x) && typeof x.to === 'string');
  if (!ok) fail('STATE', { detail: `network ${net.id.slice(0, 12)}: its uplink record is not what tsbridge wrote; fix or move the file` });
  return a as unknown as UplinkRecord;
}

export function toRecord(r: UplinkRecord): KindSettings {
  return JSON.parse(JSON.stringify(r)) as KindSettings;
}
