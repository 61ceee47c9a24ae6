/**
 * Issue 12, kind 3, end to end: point-to-point networks (`-o io.tsbridge.mode=p2p`) with a real
 * dockerd, real containers and real packets — no bridge, a veth per container whose host end holds
 * the gateway, /32 and /128 routes. Containers reach each other (by name and address, IPv4 and
 * IPv6) through the host's routing, egress is masqueraded, published ports work on every path
 * that applies (another host, the host's own address, 127.0.0.1, hairpin), enable_icc=false and
 * --internal hold; then the plugin killed with SIGKILL and restarted, a simulated host reboot,
 * and removal leaving nothing (links, routes, rules).
 *
 * Needs: root, a running dockerd, the tsbridge-test image (scripts/test-image.sh), busybox on the
 * host. Run under the e2e lock:
 *   npm run build && flock /run/tsbridge-e2e.lock npm run test:e2e -- test/e2e/p2p.test.ts
 * Addresses: 10.224.1-4.0/24, fd5e:224:1::/64; host ports 25100-25199.
 */
import { randomInt } from 'node:crypto';
import { Cleanup } from '../lib/cleanup.js';
import { docker, dockerOk, removeContainers, removeNetworks, requireDocker, uniqueName, waitFor } from '../lib/docker.js';
import { createOutsideWorld, startPeerRecorder, type Netns, type OutsideWorld, type PeerRecorder } from '../lib/netns.js';
import { startPlugin, type PluginHandle } from '../lib/plugin.js';
import { tcpRequest } from '../lib/probe.js';
import { sh, shOk } from '../lib/run.js';
import { footprint, httpPeer, stateOnDisk, PEER_REQUEST, peerServerScript, runIn, tableOf, TEST_IMAGE, tsbridgeRoutes } from './helpers.js';

const DRIVER = 'tsbt-p2p';
const SUB = '10.224.1.0/24';
const SUB6 = 'fd5e:224:1::/64';
const GW = '10.224.1.1';
const GW6 = 'fd5e:224:1::1';
const P2P = ['-o', 'io.tsbridge.mode=p2p'];
const HP = 25100 + randomInt(90);

const cleanup = new Cleanup();
let plugin: PluginHandle;
let world: OutsideWorld;
let outside: PeerRecorder;
let baseline: Awaited<ReturnType<typeof footprint>>;
const net = uniqueName('pp');
const srv = uniqueName('psrv');
const cli = uniqueName('pcli');

async function ipOf(ctr: string, network: string, field = 'IPAddress'): Promise<string> {
  return docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").${field}}}`, ctr]);
}

async function endpointOf(ctr: string, network: string): Promise<string> {
  return docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").EndpointID}}`, ctr]);
}

async function tcpFromNs(ns: Netns, host: string, port: number): Promise<string | null> {
  const r = await ns.execOk('busybox', ['nc', '-w', '2', host, String(port)], { input: PEER_REQUEST, timeoutMs: 10_000 });
  return httpPeer(r.stdout);
}

async function tcpFromCtr(ctr: string, host: string, port: number): Promise<string | null> {
  const r = await dockerOk(['exec', ctr, 'sh', '-c', `printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${host} ${port}`]);
  return httpPeer(r.stdout);
}

async function tcpFromHost(host: string, port: number): Promise<string | null> {
  return httpPeer(await tcpRequest(host, port, PEER_REQUEST, { timeoutMs: 2000 }).catch(() => ''));
}

async function settled<T>(probe: () => Promise<T | null>, tries = 3): Promise<T | null> {
  for (let i = 0; i < tries - 1; i++) {
    const v = await probe();
    if (v !== null) return v;
  }
  return probe();
}

