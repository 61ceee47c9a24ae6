/**
 * Kinds for tests of the seam, registered beside the real ones in a registry of the test's own.
 * `pointKind` wires like the coming point-to-point kind — no bridge; each endpoint's host veth
 * holds the gateway as a /32, a /32 route leads to the container, proxy ARP answers for the
 * gateway; a set of its own — so the tests show such a kind fits the Kind interface and runs
 * through the same driver, reconciler and firewall as the NAT bridge. Its lifecycle hooks record
 * what they were asked.
 */
import type { Endpoint, Network } from '../../src/domain/types.js';
import { fail } from '../../src/errors.js';
import { bridgeKind } from '../../src/kinds/bridge/index.js';
import { makeRegistry } from '../../src/kinds/select.js';
import { portElements } from '../../src/kinds/common/ports.js';
import type { Kind, KindRegistry, Running } from '../../src/kinds/types.js';
import { goBool } from '../../src/protocol/validate.js';

export const POINT_PROXY = 'io.tsbridge.test.proxy_arp';
export const POINT_PEER = 'io.tsbridge.test.peer';

export interface LifecycleLog {
  calls: string[];
  /** beforeCreate throws this, when set. */
  refuse: Error | null;
  /** start throws this, when set. */
  failStart: Error | null;
}

const plain = (cidr: string | null | undefined) => (cidr ?? '').split('/')[0]!;
const setOf = (n: Network) => `inet point_${n.id.slice(0, 8)}`;

export function pointKind(log: LifecycleLog = { calls: [], refuse: null, failStart: null }): Kind {
  return {
    name: 'point',
    options: [POINT_PROXY, POINT_PEER],
    claims: (o) => o[POINT_PEER] !== undefined,
    describe: (n) => ({ ...(n.settings.peer ? { [POINT_PEER]: String(n.settings.peer) } : {}) }),
    parse(o, net) {
      if (net.ipv4.length === 0) fail('BAD_OPTION', { option: 'io.tsbridge.mode', value: 'point', detail: 'needs IPv4' });
      return { proxyArp: o[POINT_PROXY] === undefined ? true : goBool(o[POINT_PROXY], POINT_PROXY), peer: o[POINT_PEER] ?? '' };
    },
    network: (n) => ({ bridge: null, links: [], routes: [], sysctls: n.ipv4.length ? [{ key: 'net.ipv4.ip_forward', value: '1' }] : [] }),
    endpoint(ep: Endpoint, n: Network) {
      const gw = plain(n.ipv4[0]?.gateway);
      return {
        veth: { hostName: ep.hostVeth, peerName: ep.peerVeth, master: null, mtu: n.mtu, mac: ep.mac, hostAddresses: gw ? [`${gw}/32`] : [] },
        routes: ep.ipv4 ? [{ to: `${plain(ep.ipv4)}/32`, dev: ep.hostVeth }] : [],
        sysctls: n.settings.proxyArp ? [{ key: `net.ipv4.conf.${ep.hostVeth}.proxy_arp`, value: '1' }] : [],
      };
    },
    hostInterface: () => null,
    rules: (n) => ({
      chains: { 'inet forward': [`oifname @${setOf(n).split(' ')[1]} ct state established,related accept`] },
      elements: [],
      sets: [{ set: setOf(n), type: 'ifname' }],
      shim: [],
    }),
    members: (ep, n) => [{ set: setOf(n), key: `"${ep.hostVeth}"` }],
    ports: (ep, _n, ports) => portElements(ep, ports),
    publishing: () => ({ defaultHostIp: '' }),
    join: (ep, n) => ({
      srcName: ep.peerVeth,
      dstPrefix: n.ifacePrefix,
      gateway: plain(n.ipv4[0]?.gateway),
      gatewayIpv6: '',
      staticRoutes: [{ destination: `${plain(n.ipv4[0]?.gateway)}/32`, type: 'connected', nextHop: '' }],
    }),
    lifecycle: {
      async beforeCreate(n) {
        log.calls.push(`beforeCreate ${n.id.slice(0, 4)}`);
        if (log.refuse) throw log.refuse;
      },
      async start(n): Promise<Running> {
        log.calls.push(`start ${n.id.slice(0, 4)}`);
        if (log.failStart) throw log.failStart;
        return { stop: async () => void log.calls.push(`stop ${n.id.slice(0, 4)}`) };
      },
      async afterDelete(n) {
        log.calls.push(`afterDelete ${n.id.slice(0, 4)}`);
      },
    },
  };
}

/** The NAT bridge (the fallback) and the point kind. */
export function testKinds(log?: LifecycleLog): KindRegistry {
  return makeRegistry([bridgeKind, pointKind(log)]);
}
