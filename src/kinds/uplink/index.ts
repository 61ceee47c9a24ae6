/**
 * Containers on the LAN (`-o io.tsbridge.uplink=IFACE`): a bridge per network that takes over a
 * host interface as a port, so containers sit on that interface's LAN with addresses of the LAN's
 * subnet, next to its other hosts. No NAT, nothing routed by this host: the gateway containers are
 * given is the LAN's router (Join returns it), not the bridge, which holds no address of its own.
 *
 * - The uplink must be an Ethernet interface that is nobody's port and holds nothing: an address
 *   or a route through it would stop working once it is a bridge port. With
 *   `io.tsbridge.uplink_move_addresses=true` they move to the bridge instead (the bridge takes the
 *   uplink's MAC, so the LAN sees the same host), and back when the network goes. What was moved
 *   is recorded in the state before anything changes (Network.adopted): a failure gives it back
 *   at once, a crash at the next start.
 * - Anti-spoofing on the containers' ports as on the NAT bridge; frames from the uplink port are
 *   not checked (they are the LAN's).
 * - Bridged frames pass the iptables FORWARD hook when br_netfilter is on (Docker turns it on):
 *   the forward shim lets through traffic within the bridge, nothing else.
 * - Ports are not published: containers are reached at their own addresses (as with Docker's
 *   macvlan and ipvlan drivers); `-p` is refused rather than silently ignored.
 * - The bridge takes no part in the LAN's IPv6 configuration: without moved addresses its IPv6 is
 *   off, with them it accepts no router advertisement (what moved is a static copy).
 */
import { fail } from '../../errors.js';
import type { Endpoint, Network } from '../../domain/types.js';
import { macFromId } from '../../domain/names.js';
import { describeRoute } from '../../kernel/held.js';
import type { SysctlSetting } from '../../kernel/types.js';
import { guardElements } from '../common/guard.js';
import type { Kind } from '../types.js';
import { parseUplinkSettings, recordOf, settingsOf, toRecord, toSettings, UPLINK_OPTIONS, type UplinkRecord } from './settings.js';

export { uplinkLan } from './lan.js';

const plain = (cidr: string | null | undefined) => (cidr ?? '').split('/')[0]!;

/** The MTU of the network's links: the one given, else the uplink's as recorded. */
export function uplinkMtu(n: Network): number {
  const r = recordOf(n);
  return settingsOf(n).mtuFromUplink && r ? r.mtu : n.mtu;
}

