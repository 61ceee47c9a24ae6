/**
 * Containers on the LAN (`-o io.tsbridge.uplink=IFACE`), end to end: a real dockerd, real
 * containers, real packets.
 *
 * The LAN is played by namespaces this test makes: R, the LAN's router and switch (a bridge
 * holding the gateway .1), and X, another LAN host (.20). The uplink is the host end of a veth pair
 * whose other end is a port of R's switch — never eth0, never the host's own addresses or default
 * route. The one uplink that holds an address (and has it moved to the bridge and back) is a veth
 * this test made, with an address of the test LAN and no default route.
 *
 * Needs: root, a running dockerd, the tsbridge-test image (scripts/test-image.sh). Run under the
 * e2e lock:
 *   npm run build && flock -o /run/tsbridge-e2e.lock npm run test:e2e -- test/e2e/uplink.test.ts
 * Plugin instance tsbt-uplink; LAN 10.215.x.0/24 and fd5b:215:x::/64.
 */
import { randomInt } from 'node:crypto';
import { Cleanup } from '../lib/cleanup.js';
import { docker, dockerOk, removeContainers, removeNetworks, requireDocker, uniqueName } from '../lib/docker.js';
import { createNetns, startPeerRecorder, type Netns } from '../lib/netns.js';
import { startPlugin, type PluginHandle } from '../lib/plugin.js';
import { sh, shOk } from '../lib/run.js';
import { footprint, httpPeer, PEER_REQUEST, peerServerScript, tableOf, TEST_IMAGE } from './helpers.js';

const DRIVER = 'tsbt-uplink';
const cleanup = new Cleanup();
let plugin: PluginHandle;

/** The test LAN: router R (.1, ::1), host X (.20, ::20), and the host's uplink into it. */
interface Lan {
  router: Netns;
  host: Netns;
  uplink: string;
  net4: string;
  net6: string;
}
let lan: Lan;

/** A /24 of 10.215.0.0/16 that no route of the host touches. */
async function freeLan(): Promise<number> {
  const routes = await sh('ip', ['-4', 'route', 'show', 'table', 'all']);
  for (let i = 0; i < 50; i++) {
    const n = randomInt(250); // 10.215.250.0/30 is the moved route's
    if (!routes.includes(`10.215.${n}.`)) return n;
  }
  throw new Error('no free 10.215.x.0/24 for the test LAN');
}

