/**
 * Convergence with Docker (issue 11, "Docker forgets what the plugin still holds"), over the
 * fakes: what Docker no longer has is removed — kernel objects, rules, state — after two
 * observations `confirmMs` apart, never while it is younger than the grace period (Docker may be
 * creating it right now), and the same subnet and host ports can be used again at once.
 */
import { Convergence, lacking, type Clock } from '../../src/driver/converge.js';
import { DriverService } from '../../src/driver/service.js';
import { IpamService } from '../../src/ipam/service.js';
import { silentLogger } from '../../src/logging.js';
import type { DockerObservation, ObservedNetwork } from '../../src/docker/observe.js';
import { EP_1, EP_2, NET_A, NET_B, endpointSpec, makeWorld, networkSpec, portReq, rulesOf, type World } from '../fakes/world.js';

const GRACE = 60_000;
const CONFIRM = 2_000;
const T0 = 1_700_000_000_000;

/** Docker's predefined networks: every real list has them. */
const PREDEFINED: ObservedNetwork[] = [
  { id: 'f'.repeat(64), driver: 'host', ipamDriver: 'default', subnets: [], endpoints: null },
  { id: 'e'.repeat(64), driver: 'null', ipamDriver: 'default', subnets: [], endpoints: null },
  { id: 'd'.repeat(64), driver: 'bridge', ipamDriver: 'default', subnets: [{ subnet: '172.17.0.0/16', gateway: '172.17.0.1', aux: [] }], endpoints: null },
];

function docker(...nets: ObservedNetwork[]): DockerObservation {
  return { networks: [...PREDEFINED, ...nets] };
}

/** Network A as Docker shows it while it has it: -d tsbridge --ipam-driver tsbridge. */
function dockerA(endpoints: { id: string; ipv4: string | null }[] | null = [{ id: EP_1, ipv4: '10.10.0.2' }]): ObservedNetwork {
  return {
    id: NET_A,
    driver: 'tsbridge',
    ipamDriver: 'tsbridge',
    subnets: [{ subnet: '10.10.0.0/24', gateway: '10.10.0.1', aux: [] }],
    endpoints: endpoints && endpoints.map((e) => ({ ...e, ipv6: null })),
  };
}

interface Rig {
  w: World;
  clock: Clock & { at: number; m: number; advance(ms: number): void };
  conv: Convergence;
}

function rig(): Rig {
  const w = makeWorld();
  const clock = {
    at: T0,
    m: 0,
    wall() {
      return this.at;
    },
    mono() {
      return this.m;
    },
    advance(ms: number) {
      this.at += ms;
      this.m += ms;
    },
  };
  const now = () => clock.at;
  w.driver = new DriverService(w.db, w.kernel, w.host, silentLogger(), w.runtime, now);
  w.ipam = new IpamService(w.db, w.host, () => [{ base: '10.210.0.0/16', size: 24 }], undefined, now);
  const conv = new Convergence(w.driver, silentLogger(), { graceMs: GRACE, confirmMs: CONFIRM }, clock);
  return { w, clock, conv };
}

/** Network A as Docker makes it with tsbridge's IPAM: pool, gateway, network; a container publishing 8080 (tcp) and 5353 (udp). */
async function networkA(r: Rig): Promise<string> {
  const { w } = r;
  const pool = await w.ipam.requestPool({ pool: '10.10.0.0/24', subPool: '', v6: false });
  await w.ipam.requestAddress(pool.poolId, '', 'gateway');
  await w.driver.createNetwork(networkSpec({ icc: false }));
  const addr = await w.ipam.requestAddress(pool.poolId, '', 'endpoint');
  await w.driver.createEndpoint(endpointSpec({ ipv4: addr }));
  await w.driver.join(NET_A, EP_1);
  await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080), portReq(53, 5353, { proto: 'udp' })]);
  return pool.poolId;
}

function picture(w: World) {
  const k = w.kernel.snapshot();
  return { state: structuredClone(w.db.state), disk: structuredClone(w.store.saved), bridges: k.bridges, veths: k.veths, nft: k.nft };
}

