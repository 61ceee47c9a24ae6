/**
 * Upgrading over a state file an older tsbridge wrote: test/fixtures/state/v1-state.json was
 * written by tsbridge before network kinds (version 1), and v1-ruleset.nft is the ruleset that
 * version rendered for it. Migrated, it must mean the same networks and give the same rules,
 * byte for byte; the original is kept for going back.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Reconciler } from '../../src/driver/reconcile.js';
import { firewallView } from '../../src/driver/realize.js';
import { fullRuleset } from '../../src/kernel/rules/nft.js';
import { KINDS } from '../../src/kinds/registry.js';
import { silentLogger } from '../../src/logging.js';
import { STATE_VERSION, migrateV1, type StateFileV1 } from '../../src/state/disk.js';
import { Db } from '../../src/state/db.js';
import { FileStore, STATE_FILE, parseState } from '../../src/state/store.js';
import { JOURNAL_FILE } from '../../src/state/journal.js';
import { FakeKernel } from '../fakes/kernel.js';
import { modelOf } from '../fakes/nft.js';
import { isTsbridgeError } from '../../src/errors.js';

const FIXTURE = new URL('../fixtures/state/v1-state.json', import.meta.url);
const V1_TEXT = readFileSync(FIXTURE, 'utf8');
const V1 = JSON.parse(V1_TEXT) as StateFileV1;
const V1_RULES = readFileSync(new URL('../fixtures/state/v1-ruleset.nft', import.meta.url), 'utf8');

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tsbridge-migrate-'));
  copyFileSync(FIXTURE, path.join(dir, STATE_FILE));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

test('the fixture is a version 1 document, as tsbridge before kinds wrote it', () => {
  expect(V1.version).toBe(1);
  expect(Object.keys(V1.networks)).toHaveLength(2);
  expect(STATE_VERSION).toBe(3);
});

test('every v1 network becomes a NAT bridge whose settings are its bridge options; the rest is unchanged', async () => {
  const s = await new FileStore(dir).load();
  for (const [id, n] of Object.entries(V1.networks)) {
    expect(s.networks[id]).toEqual({
      id: n.id,
      kind: 'bridge',
      phase: n.phase,
      ipv4: n.ipv4,
      ipv6: n.ipv6,
      enableIpv6: n.enableIpv6,
      internal: n.internal,
      mtu: n.mtu,
      ifacePrefix: n.ifacePrefix,
      settings: {
        bridge: n.bridge,
        bridgeNamedByUser: n.bridgeNamedByUser,
        icc: n.icc,
        masquerade: n.masquerade,
        hostBindingIpv4: n.hostBindingIpv4,
        snatIpv4: n.snatIpv4,
        inhibitIpv4: n.inhibitIpv4,
      },
    });
  }
  expect(s.endpoints).toEqual(V1.endpoints);
  expect(s.pools).toEqual(V1.pools);
  expect(s.ulaBase).toBe(V1.ulaBase);
});

/**
 * A ruleset without the fail-closed mark lines (the head of `forward` and the `forward_done`
 * chain) that tsbridge has added to its skeleton since version 1 (issue 11).
 */
function withoutFailClosed(script: string): string {
  return script
    .replace(/\n {4}[io]ifname [^\n]* meta mark set meta mark [|&] 0x[0-9a-f]+/g, '')
    .replace(/\n {2}chain forward_done \{\n[^}]*\n {2}\}/g, '');
}

test('the migrated state renders the very ruleset version 1 rendered for it (and the fail-closed mark lines added since)', async () => {
  const s = await new FileStore(dir).load();
  const now = fullRuleset(firewallView(s, KINDS));
  expect(withoutFailClosed(now)).toBe(V1_RULES);
  expect(now).toContain('    iifname { "mybr0", "tsb-aaaa0000000" } meta mark set meta mark | 0x01000000\n');
});

test('loading only reads; the first save writes the current version and keeps the original as state.json.v1, once', async () => {
  const store = new FileStore(dir);
  const s = await store.load();
  expect(readdirSync(dir)).toEqual([STATE_FILE]);
  expect(readFileSync(path.join(dir, STATE_FILE), 'utf8')).toBe(V1_TEXT);

  await store.save(s);
  expect(readdirSync(dir).sort()).toEqual([JOURNAL_FILE, STATE_FILE, `${STATE_FILE}.v1`]);
  expect(readFileSync(path.join(dir, `${STATE_FILE}.v1`), 'utf8')).toBe(V1_TEXT);
  expect(JSON.parse(readFileSync(path.join(dir, STATE_FILE), 'utf8')).version).toBe(STATE_VERSION);
  expect(await new FileStore(dir).load()).toEqual(s);

  // A later save, and a later upgrade from another v1 file, never overwrite the first original.
  await store.save(s);
  writeFileSync(path.join(dir, STATE_FILE), V1_TEXT.replace('"mtu": 1400', '"mtu": 1300'));
  const again = new FileStore(dir);
  await again.save(await again.load());
  expect(readFileSync(path.join(dir, `${STATE_FILE}.v1`), 'utf8')).toBe(V1_TEXT);
});

test('upgrading without a reboot: start-up over the kernel version 1 left keeps every link, endpoint and rule', async () => {
  const kernel = new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1' } });
  // What version 1 made: its ruleset, its bridges, and the veths of its endpoints.
  kernel.nft.apply(V1_RULES);
  for (const n of Object.values(V1.networks)) {
    await kernel.links.ensureBridge({ name: n.bridge, mtu: n.mtu, addresses: [], mac: '02:00:00:00:00:aa' });
  }
  for (const e of Object.values(V1.endpoints)) {
    await kernel.links.ensureVeth({ hostName: e.hostVeth, peerName: e.peerVeth, master: V1.networks[e.networkId]!.bridge, mtu: 1500, mac: e.mac, hostAddresses: [] });
    if (e.joined) kernel.peerIntoContainer(e.peerVeth); // in its container, as Docker left it
  }
  const store = new FileStore(dir);
  const db = new Db(store, await store.load());
  const report = await new Reconciler(db, kernel, silentLogger()).startup();
  expect(report).toEqual({ networksRestored: 2, networksDropped: 0, endpointsDropped: 0, vethsRecreated: 0, staleLinksRemoved: [] });
  // every rule version 1 had, and the fail-closed marks applied over them
  expect(kernel.nft.dump()).toEqual(modelOf(fullRuleset(firewallView(db.state, KINDS))));
  expect(modelOf(withoutFailClosed(fullRuleset(firewallView(db.state, KINDS))))).toEqual(modelOf(V1_RULES));
  expect(Object.keys(db.state.endpoints).sort()).toEqual(Object.keys(V1.endpoints).sort());
  expect(existsSync(path.join(dir, `${STATE_FILE}.v1`))).toBe(true);
});

test('migrateV1 is pure', () => {
  const copy = structuredClone(V1);
  migrateV1(copy);
  expect(copy).toEqual(V1);
});

test.each([
  ['a network without its MTU', (d: any) => delete d.networks[Object.keys(d.networks)[0]!].mtu],
  ['a network without internal', (d: any) => delete d.networks[Object.keys(d.networks)[0]!].internal],
  ['an endpoint without its MAC', (d: any) => delete d.endpoints[Object.keys(d.endpoints)[0]!].mac],
])('a version 1 file with %s is refused, never guessed', (_what, spoil) => {
  const doc = JSON.parse(V1_TEXT);
  spoil(doc);
  let error: unknown;
  try {
    parseState(JSON.stringify(doc));
  } catch (e) {
    error = e;
  }
  expect(isTsbridgeError(error, 'STATE')).toBe(true);
});
