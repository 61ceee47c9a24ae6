/**
 * Every step of every call fails in turn (issue 11, "everything a call changes is inside its
 * transaction and undone on any failure"): each kernel call an operation makes — with and without
 * having done its work first — and each save. After the failure the call has thrown, the state in
 * memory and on disk is what it was, nftables holds exactly the full ruleset of that state, and
 * links, routes and sysctls are as they were.
 *
 * The steps are found by running the operation once and counting its kernel calls and saves, so
 * a step added to an operation later is covered without touching this file.
 */
import { Reconciler } from '../../src/driver/reconcile.js';
import { silentLogger } from '../../src/logging.js';
import type { State } from '../../src/state/types.js';
import { EP_1, EP_2, NET_A, NET_B, endpointSpec, makeWorld, networkSpec, portReq, rulesOf, type World } from '../fakes/world.js';

interface Scenario {
  name: string;
  setup: (w: World) => Promise<void>;
  act: (w: World) => Promise<unknown>;
  /** Trailing kernel calls made after the call committed, off its reply path (their failure is logged, not the call's). */
  afterCommit?: number;
}

const NET_B_SPEC = networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }], icc: false });

/** Network A with a joined endpoint publishing a TCP and a UDP port, and an endpoint not joined yet. */
async function busy(w: World): Promise<void> {
  await w.driver.createNetwork(networkSpec({ icc: false }));
  await w.driver.createEndpoint(endpointSpec());
  await w.driver.join(NET_A, EP_1);
  await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080), portReq(53, 5353, { proto: 'udp' })]);
  await w.driver.createEndpoint(endpointSpec({ endpointId: EP_2, ipv4: '10.10.0.3/24' }));
}

const scenarios: Scenario[] = [
  { name: 'CreateNetwork', setup: busy, act: (w) => w.driver.createNetwork(NET_B_SPEC) },
  {
    name: 'DeleteNetwork (an empty one beside a busy one)',
    setup: async (w) => {
      await busy(w);
      await w.driver.createNetwork(NET_B_SPEC);
    },
    act: (w) => w.driver.deleteNetwork(NET_B),
  },
  {
    name: 'DeleteNetwork (with an endpoint not joined)',
    setup: async (w) => {
      await busy(w);
      await w.driver.createNetwork(NET_B_SPEC);
      await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, endpointId: EP_2.replace('2222', '2223'), ipv4: '10.20.0.2/24' }));
    },
    act: (w) => w.driver.deleteNetwork(NET_B),
  },
  { name: 'CreateEndpoint', setup: busy, act: (w) => w.driver.createEndpoint(endpointSpec({ endpointId: EP_2.replace('2222', '2224'), ipv4: '10.10.0.4/24' })) },
  // The veth is removed in the background once no state refers to it (start-up removes a leftover).
  { name: 'DeleteEndpoint (with published ports)', setup: busy, act: (w) => w.driver.deleteEndpoint(NET_A, EP_1), afterCommit: 1 },
  { name: 'Join', setup: busy, act: (w) => w.driver.join(NET_A, EP_2) },
  { name: 'Leave', setup: busy, act: (w) => w.driver.leave(NET_A, EP_1) },
  {
    name: 'ProgramExternalConnectivity (first ports, UDP among them)',
    setup: busy,
    act: (w) => w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(81, 8081), portReq(54, 5354, { proto: 'udp' })]),
  },
  {
    name: 'ProgramExternalConnectivity (replacing published ports)',
    setup: busy,
    act: (w) => w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 9090), portReq(53, 5355, { proto: 'udp' })]),
  },
  { name: 'RevokeExternalConnectivity (UDP among the ports)', setup: busy, act: (w) => w.driver.revokeExternalConnectivity(NET_A, EP_1) },
  {
    name: 'the sweep (a container died unseen)',
    setup: async (w) => {
      await busy(w);
      w.kernel.removeVethBehindOurBack('tsv' + EP_1.slice(0, 12));
    },
    act: (w) => new Reconciler(w.db, w.kernel, silentLogger(), w.runtime).sweep(),
  },
];