describe('a network removed in Docker while the plugin was down', () => {
  let r: Rig;
  let poolId: string;
  beforeEach(async () => {
    r = rig();
    poolId = await networkA(r);
    r.clock.advance(10 * 60_000); // the network is old: docker network rm happened long after
  });

  test('the first observation only notes it; the second, confirmMs later, removes bridge, veth, rules, endpoint, pool', async () => {
    const first = await r.conv.observe(docker());
    expect(first.removed).toEqual({ networks: [], endpoints: [], pools: [], addresses: [] });
    expect(first.confirming).toEqual({ networks: [NET_A], endpoints: [], pools: [poolId], addresses: [] });
    expect(first.confirmInMs).toBe(CONFIRM);
    expect(r.w.db.state.networks[NET_A]).toBeDefined();

    r.clock.advance(CONFIRM - 1);
    expect((await r.conv.observe(docker())).removed.networks).toEqual([]); // not yet
    r.clock.advance(1);
    const second = await r.conv.observe(docker());
    expect(second.removed).toEqual({ networks: [NET_A], endpoints: [], pools: [poolId], addresses: [] });
    expect(second.confirming.networks).toEqual([]);

    const snap = r.w.kernel.snapshot();
    expect(snap.bridges).toEqual([]);
    expect(snap.veths).toEqual([]);
    expect(snap.firewall.tables).toBe(false);
    expect(snap.nft).toEqual(rulesOf(r.w.db.state));
    expect(r.w.db.state.networks).toEqual({});
    expect(r.w.db.state.endpoints).toEqual({});
    expect(r.w.db.state.pools).toEqual({});
    expect(r.w.store.saved).toEqual(r.w.db.state);
  });

  test('the same subnet and the same host ports work again at once', async () => {
    await r.conv.observe(docker());
    r.clock.advance(CONFIRM);
    await r.conv.observe(docker());
    await r.w.ipam.requestPool({ pool: '10.10.0.0/24', subPool: '', v6: false });
    await r.w.driver.createNetwork(networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000' }));
    await r.w.driver.createEndpoint(endpointSpec({ networkId: NET_B, endpointId: EP_2, ipv4: '10.10.0.2/24' }));
    const mapped = await r.w.driver.programExternalConnectivity(NET_B, EP_2, [portReq(80, 8080), portReq(53, 5353, { proto: 'udp' })]);
    expect(mapped.map((m) => m.hostPort)).toEqual([8080, 5353]);
    expect(r.w.kernel.publishedPorts()).toEqual(['tcp 0.0.0.0:8080 -> 10.10.0.2:80', 'udp 0.0.0.0:5353 -> 10.10.0.2:53']);
  });

  test('a network Docker shows again before the confirmation is kept, and the count starts over', async () => {
    await r.conv.observe(docker());
    r.clock.advance(CONFIRM);
    expect((await r.conv.observe(docker(dockerA()))).removed.networks).toEqual([]);
    r.clock.advance(CONFIRM);
    const again = await r.conv.observe(docker());
    expect(again.removed.networks).toEqual([]);
    expect(again.confirming.networks).toEqual([NET_A]);
  });

  test('a dry run reports what would go and changes nothing, remembers nothing', async () => {
    const before = picture(r.w);
    const dry = await r.conv.observe(docker(), { dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, removed: { networks: [NET_A], pools: [poolId] } });
    r.clock.advance(CONFIRM);
    expect((await r.conv.observe(docker(), { dryRun: true })).removed.networks).toEqual([NET_A]);
    expect(picture(r.w)).toEqual(before);
    // and a real observation now is only the first
    expect((await r.conv.observe(docker())).removed.networks).toEqual([]);
  });

  test('the removal takes the state lock: it waits for a call in flight', async () => {
    await r.conv.observe(docker());
    r.clock.advance(CONFIRM);
    let release!: () => void;
    const held = r.w.db.tx(() => new Promise<void>((res) => (release = res)));
    let done = false;
    const removal = r.conv.observe(docker()).then((x) => {
      done = true;
      return x;
    });
    await new Promise((res) => setTimeout(res, 20));
    expect(done).toBe(false);
    release();
    await held;
    expect((await removal).removed.networks).toEqual([NET_A]);
  });

  test('a failure at any kernel step of the removal puts everything back', async () => {
    await r.conv.observe(docker());
    r.clock.advance(CONFIRM);
    const probe = rig();
    await networkA(probe);
    probe.clock.advance(10 * 60_000);
    await probe.conv.observe(docker());
    probe.clock.advance(CONFIRM);
    const calls = probe.w.kernel.calls.length;
    await probe.conv.observe(docker());
    const steps = probe.w.kernel.calls.length - calls;
    expect(steps).toBeGreaterThan(0);
    for (let i = 0; i < steps; i++) {
      for (const partial of [false, true]) {
        const t = rig();
        await networkA(t);
        t.clock.advance(10 * 60_000);
        await t.conv.observe(docker());
        t.clock.advance(CONFIRM);
        const before = picture(t.w);
        t.w.kernel.failCall(i, { partial });
        await expect(t.conv.observe(docker())).rejects.toThrow();
        // Everything is back but the veth of a joined endpoint once it was deleted: its other
        // end lived in the container and went with it (the record is back; the veth sweep
        // drops it, as for any container that died unseen).
        const after = picture(t.w);
        const joined = new Set(Object.values(before.state.endpoints).filter((e) => e.joined).map((e) => e.hostVeth));
        expect({ ...after, veths: after.veths.filter((v) => !joined.has(v.host)) }).toEqual({ ...before, veths: before.veths.filter((v) => !joined.has(v.host)) });
        expect(after.veths.length === before.veths.length || after.veths.length === before.veths.length - joined.size).toBe(true);
        expect(t.w.kernel.nft.dump()).toEqual(rulesOf(t.w.db.state));
      }
    }
  });
});

describe('races with what Docker is creating right now', () => {
  test('a pool (and its gateway) requested moments ago is young: never removed, however often observed', async () => {
    const r = rig();
    const pool = await r.w.ipam.requestPool({ pool: '10.30.0.0/24', subPool: '', v6: false });
    await r.w.ipam.requestAddress(pool.poolId, '', 'gateway');
    for (let i = 0; i < 5; i++) {
      const rep = await r.conv.observe(docker()); // Docker has not stored the network yet
      expect(rep.removed.pools).toEqual([]);
      expect(rep.young.pools).toEqual([pool.poolId]);
      r.clock.advance(CONFIRM);
    }
    // Docker stores its network: held from now on
    const net: ObservedNetwork = { id: 'c'.repeat(64), driver: 'bridge', ipamDriver: 'tsbridge', subnets: [{ subnet: '10.30.0.0/24', gateway: '10.30.0.1', aux: [] }], endpoints: [] };
    r.clock.advance(GRACE);
    expect(await r.conv.observe(docker(net))).toMatchObject({ removed: { pools: [], addresses: [] }, confirming: { pools: [], addresses: [] } });
  });

  test('a network created moments ago, and its endpoint, are young', async () => {
    const r = rig();
    await r.w.driver.createNetwork(networkSpec());
    await r.w.driver.createEndpoint(endpointSpec());
    r.clock.advance(GRACE - 1);
    const rep = await r.conv.observe(docker());
    expect(rep.young.networks).toEqual([NET_A]);
    expect(rep.confirming.networks).toEqual([]);
    r.clock.advance(1); // now old: this observation is the first that counts
    expect((await r.conv.observe(docker())).confirming.networks).toEqual([NET_A]);
  });

  test('an endpoint being created on a network Docker has (not in its inspect yet) is young', async () => {
    const r = rig();
    await networkA(r);
    r.clock.advance(10 * 60_000);
    await r.w.driver.createEndpoint(endpointSpec({ endpointId: EP_2, ipv4: '10.10.0.9/24' }));
    const rep = await r.conv.observe(docker(dockerA()));
    expect(rep.young.endpoints).toEqual([EP_2]);
    expect(rep.confirming.endpoints).toEqual([]);
  });

  test('a pool requested again by a retry while waiting for confirmation is young again, and kept', async () => {
    const r = rig();
    const pool = await r.w.ipam.requestPool({ pool: '10.30.0.0/24', subPool: '', v6: false });
    r.clock.advance(10 * 60_000);
    expect((await r.conv.observe(docker())).confirming.pools).toEqual([pool.poolId]);
    r.clock.advance(1000);
    await r.w.ipam.requestPool({ pool: '10.30.0.0/24', subPool: '', v6: false }); // the user runs docker network create again
    r.clock.advance(CONFIRM);
    const rep = await r.conv.observe(docker());
    expect(rep.removed.pools).toEqual([]);
    expect(rep.young.pools).toEqual([pool.poolId]);
  });

  test('records of an older tsbridge (no creation time) count from when this process started', async () => {
    const r = rig();
    await networkA(r);
    delete r.w.db.state.networks[NET_A]!.created;
    delete r.w.db.state.pools['tsb-v4-10.10.0.0/24']!.created;
    const conv = new Convergence(r.w.driver, silentLogger(), { graceMs: GRACE, confirmMs: CONFIRM }, r.clock);
    r.clock.advance(GRACE - 1);
    expect((await conv.observe(docker())).young).toMatchObject({ networks: [NET_A], pools: ['tsb-v4-10.10.0.0/24'] });
    r.clock.advance(1);
    expect((await conv.observe(docker())).confirming).toMatchObject({ networks: [NET_A], pools: ['tsb-v4-10.10.0.0/24'] });
  });
});

describe('endpoints Docker forgot on a network it still has', () => {
  test('removed with its veth, its elements and its ports; its address released', async () => {
    const r = rig();
    const poolId = await networkA(r);
    r.clock.advance(10 * 60_000);
    await r.conv.observe(docker(dockerA([])));
    r.clock.advance(CONFIRM);
    const rep = await r.conv.observe(docker(dockerA([])));
    expect(rep.removed).toEqual({ networks: [], endpoints: [EP_1], pools: [], addresses: [{ pool: poolId, address: '10.10.0.2' }] });
    const snap = r.w.kernel.snapshot();
    expect(snap.veths).toEqual([]);
    expect(snap.bridges.map((b) => b.name)).toEqual(['tsb-aaaa0000000']);
    expect(snap.firewall.ports).toEqual([]);
    expect(snap.nft).toEqual(rulesOf(r.w.db.state));
    expect(r.w.db.state.pools[poolId]!.allocated).toEqual({ '10.10.0.1': 'gateway' });
    expect(r.w.db.state.pools[poolId]!.since).toEqual({ '10.10.0.1': T0 });
  });

  test('kept while Docker lists it; not judged when the network was not inspected', async () => {
    const r = rig();
    await networkA(r);
    r.clock.advance(10 * 60_000);
    for (const obs of [docker(dockerA()), docker(dockerA(null))]) {
      await r.conv.observe(obs);
      r.clock.advance(CONFIRM);
      expect(await r.conv.observe(obs)).toMatchObject({ removed: { endpoints: [], addresses: [] }, confirming: { endpoints: [], addresses: [] } });
    }
  });
});

describe('pools and addresses of -d bridge --ipam-driver tsbridge networks (matched by subnet)', () => {
  const bridgeNet = (endpoints: { id: string; ipv4: string | null; ipv6: string | null }[] | null, ipamDriver = 'tsbridge'): ObservedNetwork => ({
    id: 'c'.repeat(64),
    driver: 'bridge',
    ipamDriver,
    subnets: [{ subnet: '10.40.0.0/24', gateway: '10.40.0.1', aux: ['10.40.0.250'] }],
    endpoints,
  });

  async function pool(r: Rig) {
    const p = await r.w.ipam.requestPool({ pool: '10.40.0.0/24', subPool: '', v6: false });
    await r.w.ipam.requestAddress(p.poolId, '', 'gateway'); // .1
    await r.w.ipam.requestAddress(p.poolId, '10.40.0.250', 'endpoint'); // Docker's aux address
    await r.w.ipam.requestAddress(p.poolId, '', 'endpoint'); // .2: a container Docker still has
    await r.w.ipam.requestAddress(p.poolId, '', 'endpoint'); // .3: one removed while the plugin was down
    r.clock.advance(10 * 60_000);
    await r.w.ipam.requestAddress(p.poolId, '', 'endpoint'); // .4: being created right now
    return p.poolId;
  }

  test('the pool stays; gateway, aux address and the container Docker has stay; the forgotten address goes; a young one stays', async () => {
    const r = rig();
    const id = await pool(r);
    const obs = docker(bridgeNet([{ id: EP_1, ipv4: '10.40.0.2', ipv6: null }]));
    expect((await r.conv.observe(obs)).confirming).toEqual({ networks: [], endpoints: [], pools: [], addresses: [{ pool: id, address: '10.40.0.3' }] });
    r.clock.advance(CONFIRM);
    const rep = await r.conv.observe(obs);
    expect(rep.removed.addresses).toEqual([{ pool: id, address: '10.40.0.3' }]);
    expect(rep.young.addresses).toEqual([{ pool: id, address: '10.40.0.4' }]);
    expect(Object.keys(r.w.db.state.pools[id]!.allocated).sort()).toEqual(['10.40.0.1', '10.40.0.2', '10.40.0.250', '10.40.0.4']);
  });

  test('a network of Docker\'s own IPAM on the same subnet does not hold the pool', async () => {
    const r = rig();
    const id = await pool(r);
    const obs = docker(bridgeNet(null, 'default'));
    await r.conv.observe(obs);
    r.clock.advance(CONFIRM);
    expect((await r.conv.observe(obs)).removed.pools).toEqual([id]);
    expect(r.w.db.state.pools).toEqual({});
  });

  test('the removed network of that kind: its pool goes, with every address', async () => {
    const r = rig();
    const id = await pool(r);
    r.clock.advance(GRACE);
    await r.conv.observe(docker());
    r.clock.advance(CONFIRM);
    expect((await r.conv.observe(docker())).removed).toEqual({ networks: [], endpoints: [], pools: [id], addresses: [] });
  });
});

describe('lacking (pure)', () => {
  test('an observation that is not Docker\'s list: what is judged needs Docker\'s answer; nothing in the state: nothing lacking', () => {
    const r = rig();
    expect(lacking(r.w.db.state, docker(), T0, GRACE, T0)).toEqual({
      old: { networks: [], endpoints: [], pools: [], addresses: [] },
      young: { networks: [], endpoints: [], pools: [], addresses: [] },
    });
  });

  test('networks being created or deleted are start-up\'s, not convergence\'s', async () => {
    const r = rig();
    await r.w.driver.createNetwork(networkSpec());
    r.w.db.state.networks[NET_A]!.phase = 'creating';
    expect(lacking(r.w.db.state, docker(), T0 + GRACE * 10, GRACE, T0).old.networks).toEqual([]);
  });
});
