/**
 * Start-up reconciliation and the sweep, over FakeKernel: a restart brings an
 * empty kernel back to the saved state, crash leftovers are finished or
 * undone, and links tsbridge did not make are never touched.
 */
import { PEER_BACK_MS, Reconciler } from '../../src/driver/reconcile.js';
import { hostVethName, peerVethName } from '../../src/domain/names.js';
import { silentLogger } from '../../src/logging.js';
import { Db } from '../../src/state/db.js';
import { FakeKernel } from '../fakes/kernel.js';
import { EP_1, EP_2, EP_3, NET_A, NET_B, endpointSpec, makeWorld, networkSpec, portReq, rulesOf, type World } from '../fakes/world.js';

/** The same store, a new Db and an empty kernel: what a host reboot plus plugin start looks like. */
async function restart(w: World): Promise<{ db: Db; kernel: FakeKernel; reconciler: Reconciler }> {
  const db = new Db(w.store, await w.store.load());
  const kernel = new FakeKernel();
  return { db, kernel, reconciler: new Reconciler(db, kernel, silentLogger()) };
}

let w: World;
beforeEach(async () => {
  w = makeWorld();
  await w.driver.createNetwork(networkSpec({ icc: false }));
  await w.driver.createEndpoint(endpointSpec()); // joined, with a port
  await w.driver.join(NET_A, EP_1);
  await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
  await w.driver.createEndpoint(endpointSpec({ endpointId: EP_2, ipv4: '10.10.0.3/24' })); // created, not joined yet
});

test('after a reboot: bridges and unjoined veths are recreated, endpoints of dead containers dropped, rules re-applied', async () => {
  const r = await restart(w);
  const report = await r.reconciler.startup();
  expect(report).toMatchObject({ networksRestored: 1, endpointsDropped: 1, vethsRecreated: 1, networksDropped: 0 });
  const snap = r.kernel.snapshot();
  expect(snap.bridges).toEqual([{ name: 'tsb-aaaa0000000', mtu: 1500, mac: expect.any(String), addresses: ['10.10.0.1/24'] }]);
  expect(snap.veths.map((v) => [v.host, v.peer, v.bridge])).toEqual([[hostVethName(EP_2), peerVethName(EP_2), 'tsb-aaaa0000000']]);
  expect(snap.firewall).toEqual({ tables: true, bridges: ['tsb-aaaa0000000'], ports: [], noIcc: [hostVethName(EP_2)], guarded: [hostVethName(EP_2)] });
  expect(snap.nft).toEqual(rulesOf(r.db.state));
  expect(snap.sysctls['net.ipv4.ip_forward']).toBe('1');
  expect(Object.keys(r.db.state.endpoints)).toEqual([EP_2]);
  expect(w.store.saved).toEqual(r.db.state);
});

test('after a plugin restart with the kernel intact, nothing is lost and the rules are the same', async () => {
  const before = w.kernel.snapshot();
  const db = new Db(w.store, await w.store.load());
  const report = await new Reconciler(db, w.kernel, silentLogger()).startup();
  expect(report).toMatchObject({ endpointsDropped: 0, vethsRecreated: 0, staleLinksRemoved: [] });
  expect(w.kernel.snapshot()).toEqual(before);
  expect(db.state).toEqual(w.db.state);
});

test('links with tsbridge names that no state knows are removed; other links are left alone', async () => {
  // a veth whose background teardown a crash interrupted, and links of other programs
  await w.kernel.links.ensureVeth({ hostName: hostVethName(EP_3), peerName: peerVethName(EP_3), master: 'tsb-aaaa0000000', mtu: 1500, mac: '02:00:00:00:00:03', hostAddresses: [] });
  w.kernel.addForeignLink('eth0');
  w.kernel.addForeignLink('docker0', 'bridge');
  w.kernel.addForeignLink('tsv-not-ours', 'veth');
  const db = new Db(w.store, await w.store.load());
  const report = await new Reconciler(db, w.kernel, silentLogger()).startup();
  expect(report.staleLinksRemoved.sort()).toEqual([hostVethName(EP_3), peerVethName(EP_3)].sort());
  const snap = w.kernel.snapshot();
  expect(snap.veths.map((v) => v.host).sort()).toEqual([hostVethName(EP_1), hostVethName(EP_2)].sort());
  expect(snap.foreign.map((l) => l.name)).toEqual(['docker0', 'eth0', 'tsv-not-ours']);
});

