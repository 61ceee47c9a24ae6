/**
 * Issue 3, end to end: address management with real dockerd and containers —
 * automatic pools that avoid host routes, explicit subnets, ranges, aux
 * addresses, round robin, exhaustion, dual stack, serving Docker's own bridge
 * driver, 50 parallel containers, and allocations that survive a restart.
 */
import { Cleanup } from '../lib/cleanup.js';
import { docker, dockerOk, removeContainers, removeNetworks, requireDocker, uniqueName, waitFor } from '../lib/docker.js';
import { createOutsideWorld, startPeerRecorder, type OutsideWorld, type PeerRecorder } from '../lib/netns.js';
import { startPlugin, type PluginHandle } from '../lib/plugin.js';
import { footprint, runIn, TEST_IMAGE } from './helpers.js';

const DRIVER = 'tsbt-ipam';
const cleanup = new Cleanup();
let plugin: PluginHandle;
let world: OutsideWorld;
let recorder: PeerRecorder;

beforeAll(async () => {
  await requireDocker();
  world = await createOutsideWorld({ prefix: 'ipam' });
  cleanup.add(() => world.delete(), 'outside world');
  recorder = await startPeerRecorder(world.ns, 7071);
  cleanup.add(() => recorder.stop(), 'recorder');
  // The first /30 of this /29 is the outside world's own route: automatic pools must skip it.
  const base = world.prefix4.replace(/\.0\/30$/, '.0/29');
  plugin = await startPlugin({ name: DRIVER, env: { TSBRIDGE_DEFAULT_POOLS: `${base}:30` } });
  cleanup.add(() => plugin.dispose(), 'plugin');
});

afterAll(async () => {
  await cleanup.run();
});

async function ipOf(ctr: string, net: string, field = 'IPAddress'): Promise<string> {
  return docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").${field}}}`, ctr]);
}

async function subnetOf(net: string): Promise<string> {
  return docker(['network', 'inspect', '-f', '{{range .IPAM.Config}}{{.Subnet}} {{end}}', net]);
}

test('automatic pools avoid host routes and each other; then a clear error', async () => {
  const c = new Cleanup();
  const [n1, n2] = [uniqueName('auto1'), uniqueName('auto2')];
  c.add(() => removeNetworks([n1, n2]), 'nets');
  try {
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, n1]);
    const prefix = world.prefix4.replace(/\.0\/30$/, '');
    expect((await subnetOf(n1)).trim()).toBe(`${prefix}.4/30`); // .0/30 is routed on the host
    const r = await dockerOk(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, n2]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/no free IPv4 pool left/);
    const out = await runIn(n1, `ip -o -4 addr show eth0; echo x | nc -w 3 ${world.nsAddr} ${recorder.port}`);
    expect(out).toContain(`${prefix}.6/30`);
    expect(out).toContain(world.hostAddr);
  } finally {
    await c.run();
  }
});

describe('explicit subnet, gateway, range, aux address and --ip', () => {
  const net = uniqueName('exp');
  const c = new Cleanup();
  afterAll(async () => {
    await c.run();
  });

  test('dynamic addresses come from the range, never the aux address; --ip anywhere', async () => {
    c.add(() => removeNetworks([net]), net);
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.212.20.0/24',
      '--gateway', '10.212.20.254', '--ip-range', '10.212.20.128/30', '--aux-address', 'r=10.212.20.129', net]);
    const names = [uniqueName('e1'), uniqueName('e2'), uniqueName('e3')];
    c.add(() => removeContainers(names), 'containers');
    await docker(['run', '-d', '--network', net, '--name', names[0]!, TEST_IMAGE, 'sleep', '600']);
    await docker(['run', '-d', '--network', net, '--name', names[1]!, TEST_IMAGE, 'sleep', '600']);
    await docker(['run', '-d', '--network', net, '--ip', '10.212.20.5', '--name', names[2]!, TEST_IMAGE, 'sleep', '600']);
    const ips = await Promise.all(names.map((n) => ipOf(n, net)));
    // The range's first address is an ordinary host address of the /24; .129 is the aux address.
    expect(ips.slice(0, 2).sort()).toEqual(['10.212.20.128', '10.212.20.130']);
    expect(ips[2]).toBe('10.212.20.5');
    expect(await ipOf(names[0]!, net, 'IPPrefixLen')).toBe('24');
    const route = await docker(['exec', names[0]!, 'ip', 'route']);
    expect(route).toContain('default via 10.212.20.254');
    expect(await runIn(net, 'ip -o -4 addr show eth0')).toContain('10.212.20.131/24');
    // .131 was just released, so the round robin wraps and finds the range full only when
    // all four are held: hold .131 with one more container, then ask again.
    names.push(uniqueName('e4'));
    await docker(['run', '-d', '--network', net, '--name', names[3]!, TEST_IMAGE, 'sleep', '600']);
    expect(await ipOf(names[3]!, net)).toBe('10.212.20.131');
    const before = await footprint();
    const r = await dockerOk(['run', '--rm', '--network', net, TEST_IMAGE, 'true']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/no free address left in pool 10\.212\.20\.0\/24 \(range 10\.212\.20\.128\/30\) of network [0-9a-f]{12}/);
    expect(await footprint()).toEqual(before);
  });

  test('an --ip already in use is refused', async () => {
    const r = await dockerOk(['run', '--rm', '--network', net, '--ip', '10.212.20.5', TEST_IMAGE, 'true']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/10\.212\.20\.5 is already in use/);
  });

  test('an overlapping explicit subnet is refused', async () => {
    const other = uniqueName('ovl');
    const r = await dockerOk(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.212.20.0/25', other]);
    if (r.exitCode === 0) await removeNetworks([other]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/subnet 10\.212\.20\.0\/25 overlaps 10\.212\.20\.0\/24/);
  });
});