async function startServer(name: string, network: string, publish: string[], c: Cleanup = cleanup): Promise<string> {
  c.add(() => removeContainers([name]), name);
  await docker(['run', '-d', '--network', network, '--name', name, ...publish, TEST_IMAGE, 'sh', '-c', peerServerScript()]);
  const ip = await ipOf(name, network);
  await waitFor(async () => (await tcpFromHost(ip, 80)) !== null, 10_000, { what: `httpd in ${name}` });
  return ip;
}

async function state(): Promise<{ endpoints: Record<string, unknown>; networks: Record<string, { kind: string }> }> {
  return stateOnDisk(plugin.stateDir);
}

beforeAll(async () => {
  await requireDocker();
  baseline = await footprint();
  plugin = await startPlugin({ name: DRIVER });
  cleanup.add(() => plugin.dispose(), 'plugin');
  await removeNetworks((await docker(['network', 'ls', '-q', '--filter', `driver=${DRIVER}`])).split('\n').filter(Boolean)); // a crashed run's
  world = await createOutsideWorld({ prefix: 'pp' });
  cleanup.add(() => world.delete(), 'outside world');
  outside = await startPeerRecorder(world.ns, 7070);
  cleanup.add(() => removeNetworks([net]), net);
  await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--ipv6', '--subnet', SUB, '--subnet', SUB6, ...P2P, net]);
  await startServer(srv, net, ['-p', `${HP}:80`, '-p', `127.0.0.1:${HP + 1}:80`]);
  cleanup.add(() => removeContainers([cli]), cli);
  await docker(['run', '-d', '--network', net, '--name', cli, TEST_IMAGE, 'sleep', '100000']);
}, 120_000);

afterAll(async () => {
  await cleanup.run();
});

test('no bridge: the container\'s host end holds the gateway, a /32 and a /128 lead to it, an unreachable route covers the subnet', async () => {
  const ep = await endpointOf(srv, net);
  const host = `tsv${ep.slice(0, 12)}`;
  const addrs = await sh('ip', ['-o', 'addr', 'show', 'dev', host]);
  expect(addrs).toContain(`${GW}/32`);
  expect(addrs).toContain(`${GW6}/128`);
  expect(await sh('ip', ['-d', 'link', 'show', 'dev', host])).not.toContain('master');
  const routes = await tsbridgeRoutes();
  expect(routes).toContain(`unreachable ${SUB}`);
  expect(routes.some((r) => r.startsWith(`unreachable ${SUB6}`))).toBe(true);
  const ip = await ipOf(srv, net);
  expect(routes.some((r) => r.startsWith(`${ip} dev ${host}`))).toBe(true);
  expect((await footprint()).links.filter((l) => l.startsWith('tsb-'))).toEqual([]);
  expect(Object.values((await state()).networks).map((n) => n.kind)).toEqual(['p2p']);
  // Inside: the gateway as Docker set it, and for IPv6 the routes Join gave.
  const inside = await docker(['exec', srv, 'sh', '-c', 'ip route; ip -6 route']);
  expect(inside).toContain(`default via ${GW}`);
  expect(inside).toContain(`fd5e:224:1::/65 via ${GW6}`);
  expect(inside).toContain(`fd5e:224:1:0:8000::/65 via ${GW6}`);
});

test('containers reach each other through the host: by name, IPv4 and IPv6', async () => {
  const ip6 = await ipOf(srv, net, 'GlobalIPv6Address');
  const cliIp = await ipOf(cli, net);
  const cliIp6 = await ipOf(cli, net, 'GlobalIPv6Address');
  const srvIp = await ipOf(srv, net);
  expect(await settled(() => tcpFromCtr(cli, srvIp, 80))).toBe(cliIp);
  expect(await settled(() => tcpFromCtr(cli, ip6, 80))).toBe(cliIp6);
  expect([cliIp, cliIp6]).toContain(await settled(() => tcpFromCtr(cli, srv, 80))); // by name: Docker's DNS answers both families
  expect((await dockerOk(['exec', cli, 'ping', '-c', '1', '-W', '2', GW6])).exitCode).toBe(0);
  // One routed hop: the neighbour cli knows for srv is the host's end of cli's own link.
  const hostMac = (await sh('cat', [`/sys/class/net/tsv${(await endpointOf(cli, net)).slice(0, 12)}/address`])).trim();
  expect(await docker(['exec', cli, 'ip', 'neigh', 'show', await ipOf(srv, net)])).toContain(hostMac);
});

