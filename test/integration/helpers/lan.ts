/**
 * A LAN for the uplink kind, inside a Lab (helpers/lab.ts): everything in throwaway namespaces.
 *
 *   R  the LAN's router and switch: a bridge `lan` holding the gateway (.1, ::1)
 *   X  another host on the LAN (.20, ::20), default route via R
 *   H  the lab's host: its end of a veth pair `tsbu<id>` is the uplink; the other end is a port of
 *      R's bridge. With `held`, H's LAN configuration sits on it — addresses .10 and ::10, H's
 *      default routes via the router, a static route with a metric, one in table 100 — as a NIC's
 *      would, for the tests that move it.
 *
 * The LAN is 10.214.<n>.0/24 and fd5b:<r>:<n>::/64, n random, checked against H's routes.
 */
import { randomBytes } from 'node:crypto';
import { sh } from '../../lib/run.js';
import type { Netns } from '../../lib/netns.js';
import type { Lab } from './lab.js';

export interface Lan {
  router: Netns;
  host: Netns;
  /** H's end of the uplink veth. */
  uplink: string;
  /** "10.214.n" */
  net4: string;
  /** "fd5b:r:n" (append "::1") */
  net6: string;
  subnet4: string;
  subnet6: string;
  gateway4: string;
  gateway6: string;
  /** The LAN host X's addresses. */
  hostAddr: string;
  hostAddr6: string;
  /** H's addresses on the LAN, when held. */
  ownAddr: string;
  ownAddr6: string;
}

export async function buildLan(lab: Lab, opts: { held?: boolean; mtu?: number } = {}): Promise<Lan> {
  const n = randomBytes(1)[0]!;
  const r = (randomBytes(2).readUInt16BE() % 0xfffe) + 1;
  const net4 = `10.214.${n}`;
  const net6 = `fd5b:${r.toString(16)}:${n.toString(16)}`;
  const router = await lab.container('r');
  const host = await lab.container('x');
  const uplink = `tsbu${router.id}`;
  const R = (args: string[]) => sh('ip', ['-n', router.name, ...args]);
  const X = (args: string[]) => sh('ip', ['-n', host.name, ...args]);
  const mtu = String(opts.mtu ?? 1500);
  await R(['link', 'add', 'lan', 'mtu', mtu, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
  await R(['addr', 'add', `${net4}.1/24`, 'dev', 'lan']);
  await R(['-6', 'addr', 'add', `${net6}::1/64`, 'dev', 'lan', 'nodad']);
  await R(['link', 'set', 'lan', 'up']);
  // the uplink: H's end stays in H, the other becomes a port of the LAN's switch
  await lab.ipH(['link', 'add', uplink, 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'p0', 'mtu', mtu, 'netns', router.name]);
  await R(['link', 'set', 'p0', 'master', 'lan']);
  await R(['link', 'set', 'p0', 'up']);
  await lab.ipH(['link', 'set', uplink, 'up']);
  // the other LAN host
  await R(['link', 'add', 'px', 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', mtu, 'netns', host.name]);
  await R(['link', 'set', 'px', 'master', 'lan']);
  await R(['link', 'set', 'px', 'up']);
  await X(['addr', 'add', `${net4}.20/24`, 'dev', 'eth0']);
  await X(['-6', 'addr', 'add', `${net6}::20/64`, 'dev', 'eth0', 'nodad']);
  await X(['link', 'set', 'eth0', 'up']);
  await X(['route', 'add', 'default', 'via', `${net4}.1`]);
  await X(['-6', 'route', 'add', 'default', 'via', `${net6}::1`]);
  const lan: Lan = {
    router, host, uplink, net4, net6,
    subnet4: `${net4}.0/24`, subnet6: `${net6}::/64`,
    gateway4: `${net4}.1`, gateway6: `${net6}::1`,
    hostAddr: `${net4}.20`, hostAddr6: `${net6}::20`,
    ownAddr: `${net4}.10`, ownAddr6: `${net6}::10`,
  };
  if (opts.held) {
    await lab.ipH(['addr', 'add', `${net4}.10/24`, 'brd', '+', 'dev', uplink]);
    await lab.ipH(['addr', 'add', `${net4}.11/24`, 'dev', uplink]);
    await lab.ipH(['-6', 'addr', 'add', `${net6}::10/64`, 'dev', uplink, 'nodad']);
    await lab.ipH(['route', 'add', 'default', 'via', lan.gateway4, 'dev', uplink]);
    await lab.ipH(['-6', 'route', 'add', 'default', 'via', lan.gateway6, 'dev', uplink]);
    await lab.ipH(['route', 'add', '10.216.0.0/16', 'via', lan.hostAddr, 'dev', uplink, 'metric', '50', 'proto', 'static']);
    await lab.ipH(['route', 'add', '10.217.0.0/16', 'via', lan.hostAddr, 'dev', uplink, 'table', '100']);
  }
  return lan;
}

/**
 * Everything about an interface of H that the uplink kind must give back: up or not, MTU, MAC,
 * master, its addresses (with their details, in order) and every route through it in every table
 * (the kernel's own included) — without what changes by itself (counters, lifetimes, timers).
 */
export async function interfaceState(lab: Lab, name: string): Promise<unknown> {
  const [link] = JSON.parse(await lab.ipH(['-j', '-d', 'addr', 'show', 'dev', name])) as Record<string, unknown>[];
  const routes = async (fam: string) =>
    (JSON.parse(await lab.ipH(['-j', fam, 'route', 'show', 'table', 'all', 'dev', name])) as Record<string, unknown>[])
      .map((x) => ({ ...x, flags: ((x.flags as string[]) ?? []).filter((f) => f !== 'linkdown') }))
      .map((x) => JSON.stringify(x))
      .sort();
  return {
    up: (link!.flags as string[]).includes('UP'),
    mtu: link!.mtu,
    mac: link!.address,
    master: link!.master ?? null,
    addresses: (link!.addr_info as Record<string, unknown>[]).map(({ valid_life_time: _v, preferred_life_time: _p, tentative: _t, ...a }) => a),
    routes4: await routes('-4'),
    routes6: await routes('-6'),
  };
}
