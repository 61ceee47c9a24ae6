/**
 * Lifecycle of tsbridge's kernel objects with the real `ip`, `nft` and `iptables`, inside
 * throwaway namespaces (helpers/lab.ts): teardown leaves nothing (not a link, not a table, not a
 * rule, Docker's own chains byte for byte as they were), start-up reconciliation rebuilds what was
 * lost and removes what is stale, and the forward shim works with iptables-legacy too.
 *
 * Needs: root, iproute2, nftables, iptables (nft variant; iptables-legacy for the optional test),
 * busybox (ping) and node. Nothing here touches the machine's own links, routes or rulesets.
 */
import { hostVethName, peerVethName } from '../../src/domain/names.js';
import { Cleanup } from '../lib/cleanup.js';
import { waitFor } from '../lib/docker.js';
import { listNetns, randomId, startPeerRecorder } from '../lib/netns.js';
import { requireRoot, sh } from '../lib/run.js';
import { Lab, requireLabTools, haveBinary, ping, reaches, tcpFrom, seenAs } from './helpers/lab.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

beforeAll(async () => {
  requireRoot('test/integration/kernel-firewall.test.ts');
  await requireLabTools();
});

afterAll(async () => {
  await cleanup.run();
  const left = (await listNetns()).filter((n) => Lab.created.includes(n));
  expect(left).toEqual([]);
});

const T = 45_000;

/** Everything of H's that tsbridge could have touched. */
async function snapshot(lab: Lab, v4 = 'iptables', v6 = 'ip6tables') {
  return {
    links: await lab.tsbridgeLinks(),
    nft: await lab.nftRuleset(),
    ipt4: await lab.iptablesSave(v4),
    ipt6: await lab.iptablesSave(v6),
  };
}

async function hasTsbridgeChain(lab: Lab, bin: string): Promise<boolean> {
  const r = await lab.host.execOk(bin, ['-w', '5', '-t', 'filter', '-S']);
  return r.stdout.includes('TSBRIDGE-FORWARD');
}