test('a released address is not handed out again at once (round robin)', async () => {
  const net = uniqueName('rr');
  const c = new Cleanup();
  c.add(() => removeNetworks([net]), net);
  try {
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.212.21.0/24', net]);
    const first = await runIn(net, 'ip -o -4 addr show eth0');
    const second = await runIn(net, 'ip -o -4 addr show eth0');
    expect(first).toContain('10.212.21.2/24');
    expect(second).toContain('10.212.21.3/24');
  } finally {
    await c.run();
  }
});

test('allocations survive a plugin restart', async () => {
  const net = uniqueName('rs');
  const a = uniqueName('rsa');
  const c = new Cleanup();
  c.add(() => removeNetworks([net]), net);
  c.add(() => removeContainers([a]), a);
  try {
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.212.22.0/24', net]);
    await docker(['run', '-d', '--network', net, '--name', a, TEST_IMAGE, 'sleep', '600']);
    await plugin.restart();
    const out = await runIn(net, `ip -o -4 addr show eth0; ping -c1 -W2 ${await ipOf(a, net)}`);
    expect(out).toContain('10.212.22.3/24');
    expect(out).toContain('1 packets received');
  } finally {
    await c.run();
  }
});

describe('IPv6 dual stack', () => {
  test('explicit IPv6 subnet: v6 addresses, v6 gateway, v6 between containers and to the outside', async () => {
    const net = uniqueName('v6');
    const a = uniqueName('v6a');
    const c = new Cleanup();
    c.add(() => removeNetworks([net]), net);
    c.add(() => removeContainers([a]), a);
    try {
      await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--ipv6',
        '--subnet', '10.212.23.0/24', '--subnet', 'fd5e:23::/64', net]);
      await docker(['run', '-d', '--network', net, '--name', a, TEST_IMAGE, 'sleep', '600']);
      const v6 = await ipOf(a, net, 'GlobalIPv6Address');
      expect(v6).toMatch(/^fd5e:23::/);
      const out = await runIn(net, `ip -6 route; ping -6 -c1 -W2 ${v6}; echo x | nc -w 3 ${world.nsAddr6} ${recorder.port}`);
      expect(out).toContain('default via fd5e:23::1');
      expect(out).toContain('1 packets received');
      expect(out).toContain(world.hostAddr6);
    } finally {
      await c.run();
    }
  });

  test('no IPv6 subnet given: a unique local /64 is chosen', async () => {
    const net = uniqueName('ula');
    const c = new Cleanup();
    c.add(() => removeNetworks([net]), net);
    try {
      await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--ipv6', '--subnet', '10.212.24.0/24', net]);
      const subnets = (await subnetOf(net)).trim().split(' ');
      const v6 = subnets.find((s) => s.includes(':'));
      expect(v6).toMatch(/^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}:[0-9a-f]{0,4}:?:\/64$|^fd[0-9a-f:]+\/64$/);
      const out = await runIn(net, 'ip -o -6 addr show eth0 scope global');
      expect(out).toContain(v6!.replace(/::\/64$/, '::2/64'));
    } finally {
      await c.run();
    }
  });
});

test("tsbridge IPAM serves Docker's built-in bridge driver", async () => {
  const net = uniqueName('bri');
  const c = new Cleanup();
  c.add(() => removeNetworks([net]), net);
  try {
    await docker(['network', 'create', '-d', 'bridge', '--ipam-driver', DRIVER, '--subnet', '10.212.25.0/24', net]);
    const out = await runIn(net, 'ip -o -4 addr show eth0; ip route');
    expect(out).toContain('10.212.25.2/24');
    expect(out).toContain('default via 10.212.25.1');
  } finally {
    await c.run();
  }
});

test('50 parallel docker run get 50 distinct addresses', async () => {
  const net = uniqueName('par');
  const names = Array.from({ length: 50 }, (_, i) => uniqueName(`p${i}`));
  const c = new Cleanup();
  c.add(() => removeNetworks([net]), net);
  c.add(() => removeContainers(names), 'containers');
  try {
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.212.26.0/24', net]);
    await Promise.all(names.map((n) => docker(['run', '-d', '--network', net, '--name', n, TEST_IMAGE, 'sleep', '600'])));
    const ips = await Promise.all(names.map((n) => ipOf(n, net)));
    expect(new Set(ips).size).toBe(50);
    for (const ip of ips) expect(ip).toMatch(/^10\.212\.26\.\d+$/);
  } finally {
    await c.run();
  }
  // The veths are torn down after DeleteEndpoint has answered (off Docker's path): 50 of them
  // may still be going when the last docker rm returns — one by one in the kernel, each waiting
  // for RCU grace periods, which took more than 30 s at load 19 on this 2-core machine.
  const t0 = Date.now();
  await waitFor(
    async () => {
      const left = (await footprint()).links;
      if (left.length > 0) throw new Error(`${left.length} links left: ${left.slice(0, 6).join(' ')}`);
      return true;
    },
    120_000,
    { what: 'the 50 veth pairs to be torn down', intervalMs: 500 },
  );
  console.info(`the 50 veth pairs were gone ${Date.now() - t0} ms after the last docker rm returned`);
  expect(await footprint()).toEqual({ links: [], nft: [], iptables: [] });
}, 420_000);