/** A LAN joined to the host by a fresh veth pair (`tsbu<id>` on the host, a port of R's switch). */
async function buildLan(): Promise<Lan> {
  const n = await freeLan();
  const net4 = `10.215.${n}`;
  const net6 = `fd5b:215:${n.toString(16)}`;
  const router = await createNetns('lanr');
  cleanup.add(() => router.delete(), `netns ${router.name}`);
  const host = await createNetns('lanx');
  cleanup.add(() => host.delete(), `netns ${host.name}`);
  const uplink = `tsbu${router.id}`;
  cleanup.add(() => shOk('ip', ['link', 'del', uplink]), `link ${uplink}`);
  const R = (args: string[]) => sh('ip', ['-n', router.name, ...args]);
  const X = (args: string[]) => sh('ip', ['-n', host.name, ...args]);
  for (const ns of [router, host]) await ns.exec('sysctl', ['-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
  await R(['link', 'add', 'lan', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
  await R(['addr', 'add', `${net4}.1/24`, 'dev', 'lan']);
  await R(['-6', 'addr', 'add', `${net6}::1/64`, 'dev', 'lan', 'nodad']);
  await R(['link', 'set', 'lan', 'up']);
  await sh('ip', ['link', 'add', uplink, 'type', 'veth', 'peer', 'name', 'p0', 'netns', router.name]);
  await R(['link', 'set', 'p0', 'master', 'lan']);
  await R(['link', 'set', 'p0', 'up']);
  await sh('ip', ['link', 'set', uplink, 'up']);
  // The host runs duplicate address detection on the uplink's link-local address: until it is
  // done, its local routes are missing, and a snapshot of the host's routes would change by itself.
  for (let i = 0; i < 50 && (await sh('ip', ['-6', 'addr', 'show', 'dev', uplink, 'tentative'])) !== ''; i++) await new Promise((r) => setTimeout(r, 100));
  await R(['link', 'add', 'px', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.name]);
  await R(['link', 'set', 'px', 'master', 'lan']);
  await R(['link', 'set', 'px', 'up']);
  await X(['addr', 'add', `${net4}.20/24`, 'dev', 'eth0']);
  await X(['-6', 'addr', 'add', `${net6}::20/64`, 'dev', 'eth0', 'nodad']);
  await X(['link', 'set', 'eth0', 'up']);
  await X(['route', 'add', 'default', 'via', `${net4}.1`]);
  await X(['-6', 'route', 'add', 'default', 'via', `${net6}::1`]);
  return { router, host, uplink, net4, net6 };
}

/** What the uplink kind must give back: up state, MTU, MAC, master, addresses and routes through it. */
async function uplinkState(name: string): Promise<unknown> {
  const [link] = JSON.parse(await sh('ip', ['-j', '-d', 'addr', 'show', 'dev', name])) as Record<string, unknown>[];
  const routes = async (fam: string) =>
    (JSON.parse(await sh('ip', ['-j', fam, 'route', 'show', 'table', 'all', 'dev', name])) as Record<string, unknown>[])
      .map((x) => JSON.stringify({ ...x, flags: ((x.flags as string[]) ?? []).filter((f) => f !== 'linkdown') }))
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

/** The host's routes (every table), without those of containers' veths (their IPv6 link-local routes come and go with them). */
async function hostRoutes(): Promise<string[]> {
  const out: string[] = [];
  for (const fam of ['-4', '-6']) {
    // Left out: containers' veths, and the multi-host rig's link (tsbr…), which test.sh's
    // namespace lane may be making or removing at the same moment.
    out.push(...(await sh('ip', [fam, 'route', 'show', 'table', 'all'])).split('\n').filter((l) => l && !/ dev (tsv[0-9a-f]{12}|tsbr[0-9a-f]+)\b/.test(l)));
  }
  return out.sort();
}

async function ping(ctr: string, addr: string): Promise<boolean> {
  for (let i = 0; i < 3; i++) {
    if ((await dockerOk(['exec', ctr, 'ping', ...(addr.includes(':') ? ['-6'] : []), '-c', '1', '-W', '1', addr])).exitCode === 0) return true;
  }
  return false;
}

async function pingFrom(ns: Netns, addr: string): Promise<boolean> {
  for (let i = 0; i < 3; i++) {
    const args = addr.includes(':') ? ['ping', '-6', '-c', '1', '-W', '1', addr] : ['ping', '-c', '1', '-W', '1', addr];
    if ((await ns.execOk('busybox', args, { timeoutMs: 5000 })).exitCode === 0) return true;
  }
  return false;
}

async function ipOf(ctr: string, net: string): Promise<{ v4: string; v6: string }> {
  const f = `{{with index .NetworkSettings.Networks "${net}"}}{{.IPAddress}} {{.GlobalIPv6Address}}{{end}}`;
  const [v4, v6] = (await docker(['inspect', '-f', f, ctr])).split(' ');
  return { v4: v4!, v6: v6 ?? '' };
}

/** A container serving HTTP (the CGI answers with the client's address) and UDP echo on 7071. */
function server(net: string, name: string, extra: string[] = []): Promise<string> {
  return docker(['run', '-d', '--network', net, '--name', name, ...extra, TEST_IMAGE, 'sh', '-c', peerServerScript(['udp-echo 7071 &'])]);
}

/** `docker network create` of a LAN network. */
async function createLanNetwork(name: string, opts: string[] = [], extra: string[] = []): Promise<string> {
  return docker([
    'network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER,
    '--subnet', `${lan.net4}.0/24`, '--gateway', `${lan.net4}.1`, '--ip-range', `${lan.net4}.128/25`,
    '-o', `io.tsbridge.uplink=${lan.uplink}`, ...opts.flatMap((o) => ['-o', o]), ...extra, name,
  ]);
}

beforeAll(async () => {
  await requireDocker();
  plugin = await startPlugin({ name: DRIVER });
  cleanup.add(() => plugin.dispose(), 'plugin');
  lan = await buildLan();
});

afterAll(async () => {
  await cleanup.run();
});

describe('containers on the LAN', () => {
  const net = uniqueName('lan');
  const a = uniqueName('a');
  const b = uniqueName('b');
  let before: unknown;
  let routesBefore: string[];
  let ipA: { v4: string; v6: string };
  let ipB: { v4: string; v6: string };

  beforeAll(async () => {
    before = await uplinkState(lan.uplink);
    routesBefore = await hostRoutes();
    cleanup.add(() => removeNetworks([net]), net);
    cleanup.add(() => removeContainers([a, b]), 'containers');
    await createLanNetwork(net, [], ['--ipv6', '--subnet', `${lan.net6}::/64`, '--gateway', `${lan.net6}::1`, '--ip-range', `${lan.net6}::8000/113`]);
    await server(net, a);
    await server(net, b);
    ipA = await ipOf(a, net);
    ipB = await ipOf(b, net);
  });

  test('they take addresses of the LAN from the --ip-range; the uplink is a port of the bridge, which holds no address', async () => {
    for (const ip of [ipA.v4, ipB.v4]) expect(Number(ip.split('.')[3])).toBeGreaterThanOrEqual(128);
    expect(ipA.v4.startsWith(`${lan.net4}.`)).toBe(true);
    expect(ipA.v6.startsWith(`${lan.net6}::8`)).toBe(true);
    const [up] = JSON.parse(await sh('ip', ['-j', 'link', 'show', 'dev', lan.uplink])) as { master?: string; address: string }[];
    expect(up!.master).toMatch(/^tsb-/);
    const [br] = JSON.parse(await sh('ip', ['-j', 'addr', 'show', 'dev', up!.master!])) as { address: string; addr_info: unknown[] }[];
    expect(br!.address).toBe(up!.address);
    expect(br!.addr_info).toEqual([]);
  });

  test('containers reach the router and the LAN host (ping, TCP, UDP; IPv4 and IPv6) at their own addresses — no NAT', async () => {
    for (const addr of [`${lan.net4}.1`, `${lan.net4}.20`, `${lan.net6}::1`, `${lan.net6}::20`]) expect({ addr, ok: await ping(a, addr) }).toEqual({ addr, ok: true });
    for (const ns of [lan.router, lan.host]) {
      const rec = await startPeerRecorder(ns, 7070);
      try {
        const target = ns === lan.router ? `${lan.net4}.1` : `${lan.net4}.20`;
        const tcp = await docker(['exec', a, 'sh', '-c', `echo | nc -w 3 ${target} 7070`]);
        expect(tcp).toMatch(new RegExp(`^${ipA.v4.replace(/\./g, '\\.')}:\\d+`));
        const udp = await docker(['exec', a, 'udp-echo', '-s', target, '7070', 'hi']);
        expect(udp).toMatch(new RegExp(`^${ipA.v4.replace(/\./g, '\\.')}:\\d+ hi`));
        const udp6 = await docker(['exec', a, 'udp-echo', '-s', ns === lan.router ? `${lan.net6}::1` : `${lan.net6}::20`, '7070', 'hi6']);
        expect(udp6).toContain(`${ipA.v6}:`);
      } finally {
        await rec.stop();
      }
    }
  });

  test('the router and the LAN host reach the containers (ping, TCP, UDP) and are seen at their own addresses', async () => {
    for (const [ns, own] of [[lan.router, `${lan.net4}.1`], [lan.host, `${lan.net4}.20`]] as const) {
      expect(await pingFrom(ns, ipA.v4)).toBe(true);
      expect(await pingFrom(ns, ipA.v6)).toBe(true);
      const http = await ns.execOk('busybox', ['nc', '-w', '3', ipA.v4, '80'], { input: PEER_REQUEST, timeoutMs: 10_000 });
      expect(httpPeer(http.stdout)).toBe(own);
      const udp = await ns.execOk(process.execPath, ['-e', UDP_SEND, ipA.v4, '7071', 'from-lan'], { timeoutMs: 10_000 });
      expect(udp.stdout.trim()).toMatch(new RegExp(`^${own.replace(/\./g, '\\.')}:\\d+ from-lan$`));
    }
  });

  test('containers of the network reach each other', async () => {
    expect(await ping(b, ipA.v4)).toBe(true);
    expect(await ping(b, ipA.v6)).toBe(true);
    const r = await docker(['exec', b, 'sh', '-c', `printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${ipA.v4} 80`]);
    expect(httpPeer(r)).toBe(ipB.v4);
  });

  test('the host keeps its connectivity: its routes are as they were, loopback answers', async () => {
    expect(await hostRoutes()).toEqual(routesBefore);
    expect((await shOk('busybox', ['ping', '-c', '1', '-W', '1', '127.0.0.1'])).exitCode).toBe(0);
  });

  test('anti-spoofing: a container with NET_ADMIN that takes another address or MAC gets nothing through', async () => {
    const c = uniqueName('spoof');
    cleanup.add(() => removeContainers([c]), c);
    await docker(['run', '-d', '--network', net, '--name', c, '--cap-add', 'NET_ADMIN', TEST_IMAGE, 'sleep', '600']);
    const own = (await ipOf(c, net)).v4;
    expect(await ping(c, `${lan.net4}.1`)).toBe(true);
    await docker(['exec', c, 'sh', '-c', `ip addr del ${own}/24 dev eth0 && ip addr add ${lan.net4}.77/24 dev eth0 && ip route add default via ${lan.net4}.1`]);
    expect(await ping(c, `${lan.net4}.1`)).toBe(false);
    expect(await ping(c, ipA.v4)).toBe(false);
    await docker(['exec', c, 'sh', '-c', `ip addr del ${lan.net4}.77/24 dev eth0 && ip addr add ${own}/24 dev eth0 && ip route add default via ${lan.net4}.1`]);
    expect(await ping(c, `${lan.net4}.1`)).toBe(true);
    await docker(['exec', c, 'ip', 'link', 'set', 'dev', 'eth0', 'address', '02:42:de:ad:be:ef']);
    await lan.router.exec('ip', ['neigh', 'flush', 'all']);
    expect(await ping(c, `${lan.net4}.1`)).toBe(false);
    await removeContainers([c]);
  });

  test('-p is refused with a clear error (nothing would publish it); the container does not start', async () => {
    const c = uniqueName('pub');
    cleanup.add(() => removeContainers([c]), c);
    const r = await dockerOk(['run', '-d', '--network', net, '--name', c, '-p', '18080:80', TEST_IMAGE, 'sleep', '600']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('publishes no ports: its containers are on the LAN of');
    await removeContainers([c]);
  });

  test('plugin SIGKILL and restart: running containers keep the LAN, new ones join it', async () => {
    await plugin.kill9();
    await plugin.restart();
    expect(await ping(a, `${lan.net4}.20`)).toBe(true);
    const c = uniqueName('after');
    cleanup.add(() => removeContainers([c]), c);
    await docker(['run', '-d', '--network', net, '--name', c, TEST_IMAGE, 'sleep', '600']);
    expect(await ping(c, `${lan.net4}.1`)).toBe(true);
    expect(await ping(c, ipA.v4)).toBe(true);
    await removeContainers([c]);
  });

  test('reboot simulation (plugin down, bridge and rules gone, the uplink left bare): start-up rebuilds the bridge and takes the uplink again', async () => {
    const bridge = (JSON.parse(await sh('ip', ['-j', 'link', 'show', 'dev', lan.uplink])) as { master: string }[])[0]!.master;
    await plugin.stop();
    await sh('ip', ['link', 'del', bridge]);
    await sh('nft', ['delete', 'table', 'inet', tableOf(DRIVER)]);
    await sh('nft', ['delete', 'table', 'bridge', tableOf(DRIVER)]);
    expect((JSON.parse(await sh('ip', ['-j', 'link', 'show', 'dev', lan.uplink])) as { master?: string }[])[0]!.master).toBeUndefined();
    expect(await ping(a, `${lan.net4}.1`)).toBe(false);
    await plugin.restart();
    expect((JSON.parse(await sh('ip', ['-j', 'link', 'show', 'dev', lan.uplink])) as { master?: string }[])[0]!.master).toBe(bridge);
    expect(await ping(a, `${lan.net4}.1`)).toBe(true);
    expect(await ping(b, ipA.v4)).toBe(true);
    const rec = await startPeerRecorder(lan.host, 7070);
    try {
      expect(await docker(['exec', b, 'sh', '-c', `echo | nc -w 3 ${lan.net4}.20 7070`])).toMatch(new RegExp(`^${ipB.v4.replace(/\./g, '\\.')}:`));
    } finally {
      await rec.stop();
    }
  });

  test('removal leaves nothing, and the uplink as it was', async () => {
    await removeContainers([a, b]);
    await removeNetworks([net]);
    expect(await footprint()).toEqual({ links: [], nft: [], iptables: [] });
    expect(await uplinkState(lan.uplink)).toEqual(before);
    expect(await hostRoutes()).toEqual(routesBefore);
  });
});

describe('refused before anything changes', () => {
  test('--internal with an uplink; an uplink holding an address without io.tsbridge.uplink_move_addresses', async () => {
    const net = uniqueName('bad');
    cleanup.add(() => removeNetworks([net]), net);
    const before = await uplinkState(lan.uplink);
    let r = await dockerOk(['network', 'create', '-d', DRIVER, '--internal', '--subnet', `${lan.net4}.0/24`, '-o', `io.tsbridge.uplink=${lan.uplink}`, net]);
    expect(r.stderr).toContain('an internal network has no way out, and an uplink is one');
    await sh('ip', ['addr', 'add', `${lan.net4}.10/24`, 'dev', lan.uplink]);
    try {
      r = await dockerOk(['network', 'create', '-d', DRIVER, '--subnet', `${lan.net4}.0/24`, '--gateway', `${lan.net4}.1`, '-o', `io.tsbridge.uplink=${lan.uplink}`, net]);
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toContain(`it holds address ${lan.net4}.10/24`);
      expect(r.stderr).toContain('io.tsbridge.uplink_move_addresses=true');
    } finally {
      await sh('ip', ['addr', 'del', `${lan.net4}.10/24`, 'dev', lan.uplink]);
    }
    expect(await uplinkState(lan.uplink)).toEqual(before);
    expect(await footprint()).toEqual({ links: [], nft: [], iptables: [] });
  });
});

describe('an uplink with an address (a veth of this test, no default route), moved', () => {
  test('its address and routes move to the bridge: the host still reaches the LAN through it, the LAN the host; removal moves them back', async () => {
    const net = uniqueName('mv');
    const c = uniqueName('mvc');
    cleanup.add(() => removeNetworks([net]), net);
    cleanup.add(() => removeContainers([c]), c);
    await sh('ip', ['addr', 'add', `${lan.net4}.10/24`, 'dev', lan.uplink]);
    await sh('ip', ['-6', 'addr', 'add', `${lan.net6}::10/64`, 'dev', lan.uplink, 'nodad']);
    // a route of the host's through the LAN (in the test's own range)
    await sh('ip', ['route', 'add', '10.215.250.0/30', 'via', `${lan.net4}.20`, 'dev', lan.uplink]);
    cleanup.add(async () => {
      await shOk('ip', ['route', 'del', '10.215.250.0/30']);
      await shOk('ip', ['addr', 'flush', 'dev', lan.uplink, 'scope', 'global']);
    }, 'uplink addresses');
    const before = await uplinkState(lan.uplink);
    expect((await shOk('busybox', ['ping', '-c', '1', '-W', '1', `${lan.net4}.1`])).exitCode).toBe(0);
    await createLanNetwork(net, ['io.tsbridge.uplink_move_addresses=true']);
    const bridge = (JSON.parse(await sh('ip', ['-j', 'link', 'show', 'dev', lan.uplink])) as { master: string }[])[0]!.master;
    expect(await sh('ip', ['-o', 'addr', 'show', 'dev', bridge])).toContain(`${lan.net4}.10/24`);
    expect(await sh('ip', ['-o', '-4', 'addr', 'show', 'dev', lan.uplink])).toBe('');
    expect(await sh('ip', ['route', 'show', '10.215.250.0/30'])).toContain(`dev ${bridge}`);
    for (const addr of [`${lan.net4}.1`, `${lan.net4}.20`]) expect((await shOk('busybox', ['ping', '-c', '1', '-W', '2', addr])).exitCode).toBe(0);
    expect(await pingFrom(lan.host, `${lan.net4}.10`)).toBe(true);
    expect(await pingFrom(lan.router, `${lan.net6}::10`)).toBe(true);
    await docker(['run', '-d', '--network', net, '--name', c, TEST_IMAGE, 'sleep', '600']);
    expect(await ping(c, `${lan.net4}.10`)).toBe(true); // the host, on the LAN
    expect(await ping(c, `${lan.net4}.20`)).toBe(true);
    await removeContainers([c]);
    await removeNetworks([net]);
    expect(await uplinkState(lan.uplink)).toEqual(before);
    expect((await shOk('busybox', ['ping', '-c', '1', '-W', '2', `${lan.net4}.20`])).exitCode).toBe(0);
    expect(await footprint()).toEqual({ links: [], nft: [], iptables: [] });
  });
});

/* One UDP datagram from a LAN namespace (node): prints the first reply. */
const UDP_SEND = `
const s = require('node:dgram').createSocket('udp4');
const [host, port, payload] = process.argv.slice(1);
setTimeout(() => { console.log('timeout'); process.exit(0); }, 3000);
s.on('message', (m) => { console.log(m.toString()); process.exit(0); });
s.send(payload, Number(port), host);
`;
