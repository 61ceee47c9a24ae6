/** Key names and records in etcd: parsed strictly, written in one canonical form. */
import { encodeAddress, encodeConfig, encodeHost, Keys, parseAddress, parseConfig, parseHost, parseMember } from '../../../src/cluster/keys.js';
import { diffPeers, remotePeers } from '../../../src/cluster/peers.js';
import type { KeyValue } from '../../../src/cluster/store.js';

const keys = new Keys('/custom');
const H = '0123456789abcdef';

test('key names live under the prefix and the schema version, and parse back', () => {
  expect(keys.root).toBe('/custom/v1/');
  expect(keys.host(H)).toBe(`/custom/v1/hosts/${H}`);
  expect(keys.address('blue', '10.0.0.2')).toBe('/custom/v1/overlays/blue/addresses/10.0.0.2');
  expect(keys.parse(keys.host(H))).toEqual({ kind: 'host', host: H });
  expect(keys.parse(keys.vni(4096))).toEqual({ kind: 'vni', vni: 4096 });
  expect(keys.parse(keys.config('blue'))).toEqual({ kind: 'config', overlay: 'blue' });
  expect(keys.parse(keys.member('blue', H))).toEqual({ kind: 'member', overlay: 'blue', host: H });
  expect(keys.parse(keys.address('blue', '10.0.0.2'))).toEqual({ kind: 'address', overlay: 'blue', address: '10.0.0.2' });
  for (const bad of ['/custom/v2/hosts/' + H, '/custom/v1/hosts/xyz', '/custom/v1/overlays/bl ue/config', '/custom/v1/overlays/blue/members/short', '/other/v1/hosts/' + H]) {
    expect(keys.parse(bad)).toBeUndefined();
  }
});

test('records round-trip; anything malformed reads as absent', () => {
  const host = { vtep: '192.168.1.5', hostname: 'a', since: '2024-01-01T00:00:00.000Z' };
  expect(parseHost(encodeHost(host))).toEqual(host);
  const cfg = { vni: 4096, subnet: '10.1.0.0/16', gateway: '10.1.0.1', gatewayMac: '02:74:73:00:10:00' };
  expect(parseConfig(encodeConfig(cfg))).toEqual(cfg);
  const addr = { host: H, mac: '02:42:0a:01:00:02', endpoint: 'e' };
  expect(parseAddress(encodeAddress(addr))).toEqual(addr);
  expect(parseMember('{"vtep":"fd00::1"}')).toEqual({ vtep: 'fd00::1' });
  for (const bad of ['', 'null', '[]', '{"vtep":"nope","hostname":"a","since":"x"}']) expect(parseHost(bad)).toBeUndefined();
  expect(parseConfig(encodeConfig({ ...cfg, vni: 0 }))).toBeUndefined();
  expect(parseConfig(encodeConfig({ ...cfg, gatewayMac: 'zz' }))).toBeUndefined();
  expect(parseAddress(encodeAddress({ ...addr, host: 'nothex' }))).toBeUndefined();
  expect(parseAddress(encodeAddress({ ...addr, mac: '02:42' }))).toBeUndefined();
});

test('peers: only endpoints with a MAC on registered hosts other than this one; diffs by address, MAC and VTEP', () => {
  const k = new Keys();
  const other = 'ffffffffffffffff';
  let rev = 1;
  const kv = (key: string, value: string): KeyValue => ({ key, value, createRevision: rev, modRevision: rev++, lease: '0' });
  const snap = [
    kv(k.host(H), encodeHost({ vtep: '192.168.1.1', hostname: 'me', since: '' })),
    kv(k.host(other), encodeHost({ vtep: '192.168.1.2', hostname: 'other', since: '' })),
    kv(k.address('blue', '10.0.0.2'), encodeAddress({ host: H, mac: '02:00:00:00:00:02', endpoint: '' })),
    kv(k.address('blue', '10.0.0.10'), encodeAddress({ host: other, mac: '02:00:00:00:00:0a', endpoint: '' })),
    kv(k.address('blue', '10.0.0.9'), encodeAddress({ host: other, mac: '02:00:00:00:00:09', endpoint: '' })),
    kv(k.address('blue', '10.0.0.3'), encodeAddress({ host: other, mac: '', endpoint: '' })),
    kv(k.address('blue', '10.0.0.4'), encodeAddress({ host: 'eeeeeeeeeeeeeeee', mac: '02:00:00:00:00:04', endpoint: '' })),
    kv(k.address('red', '10.0.0.5'), encodeAddress({ host: other, mac: '02:00:00:00:00:05', endpoint: '' })),
    kv(k.address('blue', '10.0.0.6'), 'garbage'),
  ];
  const peers = remotePeers(snap, k, 'blue', H);
  expect(peers.map((p) => p.address)).toEqual(['10.0.0.9', '10.0.0.10']);
  expect(peers[0]).toEqual({ address: '10.0.0.9', mac: '02:00:00:00:00:09', vtep: '192.168.1.2', host: other });
  const moved = [{ ...peers[0]!, vtep: '192.168.1.3' }, peers[1]!];
  expect(diffPeers(peers, moved)).toEqual({ add: [moved[0]], remove: [peers[0]] });
  expect(diffPeers(peers, peers)).toEqual({ add: [], remove: [] });
});
