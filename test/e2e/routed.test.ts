/**
 * Issue 12, kind 1, end to end: Docker's routed gateway mode on a tsbridge bridge network
 * (`-o com.docker.network.bridge.gateway_mode_ipv4=routed`, `_ipv6=routed`) with a real dockerd,
 * real containers and real packets. The outside-world namespace routes the network's subnets
 * through the host (its default route does): it reaches a container at the container's own
 * address, on the published container port and ICMP only, and sees the container's own address
 * on egress. Then: the plugin killed with SIGKILL and restarted, a simulated host reboot, and
 * removal leaving nothing.
 *
 * Needs: root, a running dockerd, the tsbridge-test image (scripts/test-image.sh), busybox on the
 * host. Run under the e2e lock:
 *   npm run build && flock /run/tsbridge-e2e.lock npm run test:e2e -- test/e2e/routed.test.ts
 * Addresses: 10.223.1-3.0/24, fd5e:223:1::/64; host ports 25000-25099.
 */
import { randomInt } from 'node:crypto';
import { Cleanup } from '../lib/cleanup.js';
import { docker, dockerOk, removeContainers, removeNetworks, requireDocker, uniqueName, waitFor } from '../lib/docker.js';
import { createOutsideWorld, startPeerRecorder, type Netns, type OutsideWorld, type PeerRecorder } from '../lib/netns.js';
import { startPlugin, type PluginHandle } from '../lib/plugin.js';
import { tcpRequest } from '../lib/probe.js';
import { sh } from '../lib/run.js';
import { footprint, httpPeer, PEER_REQUEST, peerServerScript, tableOf, TEST_IMAGE } from './helpers.js';

const DRIVER = 'tsbt-routed';
const SUB = '10.223.1.0/24';
const SUB6 = 'fd5e:223:1::/64';
const GW = '10.223.1.1';
const ROUTED = ['-o', 'com.docker.network.bridge.gateway_mode_ipv4=routed', '-o', 'com.docker.network.bridge.gateway_mode_ipv6=routed'];
/** The host port asked for in -p: routed mode does not use it. */
const HP = 25000 + randomInt(100);

const cleanup = new Cleanup();
let plugin: PluginHandle;
let world: OutsideWorld;
let outside: PeerRecorder;
let baseline: Awaited<ReturnType<typeof footprint>>;
const net = uniqueName('rt');
const srv = uniqueName('rsrv');

async function ipOf(ctr: string, network: string, field = 'IPAddress'): Promise<string> {
  return docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").${field}}}`, ctr]);
}

/** HTTP through the CGI from a namespace (busybox nc); the client address the server saw, or null. */
async function tcpFromNs(ns: Netns, host: string, port: number): Promise<string | null> {
  const r = await ns.execOk('busybox', ['nc', '-w', '2', host, String(port)], { input: PEER_REQUEST, timeoutMs: 10_000 });
  return httpPeer(r.stdout);
}

async function settled<T>(probe: () => Promise<T | null>, tries = 3): Promise<T | null> {
  for (let i = 0; i < tries - 1; i++) {
    const v = await probe();
    if (v !== null) return v;
  }
  return probe();
}

/** A TCP connection from inside a container to the outside recorder; what the recorder saw. */
async function egressFrom(ctr: string, host: string): Promise<string | null> {
  const before = outside.peers.length;
  await dockerOk(['exec', ctr, 'sh', '-c', `echo x | nc -w 2 ${host} ${outside.port}`]);
  return outside.peers.slice(before).at(-1)?.address ?? null;
}

async function startServer(name: string, network: string, publish: string[]): Promise<string> {
  cleanup.add(() => removeContainers([name]), name);
  await docker(['run', '-d', '--network', network, '--name', name, ...publish, TEST_IMAGE, 'sh', '-c', peerServerScript(['httpd -p 8002 -h /www'])]);
  const ip = await ipOf(name, network);
  await waitFor(async () => httpPeer(await tcpRequest(ip, 80, PEER_REQUEST, { timeoutMs: 1000 }).catch(() => '')) !== null, 10_000, { what: `httpd in ${name}` });
  return ip;
}

beforeAll(async () => {
  await requireDocker();
  baseline = await footprint();
  plugin = await startPlugin({ name: DRIVER });
  cleanup.add(() => plugin.dispose(), 'plugin');
  await removeNetworks((await docker(['network', 'ls', '-q', '--filter', `driver=${DRIVER}`])).split('\n').filter(Boolean)); // a crashed run's
  world = await createOutsideWorld({ prefix: 'rt' });
  cleanup.add(() => world.delete(), 'outside world');
  outside = await startPeerRecorder(world.ns, 7070);
  cleanup.add(() => removeNetworks([net]), net);
  await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--ipv6', '--subnet', SUB, '--subnet', SUB6, ...ROUTED, net]);
  await startServer(srv, net, ['-p', `${HP}:80`]);
}, 120_000);

afterAll(async () => {
  await cleanup.run();
});