test('egress is masqueraded to the host\'s address, IPv4 and IPv6', async () => {
  for (const [dst, want] of [[world.nsAddr, world.hostAddr], [world.nsAddr6, world.hostAddr6]] as const) {
    const before = outside.peers.length;
    await dockerOk(['exec', cli, 'sh', '-c', `echo x | nc -w 2 ${dst} 7070`]);
    await waitFor(() => outside.peers.length > before, 5000, { what: `a connection from ${cli} to ${dst}` });
    expect(outside.peers.at(-1)!.address).toBe(want);
  }
});

describe('published ports', () => {
  test('from another host, to the host\'s addresses: the container sees the client', async () => {
    expect(await settled(() => tcpFromNs(world.ns, world.hostAddr, HP))).toBe(world.nsAddr);
    expect(await settled(() => tcpFromNs(world.ns, world.hostAddr6, HP))).toBe(world.nsAddr6);
    // Not at the container's own address (the outside routes everything via the host).
    expect(await tcpFromNs(world.ns, await ipOf(srv, net), 80)).toBeNull();
    // 127.0.0.1-bound: not from another host.
    expect(await tcpFromNs(world.ns, world.hostAddr, HP + 1)).toBeNull();
  });

  test('from the host: its own address (kept), 127.0.0.1 (masqueraded to the gateway)', async () => {
    expect(await settled(() => tcpFromHost(world.hostAddr, HP))).toBe(world.hostAddr);
    expect(await settled(() => tcpFromHost('127.0.0.1', HP))).toBe(GW);
    expect(await settled(() => tcpFromHost('127.0.0.1', HP + 1))).toBe(GW);
  });

  test('hairpin: another container and the container itself, through a host address', async () => {
    expect(await settled(() => tcpFromCtr(cli, world.hostAddr, HP))).toBe(GW);
    expect(await settled(() => tcpFromCtr(cli, world.hostAddr6, HP))).toBe(GW6);
    expect(await settled(() => tcpFromCtr(srv, world.hostAddr, HP))).toBe(GW);
  });
});

test('enable_icc=false: containers do not reach each other, but do each other\'s published ports through a host address', async () => {
  const quiet = uniqueName('ppicc');
  const a = uniqueName('picca');
  const c = new Cleanup();
  c.add(() => removeNetworks([quiet]), quiet);
  try {
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.224.2.0/24', ...P2P, '-o', 'com.docker.network.bridge.enable_icc=false', quiet]);
    const ip = await startServer(a, quiet, ['-p', `${HP + 2}:80`], c);
    const out = await runIn(quiet, `printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${ip} 80; echo; ping -c1 -W1 ${ip} >/dev/null && echo reached; printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${world.hostAddr} ${HP + 2}; echo; ping -c1 -W1 10.224.2.1 >/dev/null && echo gateway; true`);
    expect(out).not.toContain('reached');
    expect(out).toContain('gateway');
    expect(out.match(/peer=/g)).toHaveLength(1);
    expect(httpPeer(out)).toBe('10.224.2.1'); // the published port, hairpinned
  } finally {
    await removeContainers([a]);
    await c.run();
  }
});