export const uplinkKind: Kind = {
  name: 'uplink',
  sharesHostSubnet: true,
  options: Object.values(UPLINK_OPTIONS),
  claims: (o) => o[UPLINK_OPTIONS.UPLINK] !== undefined,
  parse: (options, net) => toSettings(parseUplinkSettings(options, net)),

  network(n) {
    const s = settingsOf(n);
    const r = recordOf(n);
    const sysctls: SysctlSetting[] = s.moveAddresses
      ? [{ key: `net.ipv6.conf.${s.bridge}.accept_ra`, value: '0', optional: true }]
      : [{ key: `net.ipv6.conf.${s.bridge}.disable_ipv6`, value: '1', optional: true }];
    return {
      bridge: { name: s.bridge, mtu: uplinkMtu(n), addresses: [], mac: r?.mac || macFromId(n.id, 'bridge') },
      links: [s.bridge],
      routes: [],
      sysctls,
      uplinks: [{ name: s.uplink, bridge: s.bridge, was: r ? { up: r.up, mtu: r.mtu, addresses: r.addresses, routes: r.routes } : null }],
    };
  },

  endpoint: (ep: Endpoint, n: Network) => ({
    veth: { hostName: ep.hostVeth, peerName: ep.peerVeth, master: settingsOf(n).bridge, mtu: uplinkMtu(n), mac: ep.mac, hostAddresses: [] },
    routes: [],
    sysctls: [],
  }),

  hostInterface: (n) => settingsOf(n).bridge,

  rules: (n) => ({
    // Nothing is NATed or routed: the LAN and the containers reach each other across the bridge.
    chains: {},
    elements: [],
    sets: [],
    // Within the bridge only (the shim's `internal` form: -i BRIDGE -o BRIDGE -j ACCEPT).
    shim: [{ name: settingsOf(n).bridge, internal: true }],
  }),
  members: (ep) => guardElements(ep),
  ports: () => [],
  publishing(n) {
    return fail('NO_PUBLISHING', {
      networkId: n.id.slice(0, 12),
      detail: `its containers are on the LAN of ${settingsOf(n).uplink} and reached at their own addresses (as with Docker's macvlan and ipvlan): run the container without -p/-P and connect to its address`,
    });
  },

  join(ep, n) {
    return {
      srcName: ep.peerVeth,
      dstPrefix: n.ifacePrefix,
      gateway: plain(n.ipv4[0]?.gateway),
      gatewayIpv6: n.enableIpv6 && ep.ipv6 ? plain(n.ipv6[0]?.gateway) : '',
      staticRoutes: [],
    };
  },

  describe(n) {
    const s = settingsOf(n);
    const o: Record<string, string | number | boolean> = { [UPLINK_OPTIONS.UPLINK]: s.uplink };
    if (s.moveAddresses) o[UPLINK_OPTIONS.MOVE_ADDRESSES] = true;
    if (s.bridgeNamedByUser) o[UPLINK_OPTIONS.BRIDGE_NAME] = s.bridge;
    return o;
  },

  lifecycle: {
    /** The uplink checked against what it must be, and recorded as it is (what will move, and how to give it back). */
    async beforeCreate(n, { kernel }) {
      const s = settingsOf(n);
      const opt = UPLINK_OPTIONS.UPLINK;
      function refuse(detail: string): never {
        return fail('BAD_OPTION', { option: opt, value: s.uplink, detail });
      }
      const link = await kernel.links.inspect(s.uplink);
      if (!link) refuse(`there is no interface named ${s.uplink} on this host`);
      if (link.owned) refuse("it is one of tsbridge's own links");
      if (link.linkType === 'loopback') refuse('the loopback interface leads to no LAN');
      if (link.kind === 'bridge') {
        refuse('it is a bridge, and a bridge cannot be a port of another bridge: name the Ethernet interface to take over (out of that bridge first)');
      }
      if (link.linkType !== 'ether') refuse(`it is not an Ethernet interface (link type ${link.linkType || 'unknown'}), and a bridge takes only Ethernet ports`);
      if (link.master) refuse(`it is already a port of ${link.master}: take it out first (ip link set ${s.uplink} nomaster)`);
      const holds = [...link.addresses.map((a) => `address ${a.cidr}`), ...link.routes.map((r) => `route ${describeRoute(r)}`)];
      if (!s.moveAddresses && (holds.length || link.unmovable.length)) {
        refuse(
          `it holds ${[...holds, ...link.unmovable].join(', ')}, which would stop working once it is a port of the network's bridge; ` +
            `give -o ${UPLINK_OPTIONS.MOVE_ADDRESSES}=true to move them to the bridge while the network exists, or take them off ${s.uplink} first`,
        );
      }
      if (link.unmovable.length) {
        refuse(`it holds what tsbridge cannot move as it is: ${link.unmovable.join(', ')}; take that off ${s.uplink} first`);
      }
      if (!s.mtuFromUplink && n.mtu > link.mtu) {
        fail('BAD_OPTION', { option: UPLINK_OPTIONS.MTU, value: String(n.mtu), detail: `larger than the MTU of ${s.uplink} (${link.mtu}): frames to and from the LAN would be lost` });
      }
      const record: UplinkRecord = {
        mac: link.mac,
        mtu: link.mtu,
        up: link.up,
        addresses: s.moveAddresses ? link.addresses : [],
        routes: s.moveAddresses ? link.routes : [],
      };
      return { adopted: toRecord(record) };
    },
  },
};