/** Everything a failed call must leave as it was. */
function picture(w: World): { state: State; disk: State | null; links: unknown; sysctls: unknown } {
  const k = w.kernel.snapshot();
  return {
    state: structuredClone(w.db.state),
    disk: structuredClone(w.store.saved),
    links: { bridges: k.bridges, veths: k.veths, routes: k.routes, foreign: k.foreign },
    sysctls: k.sysctls,
  };
}

async function world(s: Scenario): Promise<World> {
  const w = makeWorld();
  await s.setup(w);
  return w;
}

/** How many kernel calls and saves the operation makes when nothing fails. */
async function steps(s: Scenario): Promise<{ calls: number; saves: number }> {
  const w = await world(s);
  const calls = w.kernel.calls.length;
  const saves = w.store.saves;
  await s.act(w);
  await w.driver.settle();
  return { calls: w.kernel.calls.length - calls - (s.afterCommit ?? 0), saves: w.store.saves - saves };
}

async function expectUnchanged(w: World, s: Scenario, before: ReturnType<typeof picture>): Promise<void> {
  await expect(s.act(w)).rejects.toThrow();
  await w.driver.settle();
  const after = picture(w);
  expect(after.state).toEqual(before.state);
  expect(after.disk).toEqual(before.disk);
  expect(after.links).toEqual(before.links);
  expect(after.sysctls).toEqual(before.sysctls);
  expect(w.kernel.nft.dump()).toEqual(rulesOf(w.db.state));
}

describe.each(scenarios)('$name', (s) => {
  let n: { calls: number; saves: number };
  beforeAll(async () => {
    n = await steps(s);
  });

  test('makes kernel calls or saves (the scenario exercises something)', () => {
    expect(n.calls + n.saves).toBeGreaterThan(0);
  });

  test('each kernel call failing in turn, with and without doing its work first, changes nothing', async () => {
    for (let i = 0; i < n.calls; i++) {
      for (const partial of [false, true]) {
        const w = await world(s);
        const before = picture(w);
        w.kernel.failCall(i, { partial });
        try {
          await expectUnchanged(w, s, before);
        } catch (e) {
          throw new Error(`call ${i} of ${n.calls} (${partial ? 'partial' : 'clean'}) failing: ${(e as Error).message}`);
        }
      }
    }
  });

  test('each save failing in turn changes nothing', async () => {
    for (let i = 0; i < n.saves; i++) {
      const w = await world(s);
      const before = picture(w);
      w.store.failSave(i);
      try {
        await expectUnchanged(w, s, before);
      } catch (e) {
        throw new Error(`save ${i} of ${n.saves} failing: ${(e as Error).message}`);
      }
    }
  });
});

describe('conntrack failing after ports were published (the bug of issue 11)', () => {
  test.each([
    ['missing binary', undefined],
    ['a timeout', 'TIMEOUT'],
  ])('%s: the call fails, the ports are unpublished again, nothing records them', async (_what, code) => {
    const w = makeWorld();
    await busy(w);
    const before = picture(w);
    const { TsbridgeError } = await import('../../src/errors.js');
    w.kernel.runner.failCommand('conntrack', code ? new TsbridgeError('TIMEOUT', { op: 'conntrack -L -p udp', ms: 10000 }) : undefined);
    await expect(w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(54, 5354, { proto: 'udp' })])).rejects.toThrow(code ? /timed out/ : /ENOENT/);
    expect(picture(w)).toEqual(before);
    expect(w.kernel.publishedPorts()).not.toContain('udp 0.0.0.0:5354 -> 10.10.0.3:54');
    expect(w.kernel.nft.dump()).toEqual(rulesOf(w.db.state));
    // The next container with that address does not receive the traffic: nothing maps to it.
    await w.driver.deleteEndpoint(NET_A, EP_2);
    await w.driver.createEndpoint(endpointSpec({ endpointId: EP_2.replace('2222', '2225'), ipv4: '10.10.0.3/24' }));
    expect(w.kernel.publishedPorts().filter((p) => p.includes('10.10.0.3'))).toEqual([]);
  });
});