describe('teardown leaves nothing', () => {
  test("in Docker's order (revoke, leave, delete endpoint, delete network): no link, no table, Docker's chains byte for byte", async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall('iptables');
    await lab.dockerLikeFirewall('ip6tables');
    const before = await snapshot(lab);
    expect(before.links).toEqual([]);
    expect(before.ipt4).toContain(':FORWARD DROP');

    const a = await lab.network({ v6: true, icc: false });
    const b = await lab.network({ internal: true });
    const c1 = await lab.attach(a);
    const c2 = await lab.attach(a);
    const c3 = await lab.attach(b);
    const idle = await lab.endpoint(b); // created, never joined: both veth ends stay in H
    await startPeerRecorder(c1.ns, 80);
    const P = 20000 + Math.floor(Math.random() * 10000);
    await lab.publish(c1, P);
    expect(seenAs(await tcpFrom(lab.outside, lab.hostAddr, P))).toBe(lab.outAddr);

    const during = await snapshot(lab);
    expect(during.links.sort()).toEqual(
      [a.bridge, b.bridge, hostVethName(c1.id), hostVethName(c2.id), hostVethName(c3.id), hostVethName(idle.id), peerVethName(idle.id)].sort(),
    );
    expect(await lab.nftTables()).toEqual(expect.arrayContaining(['table inet tsbridge', 'table bridge tsbridge']));
    expect(await hasTsbridgeChain(lab, 'iptables')).toBe(true);
    expect(await hasTsbridgeChain(lab, 'ip6tables')).toBe(true);

    // network a, endpoint by endpoint
    for (const ep of [c1, c2]) {
      await lab.driver.revokeExternalConnectivity(a.id, ep.id);
      await lab.driver.leave(a.id, ep.id);
      await lab.driver.deleteEndpoint(a.id, ep.id);
    }
    await lab.driver.settle(); // veths are removed off the reply path
    expect(await lab.host.exec('nft', ['list', 'map', 'inet', 'tsbridge', 'ports4'])).not.toContain(`${P}`);
    const noIcc = await lab.host.exec('nft', ['list', 'set', 'bridge', 'tsbridge', 'no_icc']);
    expect(noIcc).not.toContain(hostVethName(c1.id));
    expect(noIcc).not.toContain(hostVethName(c2.id));
    expect((await lab.tsbridgeLinks()).filter((l) => l.includes(c1.id.slice(0, 12)) || l.includes(c2.id.slice(0, 12)))).toEqual([]);
    expect((await sh('ip', ['-n', c1.ns.name, '-br', 'link'])).split('\n').map((l) => l.split(/\s+/)[0])).toEqual(['lo']);
    await lab.driver.deleteNetwork(a.id);

    // network b
    await lab.driver.leave(b.id, c3.id);
    await lab.driver.deleteEndpoint(b.id, c3.id);
    await lab.driver.deleteEndpoint(b.id, idle.id);
    await lab.driver.deleteNetwork(b.id);
    await lab.driver.settle();

    const after = await snapshot(lab);
    expect(after.links).toEqual([]);
    expect(await lab.nftTables()).not.toEqual(expect.arrayContaining([expect.stringContaining('tsbridge')]));
    expect(await hasTsbridgeChain(lab, 'iptables')).toBe(false);
    expect(await hasTsbridgeChain(lab, 'ip6tables')).toBe(false);
    expect(after.ipt4).toBe(before.ipt4);
    expect(after.ipt6).toBe(before.ipt6);
    expect(after.nft).toEqual(before.nft);
    expect(lab.db.state.networks).toEqual({});
    expect(lab.db.state.endpoints).toEqual({});

    // repeated deletes are harmless
    await lab.driver.deleteEndpoint(b.id, idle.id);
    await lab.driver.deleteNetwork(b.id);
    await lab.driver.settle();
    expect(await snapshot(lab)).toEqual(after);
  }, T);

  test('deleteNetwork with endpoints still present removes their veths too (the container loses its interface)', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network();
    const c1 = await lab.attach(net);
    const idle = await lab.endpoint(net);
    expect(await lab.tsbridgeLinks()).toHaveLength(4);

    await lab.driver.deleteNetwork(net.id);
    expect(await lab.tsbridgeLinks()).toEqual([]);
    expect(await sh('ip', ['-n', c1.ns.name, '-br', 'link'])).not.toContain(c1.ifname);
    expect(lab.db.state.endpoints[idle.id]).toBeUndefined();
    expect(await lab.nftTables()).not.toEqual(expect.arrayContaining([expect.stringContaining('tsbridge')]));
    // no Docker chains here: the shim hung off FORWARD, and both the jump and the chain are gone
    const rules = await lab.iptablesRules();
    expect(rules.filter((r) => r.includes('TSBRIDGE'))).toEqual([]);
    expect(rules).toContain('-P FORWARD ACCEPT');
  }, T);
});

