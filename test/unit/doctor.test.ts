/**
 * `tsbridge doctor` over the fakes (issue 15): each thing broken by hand is named with its cause
 * and fix; the repair `--fix` asks for (start-up reconciliation, convergence) makes it go away;
 * nothing broken, nothing found. And the command against the real app.
 */
import { Doctor, examine } from '../../src/driver/doctor.js';
import { Convergence } from '../../src/driver/converge.js';
import { Reconciler } from '../../src/driver/reconcile.js';
import { firewallView } from '../../src/driver/realize.js';
import { hostVethName, peerVethName } from '../../src/domain/names.js';
import { runCli } from '../../src/cli.js';
import type { DockerEngine } from '../../src/docker/client.js';
import type { DockerObservation } from '../../src/docker/observe.js';
import { KINDS } from '../../src/kinds/registry.js';
import { silentLogger } from '../../src/logging.js';
import { createApp } from '../../src/server/app.js';
import { EP_1, EP_2, NET_A, endpointSpec, makeWorld, networkSpec, portReq, type World } from '../fakes/world.js';
import { serveOnSocket } from '../lib/http.js';

let w: World;
let doctor: Doctor;
let reconciler: Reconciler;
const BR = 'tsb-aaaa0000000';

beforeEach(async () => {
  w = makeWorld();
  reconciler = new Reconciler(w.db, w.kernel, silentLogger(), w.runtime);
  const conv = new Convergence(w.driver, silentLogger(), { graceMs: 0, confirmMs: 0 });
  doctor = new Doctor(w.db, w.kernel, KINDS, 'tsbridge', conv);
  await w.driver.createNetwork(networkSpec({ icc: false, enableIpv6: true, ipv6: [{ subnet: 'fd10:1::/64', gateway: 'fd10:1::1/64' }] }));
  await w.driver.createEndpoint(endpointSpec());
  await w.driver.join(NET_A, EP_1);
  await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
  await w.driver.createEndpoint(endpointSpec({ endpointId: EP_2, ipv4: '10.10.0.3/24' })); // not joined
});

const PREDEFINED = [
  { id: 'f'.repeat(64), driver: 'host', ipamDriver: 'default', subnets: [], endpoints: null },
  { id: 'e'.repeat(64), driver: 'null', ipamDriver: 'default', subnets: [], endpoints: null },
];
const dockerHasA: DockerObservation = {
  networks: [...PREDEFINED, { id: NET_A, driver: 'tsbridge', ipamDriver: 'default', subnets: [{ subnet: '10.10.0.0/24', gateway: '10.10.0.1', aux: [] }], endpoints: [{ id: EP_1, ipv4: '10.10.0.2', ipv6: null }, { id: EP_2, ipv4: '10.10.0.3', ipv6: null }] }],
};

test('nothing broken: nothing found, with or without Docker', async () => {
  expect(await doctor.examine(null)).toEqual([]);
  expect(await doctor.examine(dockerHasA)).toEqual([]);
});