test('--internal: containers reach each other, nothing outside, not the host', async () => {
  const closed = uniqueName('ppint');
  const a = uniqueName('pinta');
  const c = new Cleanup();
  c.add(() => removeNetworks([closed]), closed);
  c.add(() => removeContainers([a]), a);
  try {
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--internal', '--subnet', '10.224.3.0/24', ...P2P, closed]);
    await docker(['run', '-d', '--network', closed, '--name', a, TEST_IMAGE, 'sh', '-c', peerServerScript()]);
    const ip = await ipOf(a, closed);
    const out = await runIn(closed, `sleep 1; printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${ip} 80; echo; ping -c1 -W1 ${world.nsAddr} >/dev/null && echo outside; ping -c1 -W1 10.224.3.1 >/dev/null && echo host; true`);
    expect(httpPeer(out)).toMatch(/^10\.224\.3\./);
    expect(out).not.toContain('outside');
    expect(out).not.toContain('host');
  } finally {
    await c.run();
  }
});

test('a p2p network and a NAT bridge network do not reach each other directly', async () => {
  const nat = uniqueName('ppnat');
  const c = new Cleanup();
  c.add(() => removeNetworks([nat]), nat);
  try {
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.224.4.0/24', nat]);
    const ip = await ipOf(srv, net);
    const out = await runIn(nat, `printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${ip} 80; echo; printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${world.hostAddr} ${HP}; echo end`);
    expect(out.match(/peer=/g)).toHaveLength(1); // the published port through the host address only
  } finally {
    await c.run();
  }
});

test('SIGKILL and restart: running containers keep their connectivity, new ones join, no endpoint doubles', async () => {
  const srvIp = await ipOf(srv, net);
  await plugin.kill9();
  try {
    expect(await settled(() => tcpFromCtr(cli, srvIp, 80))).toBe(await ipOf(cli, net)); // the kernel kept it all
  } finally {
    await plugin.restart();
  }
  const two = uniqueName('psrv2');
  const ip2 = await startServer(two, net, []);
  expect(await settled(() => tcpFromCtr(cli, ip2, 80))).toBe(await ipOf(cli, net));
  expect(await settled(() => tcpFromNs(world.ns, world.hostAddr, HP))).toBe(world.nsAddr);
  expect(Object.keys((await state()).endpoints)).toHaveLength(3);
  await removeContainers([two]);
  await waitFor(async () => Object.keys((await state()).endpoints).length === 2, 10_000, { what: 'the endpoint removed' });
});

test('simulated host reboot: routes, tables and a dead container\'s link gone while the plugin is down; start-up rebuilds, drops the dead', async () => {
  const dead = uniqueName('pdead');
  cleanup.add(() => removeContainers([dead]), dead);
  await docker(['run', '-d', '--network', net, '--name', dead, TEST_IMAGE, 'sleep', '100000']);
  const deadVeth = `tsv${(await endpointOf(dead, net)).slice(0, 12)}`;
  await plugin.stop();
  try {
    await sh('ip', ['route', 'del', 'unreachable', SUB]);
    await sh('ip', ['-6', 'route', 'del', 'unreachable', SUB6]);
    await sh('nft', ['delete', 'table', 'inet', tableOf(DRIVER)]);
    await shOk('nft', ['delete', 'table', 'bridge', tableOf(DRIVER)]);
    await sh('ip', ['link', 'del', deadVeth]); // its container's link died with it
  } finally {
    await plugin.restart();
  }
  expect(await tsbridgeRoutes()).toContain(`unreachable ${SUB}`);
  expect(await sh('nft', ['list', 'tables'])).toContain(`inet ${tableOf(DRIVER)}`);
  expect(Object.keys((await state()).endpoints)).toHaveLength(2); // the dead container's endpoint was dropped
  expect(await settled(() => tcpFromNs(world.ns, world.hostAddr, HP))).toBe(world.nsAddr);
  const srvIp = await ipOf(srv, net);
  expect(await settled(() => tcpFromCtr(cli, srvIp, 80))).toBe(await ipOf(cli, net));
  await removeContainers([dead]); // Docker's DeleteEndpoint for an endpoint already gone succeeds
});

test('removal leaves nothing: no link, no route, no rule', async () => {
  await removeContainers([srv, cli]);
  await removeNetworks([net]);
  expect(await footprint()).toEqual(baseline);
});
