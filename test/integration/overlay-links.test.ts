/**
 * The overlay's kernel operations as tsbridge runs them (the real IpLinks: `ip -batch`,
 * `bridge -batch`), in a throwaway namespace playing the host (helpers/lab.ts): the VXLAN device
 * on its bridge, kept when it is as asked and made again when not, and remote endpoints added,
 * read back and removed — removing one that is not there is fine.
 * Needs root and iproute2.
 */
import { Cleanup } from '../lib/cleanup.js';
import { listNetns } from '../lib/netns.js';
import { requireRoot, sh } from '../lib/run.js';
import { Lab, requireLabTools } from './helpers/lab.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());
afterAll(async () => {
  await cleanup.run();
  expect((await listNetns()).filter((n) => Lab.created.includes(n))).toEqual([]);
});
beforeAll(async () => {
  requireRoot('test/integration/overlay-links.test.ts');
  await requireLabTools();
});

test('a VXLAN device on its bridge (learning off, proxy on), kept when unchanged, made again for another VNI', async () => {
  const lab = await Lab.create(cleanup);
  const links = lab.kernel.links;
  await links.ensureBridge({ name: 'tsb-ov0000test', mtu: 1450, addresses: ['10.252.0.1/24'], mac: '02:74:73:00:10:92' });
  const spec = { name: 'tsx0000000test', vni: 4242, local: lab.hostAddr, port: 4789, mtu: 1450, master: 'tsb-ov0000test' };
  await links.ensureVxlan(spec);
  const d = await lab.linkDetails('tsx0000000test');
  // (the VTEP address is H's end of its link to the outside world: any address of the host will do)
  expect(d.linkinfo?.info_kind).toBe('vxlan');
  expect(d.linkinfo?.info_data).toMatchObject({ id: 4242, local: lab.hostAddr, port: 4789, learning: false, proxy: true });
  expect(d.master).toBe('tsb-ov0000test');
  expect(d.mtu).toBe(1450);
  expect(d.linkinfo?.info_slave_data).toMatchObject({ learning: false });
  expect((await links.list()).find((l) => l.name === 'tsx0000000test')).toEqual({ name: 'tsx0000000test', kind: 'vxlan', master: 'tsb-ov0000test', owned: true });

  const index = (await lab.linkDetails('tsx0000000test')).ifindex;
  await links.ensureVxlan(spec);
  expect((await lab.linkDetails('tsx0000000test')).ifindex).toBe(index);
  await links.ensureVxlan({ ...spec, vni: 4243 });
  const again = await lab.linkDetails('tsx0000000test');
  expect(again.ifindex).not.toBe(index);
  expect(again.linkinfo?.info_data).toMatchObject({ id: 4243 });
  expect(again.master).toBe('tsb-ov0000test');
});

test('remote endpoints: FDB entries on the device and the bridge, neighbour entries; read back, removed', async () => {
  const lab = await Lab.create(cleanup);
  const links = lab.kernel.links;
  await links.ensureBridge({ name: 'tsb-ov0000test', mtu: 1450, addresses: ['10.252.0.1/24'], mac: '02:74:73:00:10:92' });
  await links.ensureVxlan({ name: 'tsx0000000test', vni: 4242, local: lab.hostAddr, port: 4789, mtu: 1450, master: 'tsb-ov0000test' });
  const p1 = { address: '10.252.0.7', mac: '02:42:0a:fc:00:07', vtep: '10.251.7.6' };
  const p2 = { address: '10.252.0.8', mac: '02:42:0a:fc:00:08', vtep: '10.251.7.7' };
  await links.changeRemoteEndpoints('tsx0000000test', { add: [p1, p2], remove: [] });
  expect((await links.remoteEndpoints('tsx0000000test')).sort((a, b) => a.address.localeCompare(b.address))).toEqual([p1, p2]);
  const fdb = JSON.parse(await sh('bridge', ['-n', lab.host.name, '-j', 'fdb', 'show', 'dev', 'tsx0000000test'])) as { mac: string; master?: string; dst?: string; state?: string }[];
  const mine = fdb.filter((f) => f.mac === p1.mac || f.mac === p2.mac);
  // the bridge's: static, behind the VXLAN port; the device's own: permanent, with the remote VTEP
  expect(mine.filter((f) => f.master === 'tsb-ov0000test').map((f) => f.state)).toEqual(['static', 'static']);
  expect(mine.filter((f) => f.dst).map((f) => `${f.mac} ${f.dst} ${f.state}`).sort()).toEqual([`${p1.mac} ${p1.vtep} permanent`, `${p2.mac} ${p2.vtep} permanent`]);
  // adding again changes nothing; removing one (and one that is not there) leaves the other
  await links.changeRemoteEndpoints('tsx0000000test', { add: [p1], remove: [] });
  const ghost = { address: '10.252.0.9', mac: '02:42:0a:fc:00:09', vtep: '10.251.7.8' };
  await links.changeRemoteEndpoints('tsx0000000test', { add: [], remove: [p1, ghost] });
  expect(await links.remoteEndpoints('tsx0000000test')).toEqual([p2]);
  const left = JSON.parse(await sh('bridge', ['-n', lab.host.name, '-j', 'fdb', 'show', 'dev', 'tsx0000000test'])) as { mac: string }[];
  expect(left.filter((f) => f.mac === p1.mac)).toEqual([]);
  // a moved endpoint: same address, another host
  const moved = { ...p2, vtep: '10.251.7.9' };
  await links.changeRemoteEndpoints('tsx0000000test', { add: [moved], remove: [p2] });
  expect(await links.remoteEndpoints('tsx0000000test')).toEqual([moved]);
  await links.deleteLinks(['tsx0000000test', 'tsb-ov0000test']);
  expect((await links.list()).map((l) => l.name)).not.toContain('tsx0000000test');
  expect(await links.remoteEndpoints('tsx0000000test')).toEqual([]);
});