describe('each thing broken by hand is named, and start-up reconciliation repairs it', () => {
  test.each([
    ['the bridge deleted', () => w.kernel.links.deleteLinks([BR]), `bridge ${BR} (network aaaa00000000)`, 'missing'],
    ['the bridge set down', () => w.kernel.down.add(BR), `bridge ${BR} (network aaaa00000000)`, 'down'],
    ['the bridge MTU changed', () => void (w.kernel.bridges.get(BR)!.mtu = 9000), `bridge ${BR} (network aaaa00000000)`, 'MTU 9000, the network\'s is 1500'],
    ['the gateway address deleted', () => void (w.kernel.bridges.get(BR)!.addresses = ['fd10:1::1/64']), `bridge ${BR} (network aaaa00000000)`, 'lacks the gateway address 10.10.0.1/24'],
    ['a veth taken off its bridge', () => void (w.kernel.veths.get(hostVethName(EP_1))!.bridge = null), `endpoint 111100000000 (veth ${hostVethName(EP_1)}, network aaaa00000000)`, `not on its bridge ${BR}`],
    ['an unjoined endpoint\'s veth deleted', () => w.kernel.links.deleteLinks([hostVethName(EP_2)]), `endpoint 222200000000 (veth ${hostVethName(EP_2)}, network aaaa00000000)`, 'its veth is missing'],
    ['route_localnet turned off', () => void w.kernel.sysctls.set(`net.ipv4.conf.${BR}.route_localnet`, '0'), `sysctl net.ipv4.conf.${BR}.route_localnet`, 'is 0, network aaaa00000000 needs 1'],
    ['ip_forward turned off', () => void w.kernel.sysctls.set('net.ipv4.ip_forward', '0'), 'sysctl net.ipv4.ip_forward', 'is 0, network aaaa00000000 needs 1'],
    ['nft delete table inet tsbridge', () => w.kernel.nft.apply('delete table inet tsbridge\n'), 'nftables (tables inet/bridge tsbridge)', 'a table is missing'],
    ['a rule deleted', () => w.kernel.nft.deleteRule('inet tsbridge', 'forward', 3), 'nftables (tables inet/bridge tsbridge)', 'a chain, rule or set is not as last applied'],
    ['the published-port map flushed', () => w.kernel.nft.flushSet('inet tsbridge', 'ports4'), 'nftables (tables inet/bridge tsbridge)', 'set or map elements are missing or extra (published ports, anti-spoofing, isolation)'],
    ['a leftover veth', () => w.kernel.links.ensureVeth({ hostName: 'tsv999900000000', peerName: 'tsc999900000000', master: null, mtu: 1500, mac: '02:00:00:00:00:09', hostAddresses: [] }), 'link tsv999900000000', 'no network or endpoint of the state names it'],
  ])('%s', async (_what, breakIt, object, problem) => {
    await breakIt();
    const found = await doctor.examine(null);
    expect(found).toContainEqual(expect.objectContaining({ object, problem, repair: 'reconcile' }));
    expect(found.every((f) => f.cause && f.fix)).toBe(true);
    await reconciler.startup(); // what --fix asks the plugin for
    expect(await doctor.examine(null)).toEqual([]);
  });

  test("a joined endpoint whose container's end is back in the host: named, and dropped by the repair", async () => {
    w.kernel.peerBackToHost(peerVethName(EP_1));
    expect(await doctor.examine(null)).toContainEqual(expect.objectContaining({ problem: "its container's end is back in the host", cause: 'Docker removed the container while the plugin was down' }));
    await reconciler.startup();
    expect(await doctor.examine(null)).toEqual([]);
    expect(Object.keys(w.db.state.endpoints)).toEqual([EP_2]);
  });

  test('the shim: a flushed DOCKER-USER, and a shim left after the last network', async () => {
    const saves = (jump: boolean) =>
      [
        '*filter', ':FORWARD DROP [0:0]', ':DOCKER-USER - [0:0]', ':TSBRIDGE-FORWARD - [0:0]', '-A FORWARD -j DOCKER-USER',
        ...(jump ? ['-A DOCKER-USER -j TSBRIDGE-FORWARD'] : []),
        '-A DOCKER-USER -j RETURN', '-A TSBRIDGE-FORWARD -o tsb-x -j ACCEPT', 'COMMIT',
      ].join('\n');
    w.kernel.runner.saves.v4 = saves(false);
    const found = await doctor.examine(null);
    expect(found).toContainEqual(expect.objectContaining({ object: 'iptables shim (iptables, chain TSBRIDGE-FORWARD)', problem: 'no jump to it from DOCKER-USER' }));
    expect(found).toContainEqual(expect.objectContaining({ object: 'iptables shim (iptables, chain TSBRIDGE-FORWARD)', problem: 'its rules are not the ones the networks need' }));
    const view = firewallView({ ...w.db.state, networks: {}, endpoints: {} }, KINDS);
    w.kernel.runner.saves.v4 = saves(true);
    expect(await w.kernel.firewall.diagnose!(view)).toContainEqual({ what: 'iptables shim (iptables, chain TSBRIDGE-FORWARD)', problem: 'present although no network needs it' });
  });
});

