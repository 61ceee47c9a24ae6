/**
 * Issue 2, end to end: a real dockerd, the plugin as a legacy plugin, real
 * containers and real packets. Every numbered step of "What a user must be
 * able to do", plus bad input, MTU, a plugin restart and a dockerd restart.
 */
import { Cleanup } from '../lib/cleanup.js';
import { docker, dockerOk, removeContainers, removeNetworks, requireDocker, uniqueName, waitFor } from '../lib/docker.js';
import { createOutsideWorld, startPeerRecorder, type OutsideWorld, type PeerRecorder } from '../lib/netns.js';
import { REPO_ROOT, startPlugin, type PluginHandle } from '../lib/plugin.js';
import { sh } from '../lib/run.js';
import { footprint, foreignFirewall, runIn, TEST_IMAGE } from './helpers.js';


const DRIVER = 'tsbridge-e2e';
const SUBNET = '10.212.7.0/24';
const cleanup = new Cleanup();
let plugin: PluginHandle;
let world: OutsideWorld;
let recorder: PeerRecorder;
let baselineForeign: string;

beforeAll(async () => {
  await requireDocker();
  plugin = await startPlugin({ name: DRIVER });
  cleanup.add(() => plugin.dispose(), 'plugin');
  world = await createOutsideWorld({ prefix: 'e2e' });
  cleanup.add(() => world.delete(), 'outside world');
  recorder = await startPeerRecorder(world.ns, 7070);
  cleanup.add(() => recorder.stop(), 'recorder');
  baselineForeign = await foreignFirewall();
});

afterAll(async () => {
  await cleanup.run();
});

describe('a tsbridge network with the tsbridge IPAM', () => {
  const net = uniqueName('n1');
  const a = uniqueName('a');
  const c = new Cleanup();
  afterAll(async () => {
    await c.run();
  });

  test('docker network create gives a bridge holding the gateway', async () => {
    c.add(() => removeNetworks([net]), net);
    const id = await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', SUBNET, net]);
    const bridge = `tsb-${id.slice(0, 11)}`;
    const addr = await sh('ip', ['-o', 'addr', 'show', 'dev', bridge]);
    expect(addr).toContain('10.212.7.1/24');
  });

  test('containers reach each other by address and by name', async () => {
    c.add(() => removeContainers([a]), a);
    await docker(['run', '-d', '--network', net, '--name', a, TEST_IMAGE, 'sleep', '600']);
    const ipA = await docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, a]);
    expect(ipA).toMatch(/^10\.212\.7\.\d+$/);
    const out = await runIn(net, `ping -c1 -W2 ${ipA} && ping -c1 -W2 ${a}`);
    expect(out).toContain(`64 bytes from ${ipA}`);
    expect(out.match(/1 packets received/g)?.length).toBe(2);
  });

  test('containers reach the outside world, masqueraded to the host address', async () => {
    const out = await runIn(net, `echo hi | nc -w 3 ${world.nsAddr} ${recorder.port}`);
    const peer = await recorder.waitForPeer((p) => p.proto === 'tcp');
    expect(peer.address).toBe(world.hostAddr);
    expect(out).toContain(world.hostAddr);
  });

  test("Docker's FORWARD policy is left as it was", async () => {
    const policy = (await sh('iptables', ['-S', 'FORWARD'])).split('\n')[0];
    expect(baselineForeign).toContain(`:FORWARD ${policy!.split(' ')[2]}`);
  });

  test('network connect / disconnect on a running container', async () => {
    const net2 = uniqueName('n2');
    c.add(() => removeNetworks([net2]), net2);
    await docker(['network', 'create', '-d', DRIVER, net2]); // Docker's default IPAM
    await docker(['network', 'connect', net2, a]);
    const addrs = await docker(['exec', a, 'ip', '-o', '-4', 'addr', 'show']);
    expect(addrs).toMatch(/eth1\s+inet /);
    const ip2 = await docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net2}").IPAddress}}`, a]);
    expect(await runIn(net2, `ping -c1 -W2 ${ip2}`)).toContain('1 packets received');
    const before = (await footprint()).links.length;
    await docker(['network', 'disconnect', net2, a]);
    expect(await docker(['exec', a, 'ip', '-o', '-4', 'addr', 'show'])).not.toMatch(/eth1/);
    expect((await footprint()).links.length).toBe(before - 1); // the endpoint's host veth is gone
    await docker(['network', 'rm', net2]);
  });

  test('a restarted plugin still knows the network', async () => {
    await plugin.restart();
    const out = await runIn(net, `ping -c1 -W2 ${a}`);
    expect(out).toContain('1 packets received');
  });

  test('rm -f and network rm leave nothing behind', async () => {
    await docker(['rm', '-f', a]);
    await docker(['network', 'rm', net]);
    expect(await footprint()).toEqual({ links: [], nft: [], iptables: [] });
    expect(await foreignFirewall()).toBe(baselineForeign);
  });
});