test('a network saved half-made (phase creating) is dropped with its bridge', async () => {
  const saved = structuredClone(w.store.saved!);
  const b = networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] });
  saved.networks[NET_B] = { ...b, phase: 'creating' };
  w.store.saved = saved;
  await w.kernel.links.ensureBridge({ name: 'tsb-bbbb0000000', mtu: 1500, addresses: ['10.20.0.1/24'], mac: '02:00:00:00:00:0b' });
  const db = new Db(w.store, await w.store.load());
  const report = await new Reconciler(db, w.kernel, silentLogger()).startup();
  expect(report.networksDropped).toBe(1);
  expect(w.kernel.snapshot().bridges.map((x) => x.name)).toEqual(['tsb-aaaa0000000']);
  expect(db.state.networks[NET_B]).toBeUndefined();
  expect(w.store.saved?.networks[NET_B]).toBeUndefined();
});

test('sweep forgets joined endpoints whose container died unseen, and unpublishes their ports', async () => {
  const r = new Reconciler(w.db, w.kernel, silentLogger());
  expect(await r.sweep()).toBe(0);
  w.kernel.removeVethBehindOurBack(hostVethName(EP_1));
  expect(await r.sweep()).toBe(1);
  expect(Object.keys(w.db.state.endpoints)).toEqual([EP_2]);
  expect(w.kernel.snapshot().firewall.ports).toEqual([]);
  expect(w.store.saved).toEqual(w.db.state);
  // the port is free again
  await w.driver.programExternalConnectivity(NET_A, EP_2, [portReq(80, 8080)]);
});

test("links with tsbridge names made by another instance (not ours by alias) are left alone", async () => {
  w.kernel.addForeignLink('tsb-bbbb0000000', 'bridge'); // another tsbridge instance's network
  w.kernel.addForeignLink(hostVethName('c'.repeat(64)), 'veth');
  const db = new Db(w.store, await w.store.load());
  const report = await new Reconciler(db, w.kernel, silentLogger()).startup();
  expect(report.staleLinksRemoved).toEqual([]);
  expect(w.kernel.snapshot().foreign.map((l) => l.name).sort()).toEqual(['tsb-bbbb0000000', hostVethName('c'.repeat(64))].sort());
});

test('a network of a kind this version does not know stops start-up before anything is changed', async () => {
  const saved = structuredClone(w.store.saved!);
  saved.networks[NET_B] = { ...networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] }), kind: 'meshnet', phase: 'ready' };
  w.store.saved = saved;
  w.kernel.removeVethBehindOurBack(hostVethName(EP_1)); // something start-up would otherwise clean up
  const before = { kernel: w.kernel.snapshot(), saved: structuredClone(w.store.saved) };
  const db = new Db(w.store, await w.store.load());
  await expect(new Reconciler(db, w.kernel, silentLogger()).startup()).rejects.toThrow(/state store: a network of kind "meshnet"/);
  expect({ kernel: w.kernel.snapshot(), saved: w.store.saved }).toEqual(before);
});

describe("a container removed while the plugin was down: Docker moved the container's end of the veth back to the host", () => {
  /** What Docker leaves: both ends in the host namespace (renamed back), the endpoint still joined in the state. */
  async function peerBack(): Promise<void> {
    w.kernel.peerBackToHost(peerVethName(EP_1));
  }

  test('start-up drops the endpoint, its veth and its published port at once (no Join can be in flight)', async () => {
    await peerBack();
    const db = new Db(w.store, await w.store.load());
    const report = await new Reconciler(db, w.kernel, silentLogger()).startup();
    expect(report.endpointsDropped).toBe(1);
    expect(Object.keys(db.state.endpoints)).toEqual([EP_2]);
    expect(w.kernel.snapshot().veths.map((v) => v.host)).toEqual([hostVethName(EP_2)]);
    expect(w.kernel.publishedPorts()).toEqual([]);
  });

  /** A Reconciler whose clock the test moves. */
  function withClock(): { r: Reconciler; at: (ms: number) => void } {
    let t = 1_000_000;
    const r = new Reconciler(w.db, w.kernel, silentLogger(), undefined, () => t);
    return { r, at: (ms) => (t = 1_000_000 + ms) };
  }

  test(`the sweep drops it once sweeps have seen it so for PEER_BACK_MS (${PEER_BACK_MS / 1000} s) in a row`, async () => {
    const { r, at } = withClock();
    // just after Join, Docker has not moved the peer yet: sweeps see it in the host
    await peerBack();
    expect(await r.sweep()).toBe(0);
    // runc's hook can come tens of seconds later on a loaded host: still not judged
    at(30_000);
    expect(await r.sweep()).toBe(0);
    at(PEER_BACK_MS - 1);
    expect(await r.sweep()).toBe(0);
    expect(w.db.state.endpoints[EP_1]).toBeDefined();
    expect(w.kernel.snapshot().veths.map((v) => v.host)).toContain(hostVethName(EP_1));
    // still there: Docker moved it back, the container is gone
    at(PEER_BACK_MS);
    expect(await r.sweep()).toBe(1);
    expect(Object.keys(w.db.state.endpoints)).toEqual([EP_2]);
    expect(w.kernel.snapshot().veths.map((v) => v.host)).toEqual([hostVethName(EP_2)]);
    expect(w.kernel.publishedPorts()).toEqual([]);
    expect(w.kernel.nft.dump()).toEqual(rulesOf(w.db.state));
  });

  test('a peer seen in the host, then gone into the container, is not counted; seen again, its time starts again', async () => {
    const { r, at } = withClock();
    await peerBack();
    expect(await r.sweep()).toBe(0);
    at(60_000);
    w.kernel.peerIntoContainer(peerVethName(EP_1)); // Docker moved it into the container after all
    expect(await r.sweep()).toBe(0);
    at(120_000);
    w.kernel.peerBackToHost(peerVethName(EP_1));
    expect(await r.sweep()).toBe(0); // seen again: the first time in a row
    at(120_000 + PEER_BACK_MS - 1);
    expect(await r.sweep()).toBe(0);
    expect(w.db.state.endpoints[EP_1]).toBeDefined();
    at(120_000 + PEER_BACK_MS);
    expect(await r.sweep()).toBe(1);
  });
});