describe('start-up reconciliation', () => {
  test('rebuilds a deleted bridge and a flushed ruleset from state, re-attaches the endpoints, removes stale links', async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    const net = await lab.network({ v6: true, mtu: 1400 });
    const c1 = await lab.attach(net);
    const c2 = await lab.attach(net);
    const idle = await lab.endpoint(net);
    const rec = await startPeerRecorder(lab.outside, 7070);
    await startPeerRecorder(c1.ns, 80);
    const P = 20000 + Math.floor(Math.random() * 10000);
    await lab.publish(c1, P);
    const tableBefore = await lab.host.exec('nft', ['list', 'table', 'inet', 'tsbridge']);
    const bridgeTableBefore = await lab.host.exec('nft', ['list', 'table', 'bridge', 'tsbridge']);

    // leftovers of an earlier run of this instance (alias "tsbridge") that state does not know
    const staleBridge = `tsb-${randomId()}${randomId().slice(0, 5)}`;
    const staleHost = `tsv${randomId()}${randomId()}`;
    const stalePeer = `tsc${staleHost.slice(3)}`;
    await lab.ipH(['link', 'add', staleBridge, 'type', 'bridge']);
    await lab.ipH(['link', 'add', staleHost, 'type', 'veth', 'peer', 'name', stalePeer]);
    for (const l of [staleBridge, staleHost, stalePeer]) await lab.ipH(['link', 'set', l, 'alias', 'tsbridge']);
    // a link that only looks similar (too short for a tsbridge name) is not ours
    const notOurs = `tsb-x${randomId()}`;
    await lab.ipH(['link', 'add', notOurs, 'type', 'bridge']);

    // the damage: bridge deleted, every nftables table gone, then dockerd "restarts" its chains
    await lab.ipH(['link', 'del', net.bridge]);
    await lab.host.exec('nft', ['flush', 'ruleset']);
    await lab.dockerLikeFirewall();
    expect(await ping(c1.ns, c2.ipv4)).toBe(false);

    const report = await lab.reconciler().startup();
    expect(report).toMatchObject({ networksRestored: 1, networksDropped: 0, endpointsDropped: 0, vethsRecreated: 0 });
    expect(report.staleLinksRemoved.sort()).toEqual([staleBridge, staleHost, stalePeer].sort());

    const links = await lab.tsbridgeLinks();
    expect(links).not.toContain(staleBridge);
    expect(links).not.toContain(staleHost);
    expect(links).toContain(notOurs);
    const br = await lab.linkDetails(net.bridge);
    expect(br.mtu).toBe(1400);
    expect(await lab.addresses(net.bridge)).toEqual(expect.arrayContaining([`${net.gateway4}/24`, `${net.gateway6}/64`]));
    expect(await lab.host.exec('nft', ['list', 'table', 'inet', 'tsbridge'])).toBe(tableBefore);
    expect(await lab.host.exec('nft', ['list', 'table', 'bridge', 'tsbridge'])).toBe(bridgeTableBefore);
    expect((await lab.iptablesRules()).filter((r) => r.endsWith('-j TSBRIDGE-FORWARD'))).toEqual(['-A DOCKER-USER -j TSBRIDGE-FORWARD']);

    // the surviving veths (joined or not) are back on the recreated bridge, as ensureVeth leaves them
    for (const id of [c1.id, c2.id, idle.id]) {
      const l = await lab.linkDetails(hostVethName(id));
      expect({ id, master: l.master, hairpin: l.linkinfo?.info_slave_data?.hairpin, up: l.flags.includes('UP') }).toEqual({
        id,
        master: net.bridge,
        hairpin: true,
        up: true,
      });
    }
    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr, rec.port))).toBe(lab.hostAddr);
    expect(seenAs(await tcpFrom(lab.outside, lab.hostAddr, P))).toBe(lab.outAddr);
  }, T);

  test('on a healthy host start-up changes nothing and keeps traffic flowing; it forgets containers that died', async () => {
    const lab = await Lab.create(cleanup);
    await lab.dockerLikeFirewall();
    const net = await lab.network();
    const c1 = await lab.attach(net);
    const c2 = await lab.attach(net);
    const before = await snapshot(lab);

    const report = await lab.reconciler().startup();
    expect(report).toEqual({ networksRestored: 1, networksDropped: 0, endpointsDropped: 0, vethsRecreated: 0, staleLinksRemoved: [] });
    expect(await snapshot(lab)).toEqual(before);
    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);

    // c2's container dies: its namespace (and so both veth ends) go away without Docker telling us
    await c2.ns.delete();
    await waitFor(async () => !(await lab.tsbridgeLinks()).includes(hostVethName(c2.id)), 30_000, { what: `${hostVethName(c2.id)} to vanish` });
    expect(await lab.reconciler().sweep()).toBe(1);
    expect(lab.db.state.endpoints[c2.id]).toBeUndefined();
    expect(lab.db.state.endpoints[c1.id]).toBeDefined();
    expect(await lab.reconciler().startup()).toMatchObject({ endpointsDropped: 0, staleLinksRemoved: [] });
    expect(await reaches(c1.ns, net.gateway4)).toBe(true);
  }, T);

  test('an endpoint not joined yet whose veth pair vanished gets it back, on its bridge', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network({ mtu: 1400 });
    const idle = await lab.endpoint(net);
    await lab.ipH(['link', 'del', hostVethName(idle.id)]);
    expect(await lab.tsbridgeLinks()).toEqual([net.bridge]);

    expect(await lab.reconciler().startup()).toMatchObject({ vethsRecreated: 1, endpointsDropped: 0 });
    const host = await lab.linkDetails(hostVethName(idle.id));
    const peer = await lab.linkDetails(peerVethName(idle.id));
    expect([host.master, host.mtu, peer.mtu, peer.address]).toEqual([net.bridge, 1400, 1400, idle.mac]);

    // and Join can hand it out as usual
    const join = await lab.driver.join(net.id, idle.id);
    expect(join.srcName).toBe(peerVethName(idle.id));
  }, T);

  test('a network left half-created by a crash is undone: its bridge removed, its rules gone', async () => {
    const lab = await Lab.create(cleanup);
    const keep = await lab.network();
    const c1 = await lab.attach(keep);
    const crashed = lab.networkSpec();
    // what a crash between "persist creating" and "persist ready" leaves: a record and a bridge
    await lab.db.tx(async (s) => {
      s.networks[crashed.id] = { ...crashed.spec, phase: 'creating' };
    });
    await lab.ipH(['link', 'add', crashed.bridge, 'type', 'bridge']);

    const report = await lab.reconciler().startup();
    expect(report).toMatchObject({ networksRestored: 1, networksDropped: 1 });
    expect(await lab.tsbridgeLinks()).not.toContain(crashed.bridge);
    expect(lab.db.state.networks[crashed.id]).toBeUndefined();
    expect(await lab.host.exec('nft', ['list', 'set', 'inet', 'tsbridge', 'bridges'])).not.toContain(crashed.bridge);
    expect((await lab.iptablesRules()).filter((r) => r.includes(crashed.bridge))).toEqual([]);
    expect(await reaches(c1.ns, keep.gateway4)).toBe(true);
  }, T);
});