describe('Docker', () => {
  test('a network Docker no longer has: named with tsbridge gc as the fix', async () => {
    const found = await doctor.examine({ networks: PREDEFINED });
    expect(found).toContainEqual(expect.objectContaining({ object: 'network aaaa00000000', problem: 'held by tsbridge, unknown to Docker', repair: 'converge', fix: 'tsbridge gc (or doctor --fix)' }));
  });

  test("a network of this driver that tsbridge does not know (its state lost): named, fixed by hand", async () => {
    const other = { id: 'c'.repeat(64), driver: 'tsbridge:latest', ipamDriver: 'default', subnets: [], endpoints: [] };
    const found = examine({ state: w.db.state, kinds: KINDS, links: await w.kernel.inspect.links(), routes: await w.kernel.inspect.routes(), sysctls: new Map(), firewall: [], docker: { lacking: { networks: [], endpoints: [], pools: [], addresses: [] }, observation: { networks: [...dockerHasA.networks, other] }, instance: 'tsbridge' } });
    expect(found).toEqual([expect.objectContaining({ object: 'Docker network cccccccccccc (driver tsbridge:latest)', problem: 'unknown to tsbridge', repair: 'manual' })]);
  });
});

describe('tsbridge doctor against the real app', () => {
  let app: Awaited<ReturnType<typeof serveOnSocket>>;
  beforeEach(async () => {
    const conv = new Convergence(w.driver, silentLogger(), { graceMs: 0, confirmMs: 0 });
    app = await serveOnSocket(createApp({ driver: w.driver, ipam: w.ipam, log: silentLogger(), convergence: conv, doctor, repair: () => reconciler.startup() }));
  });
  afterEach(() => app.close());

  const engine = (obs: DockerObservation): DockerEngine => ({
    listNetworks: async () => obs.networks.map((n) => ({ Id: n.id, Driver: n.driver, IPAM: { Driver: n.ipamDriver, Config: n.subnets.map((x) => ({ Subnet: x.subnet, Gateway: x.gateway })) } })),
    inspectNetwork: async (id) => {
      const n = obs.networks.find((x) => x.id === id);
      return n ? { Containers: Object.fromEntries((n.endpoints ?? []).map((e) => [e.id, { EndpointID: e.id, IPv4Address: e.ipv4 ? `${e.ipv4}/24` : '' }])) } : null;
    },
  });

  async function doctorCli(args: string[], obs: DockerObservation) {
    let out = '';
    let err = '';
    const code = await runCli(['doctor', '--socket', app.socket, '--state-dir', '/nonexistent', ...args], { out: (s) => (out += s), err: (s) => (err += s), env: {}, dockerEngine: engine(obs), sleep: async () => undefined });
    return { code, out, err };
  }

  test('healthy: exit 0', async () => {
    expect(await doctorCli([], dockerHasA)).toMatchObject({ code: 0, out: 'no problem found: the kernel, the rules and Docker agree with the state\n' });
  });

  test('broken: each problem with cause and fix, exit 1; --fix repairs through the plugin, exit 0', async () => {
    await w.kernel.links.deleteLinks([BR]);
    w.kernel.nft.apply('delete table inet tsbridge\n');
    const r = await doctorCli([], dockerHasA);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`  ✗ bridge ${BR} (network aaaa00000000): missing\n      cause: deleted by someone (ip link del), or lost with a reboot before the plugin started\n      fix:   tsbridge doctor --fix (the plugin brings the kernel back to its state)\n`);
    expect(r.out).toContain('  ✗ nftables (tables inet/bridge tsbridge): a table is missing\n');
    const fixed = await doctorCli(['--fix'], dockerHasA);
    expect(fixed.out).toMatch(/^found \d+ problems, repaired through the plugin:/);
    expect(fixed.out).toContain('all repaired: the kernel, the rules and Docker agree with the state\n');
    expect(fixed.code).toBe(0);
    expect(w.kernel.snapshot().bridges.map((b) => b.name)).toEqual([BR]);
  });

  test('--fix with a network Docker no longer has: converged (removed), --json', async () => {
    const r = await doctorCli(['--fix', '--json'], { networks: PREDEFINED });
    const j = JSON.parse(r.out);
    expect(j.fixed.gc.removed.networks).toEqual([NET_A]);
    expect(j.findings).toEqual([]);
    expect(r.code).toBe(0);
    expect(w.db.state.networks).toEqual({});
  });
});