describe('from another host that routes the subnet to this host', () => {
  test('the published container port at the container\'s own address, IPv4 and IPv6; the client seen as itself', async () => {
    const ip = await ipOf(srv, net);
    const ip6 = await ipOf(srv, net, 'GlobalIPv6Address');
    expect(await settled(() => tcpFromNs(world.ns, ip, 80))).toBe(world.nsAddr);
    expect(await settled(() => tcpFromNs(world.ns, ip6, 80))).toBe(world.nsAddr6);
  });

  test('an unpublished port of the container is closed; the host port of -p is not opened on the host', async () => {
    const ip = await ipOf(srv, net);
    expect(await tcpFromNs(world.ns, ip, 8002)).toBeNull();
    expect(await tcpFromNs(world.ns, world.hostAddr, HP)).toBeNull();
    // The host reaches every port of its own containers (its traffic is not forwarded).
    expect(httpPeer(await tcpRequest(ip, 8002, PEER_REQUEST, { timeoutMs: 2000 }))).toBe(GW);
  });

  test('ICMP passes, as Docker lets it', async () => {
    const ip = await ipOf(srv, net);
    expect((await world.ns.execOk('busybox', ['ping', '-c', '1', '-W', '2', ip])).exitCode).toBe(0);
  });
});

test('egress keeps the container\'s address: no masquerade, either family', async () => {
  const ip = await ipOf(srv, net);
  const ip6 = await ipOf(srv, net, 'GlobalIPv6Address');
  expect(await settled(() => egressFrom(srv, world.nsAddr))).toBe(ip);
  expect(await settled(() => egressFrom(srv, world.nsAddr6))).toBe(ip6);
});

test('a container of a NAT network reaches the published port directly, not an unpublished one', async () => {
  const nat = uniqueName('rtnat');
  const c = new Cleanup();
  c.add(() => removeNetworks([nat]), nat);
  try {
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.223.2.0/24', nat]);
    const ip = await ipOf(srv, net);
    const out = await docker(['run', '--rm', '--network', nat, TEST_IMAGE, 'sh', '-c',
      `printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${ip} 80; echo; printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${ip} 8002; echo done`]);
    expect(httpPeer(out)).toBe(GW); // masqueraded as its own network's egress, onto the routed bridge
    expect(out.match(/peer=/g)).toHaveLength(1);
  } finally {
    await c.run();
  }
});

test('a specific host address on a routed family is refused, naming why; the container does not start', async () => {
  const name = uniqueName('rbad');
  cleanup.add(() => removeContainers([name]), name);
  const r = await dockerOk(['run', '-d', '--network', net, '--name', name, '-p', `127.0.0.1:${HP}:80`, TEST_IMAGE, 'sleep', '60']);
  expect(r.exitCode).not.toBe(0);
  expect(r.stderr).toContain('routed mode');
});

test('the refused gateway modes are refused by docker network create, naming the option', async () => {
  for (const mode of ['nat-unprotected', 'isolated']) {
    const r = await dockerOk(['network', 'create', '-d', DRIVER, '--subnet', '10.223.3.0/24', '-o', `com.docker.network.bridge.gateway_mode_ipv4=${mode}`, uniqueName('rno')]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain(`com.docker.network.bridge.gateway_mode_ipv4=${mode}`);
  }
});

test('SIGKILL and restart: the published port stays open, a new container publishes, nothing doubles', async () => {
  const ip = await ipOf(srv, net);
  await plugin.kill9();
  try {
    expect(await settled(() => tcpFromNs(world.ns, ip, 80))).toBe(world.nsAddr); // the kernel kept it
  } finally {
    await plugin.restart();
  }
  expect(await settled(() => tcpFromNs(world.ns, ip, 80))).toBe(world.nsAddr);
  const two = uniqueName('rsrv2');
  const ip2 = await startServer(two, net, ['-p', '80']);
  expect(await settled(() => tcpFromNs(world.ns, ip2, 80))).toBe(world.nsAddr);
  expect(await tcpFromNs(world.ns, ip2, 8002)).toBeNull();
  await removeContainers([two]);
  const set = await sh('nft', ['list', 'set', 'inet', tableOf(DRIVER), `routed4_${(await docker(['network', 'inspect', '-f', '{{.Id}}', net])).slice(0, 12)}`]);
  expect(set).toContain(`${ip} . tcp . 80`);
  expect(set).not.toContain(ip2);
});

test('simulated host reboot: bridge and tables gone while the plugin is down; start-up rebuilds them, the container is reached again', async () => {
  const id = await docker(['network', 'inspect', '-f', '{{.Id}}', net]);
  const ip = await ipOf(srv, net);
  await plugin.stop();
  try {
    await sh('ip', ['link', 'del', `tsb-${id.slice(0, 11)}`]);
    await sh('nft', ['delete', 'table', 'inet', tableOf(DRIVER)]);
    await sh('nft', ['delete', 'table', 'bridge', tableOf(DRIVER)]);
    expect(await tcpFromNs(world.ns, ip, 80)).toBeNull();
  } finally {
    await plugin.restart();
  }
  expect(await sh('ip', ['-o', 'addr', 'show', 'dev', `tsb-${id.slice(0, 11)}`])).toContain(`${GW}/24`);
  expect(await settled(() => tcpFromNs(world.ns, ip, 80))).toBe(world.nsAddr); // its veth was put back on the bridge
  expect(await tcpFromNs(world.ns, ip, 8002)).toBeNull();
});

test('removal leaves nothing: containers, network, plugin', async () => {
  await removeContainers([srv]);
  await removeNetworks([net]);
  expect(await footprint()).toEqual(baseline);
});