describe('idempotent driver calls', () => {
  test('createNetwork retried with the same spec brings back a bridge that disappeared', async () => {
    const lab = await Lab.create(cleanup);
    const net = await lab.network({ mtu: 1400 });
    await lab.ipH(['link', 'del', net.bridge]);
    await lab.driver.createNetwork(net.spec);
    expect((await lab.linkDetails(net.bridge)).mtu).toBe(1400);
    expect(await lab.addresses(net.bridge)).toContain(`${net.gateway4}/24`);
    await lab.driver.createNetwork(net.spec); // and again: nothing changes
    expect(await lab.tsbridgeLinks()).toEqual([net.bridge]);
  }, T);
});

describe('iptables-legacy', () => {
  test('the forward shim works with the legacy variant and is removed with the last network', async () => {
    if (!(await haveBinary('iptables-legacy')) || !(await haveBinary('ip6tables-legacy'))) {
      console.warn('iptables-legacy is not installed: skipping the legacy shim test');
      return;
    }
    const lab = await Lab.create(cleanup, { iptables: { v4: 'iptables-legacy', v6: 'ip6tables-legacy' } });
    await lab.dockerLikeFirewall('iptables-legacy');
    await lab.dockerLikeFirewall('ip6tables-legacy');
    const before4 = await lab.iptablesSave('iptables-legacy');
    const before6 = await lab.iptablesSave('ip6tables-legacy');
    const net = await lab.network();
    const c1 = await lab.attach(net);
    const c2 = await lab.attach(net);
    const rec = await startPeerRecorder(lab.outside, 7070);

    const rules = await lab.iptablesRules('iptables-legacy');
    expect(rules.filter((r) => r.endsWith('-j TSBRIDGE-FORWARD'))).toEqual(['-A DOCKER-USER -j TSBRIDGE-FORWARD']);
    expect(await hasTsbridgeChain(lab, 'iptables')).toBe(false); // the nft variant was left alone
    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr, rec.port))).toBe(lab.hostAddr);

    await lab.driver.deleteEndpoint(net.id, c1.id);
    await lab.driver.deleteEndpoint(net.id, c2.id);
    await lab.driver.deleteNetwork(net.id);
    await lab.driver.settle();
    expect(await lab.iptablesSave('iptables-legacy')).toBe(before4);
    expect(await lab.iptablesSave('ip6tables-legacy')).toBe(before6);
  }, T);
});