describe("Join's and Leave's saves are synced after their reply (a machine crash may lose them): start-up is right without them", () => {
  /** The store as a machine crash right after the call could leave it: EP_1's `joined` as it was before. */
  function lose(joined: boolean): void {
    const saved = structuredClone(w.store.saved!);
    saved.endpoints[EP_1]!.joined = joined;
    w.store.saved = saved;
  }

  test("Join's save lost, the kernel intact (the container runs): start-up reads `joined` from the veth, keeps everything, and the sweep watches it", async () => {
    expect(w.store.saved!.endpoints[EP_1]!.joined).toBe(true);
    lose(false);
    const before = w.kernel.snapshot();
    const db = new Db(w.store, await w.store.load());
    const r = new Reconciler(db, w.kernel, silentLogger());
    const report = await r.startup();
    expect(report).toMatchObject({ endpointsDropped: 0, vethsRecreated: 0, staleLinksRemoved: [] });
    expect(w.kernel.snapshot()).toEqual(before);
    expect(db.state.endpoints[EP_1]!.joined).toBe(true);
    expect(db.state.endpoints[EP_2]!.joined).toBe(false); // created, not joined: its end is in the host
    expect(w.store.saved).toEqual(db.state);
    // Its container dies unseen: the sweep forgets it (it would not have with the flag lost).
    w.kernel.removeVethBehindOurBack(hostVethName(EP_1));
    expect(await r.sweep()).toBe(1);
    expect(Object.keys(db.state.endpoints)).toEqual([EP_2]);
  });

  test("Join's save lost in a machine crash (no namespaces left): the endpoint comes back as one created and not joined", async () => {
    lose(false);
    const r = await restart(w);
    const report = await r.reconciler.startup();
    // What a crash between CreateEndpoint and Join leaves too: its veth recreated, for Docker to
    // delete when it cleans up the dead container (or to join).
    expect(report).toMatchObject({ endpointsDropped: 0, vethsRecreated: 2 });
    expect(r.db.state.endpoints[EP_1]).toMatchObject({ joined: false, ports: [expect.anything()] });
    expect(r.kernel.snapshot().veths.map((v) => v.host).sort()).toEqual([hostVethName(EP_1), hostVethName(EP_2)].sort());
    expect(r.kernel.snapshot().nft).toEqual(rulesOf(r.db.state));
  });

  test("Leave's save lost, the kernel intact: the end Docker moved back makes start-up drop the endpoint Docker deletes next", async () => {
    await w.driver.revokeExternalConnectivity(NET_A, EP_1);
    await w.driver.leave(NET_A, EP_1);
    w.kernel.peerBackToHost(peerVethName(EP_1));
    expect(w.store.saved!.endpoints[EP_1]!.joined).toBe(false);
    lose(true);
    const db = new Db(w.store, await w.store.load());
    const report = await new Reconciler(db, w.kernel, silentLogger()).startup();
    expect(report.endpointsDropped).toBe(1);
    expect(Object.keys(db.state.endpoints)).toEqual([EP_2]);
    expect(w.kernel.snapshot().veths.map((v) => v.host)).toEqual([hostVethName(EP_2)]);
  });

  test("Leave's save lost in a machine crash: the endpoint is dropped, as a joined one whose container died", async () => {
    await w.driver.leave(NET_A, EP_1);
    lose(true);
    const r = await restart(w);
    const report = await r.reconciler.startup();
    expect(report.endpointsDropped).toBe(1);
    expect(Object.keys(r.db.state.endpoints)).toEqual([EP_2]);
  });
});