describe("a tsbridge network with Docker's default IPAM", () => {
  test('containers get addresses, a gateway and egress', async () => {
    const net = uniqueName('d1');
    const c = new Cleanup();
    c.add(() => removeNetworks([net]), net);
    try {
      await docker(['network', 'create', '-d', DRIVER, '-o', 'com.docker.network.driver.mtu=1400', net]);
      const out = await runIn(net, `ip -o link show eth0; ip route; echo hi | nc -w 3 ${world.nsAddr} ${recorder.port}`);
      expect(out).toContain('mtu 1400');
      expect(out).toMatch(/default via \d+\.\d+\.\d+\.1 dev eth0/);
      expect(out).toContain(world.hostAddr);
    } finally {
      await c.run();
    }
    expect((await footprint()).links).toEqual([]);
  });
});

describe('bad input gets a clear error and leaves nothing', () => {
  test.each([
    [['-o', 'com.docker.network.driver.mtu=abc'], /MTU must be a whole number/],
    [['-o', 'com.docker.network.bridge.name=waytoolongbridgename'], /interface name is 1 to 15/],
    [['-o', 'com.docker.network.bridge.name=bad;name'], /interface name is 1 to 15/],
    [['-o', 'com.docker.network.bridge.frobnicate=1'], /com\.docker\.network\.bridge\.frobnicate is not supported/],
  ])('%j', async (opts, message) => {
    const net = uniqueName('bad');
    const r = await dockerOk(['network', 'create', '-d', DRIVER, ...opts, net]);
    if (r.exitCode === 0) await removeNetworks([net]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(message);
    expect(await footprint()).toEqual({ links: [], nft: [], iptables: [] });
  });
});

describe('MTU and bridge name options', () => {
  test('both veth ends carry the MTU; the bridge takes the given name', async () => {
    const net = uniqueName('mtu');
    const ctr = uniqueName('m');
    const c = new Cleanup();
    c.add(() => removeNetworks([net]), net);
    c.add(() => removeContainers([ctr]), ctr);
    try {
      await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.212.8.0/24',
        '-o', 'com.docker.network.driver.mtu=1380', '-o', 'com.docker.network.bridge.name=tsbt-mtubr', net]);
      await docker(['run', '-d', '--network', net, '--name', ctr, TEST_IMAGE, 'sleep', '600']);
      expect(await docker(['exec', ctr, 'cat', '/sys/class/net/eth0/mtu'])).toBe('1380');
      const ifindex = await docker(['exec', ctr, 'cat', '/sys/class/net/eth0/iflink']);
      const hostSide = (await sh('ip', ['-o', 'link', 'show'])).split('\n').find((l) => l.startsWith(`${ifindex}:`))!;
      expect(hostSide).toContain('mtu 1380');
      expect(hostSide).toContain('master tsbt-mtubr');
    } finally {
      await c.run();
    }
    expect(await linkGone('tsbt-mtubr')).toBe(true);
  });
});

describe('dockerd restart', () => {
  test('tsbridge traffic still flows after dockerd re-inserts its chains', async () => {
    const net = uniqueName('dr');
    const c = new Cleanup();
    c.add(() => removeNetworks([net]), net);
    try {
      await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.212.9.0/24', net]);
      await sh('bash', ['scripts/docker-up.sh', '--restart-dockerd'], { timeoutMs: 90_000, cwd: REPO_ROOT });
      await waitFor(async () => (await dockerOk(['info'])).exitCode === 0, 60_000, { what: 'dockerd back' });
      const out = await runIn(net, `echo hi | nc -w 3 ${world.nsAddr} ${recorder.port}`);
      expect(out).toContain(world.hostAddr);
    } finally {
      await c.run();
    }
  });
});

async function linkGone(name: string): Promise<boolean> {
  const out = await sh('ip', ['-o', 'link', 'show']);
  return !out.includes(` ${name}:`);
}
