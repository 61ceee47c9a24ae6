/**
 * State persistence and serialisation: the atomic FileStore, the FIFO mutex,
 * and Db.tx putting the in-memory state back when an operation throws.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isTsbridgeError } from '../../src/errors.js';
import { Db } from '../../src/state/db.js';
import { Mutex } from '../../src/state/mutex.js';
import { FileStore, MemoryStore, STATE_FILE, parseState } from '../../src/state/store.js';
import { STATE_VERSION, encodeState } from '../../src/state/disk.js';
import { emptyState, type State } from '../../src/state/types.js';

function sampleState(): State {
  const s = emptyState();
  s.networks.n1 = {
    id: 'n1', kind: 'bridge', phase: 'ready', mtu: 1400, internal: false, ifacePrefix: 'eth', enableIpv6: true,
    ipv4: [{ subnet: '10.9.0.0/24', gateway: '10.9.0.1/24' }], ipv6: [{ subnet: 'fd00:9::/64', gateway: 'fd00:9::1/64' }],
    settings: { bridge: 'tsb-n1', bridgeNamedByUser: false, icc: false, masquerade: true, hostBindingIpv4: '', snatIpv4: '', inhibitIpv4: false },
  };
  s.endpoints.e1 = {
    id: 'e1', networkId: 'n1', phase: 'ready', hostVeth: 'tsv1', peerVeth: 'tsc1', mac: '02:00:00:00:00:01',
    ipv4: '10.9.0.2/24', ipv6: null, joined: true, ports: [{ proto: 'udp', hostIp: '127.0.0.1', hostPort: 5353, containerPort: 53 }],
  };
  s.pools['tsb-v4-10.9.0.0/24'] = { id: 'tsb-v4-10.9.0.0/24', family: 4, pool: '10.9.0.0/24', subPool: null, auto: true, allocated: { '10.9.0.1': 'gateway' }, cursor: null };
  s.ulaBase = 'fd12:3456:789a::/48';
  return s;
}

async function stateErrorOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isTsbridgeError(e, 'STATE')) return e.message;
    throw e;
  }
  throw new Error('expected a STATE error');
}

describe('FileStore', () => {
  let dir: string;
  let store: FileStore;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'tsbridge-state-'));
    store = new FileStore(dir);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const file = () => path.join(dir, STATE_FILE);
  const tmp = () => path.join(dir, `.${STATE_FILE}.tmp`);

  test('a missing file is an empty state', async () => {
    expect(await store.load()).toEqual(emptyState());
    expect(await new FileStore(path.join(dir, 'not', 'yet')).load()).toEqual(emptyState());
  });

  test('save then load gives the same state back', async () => {
    await store.save(sampleState());
    expect(await store.load()).toEqual(sampleState());
    expect(await new FileStore(dir).load()).toEqual(sampleState());
  });

  test('save creates the directory, leaves no temp file and keeps the file private', async () => {
    const deep = new FileStore(path.join(dir, 'a', 'b'));
    await deep.save(sampleState());
    expect(existsSync(path.join(dir, 'a', 'b', STATE_FILE))).toBe(true);
    expect(existsSync(path.join(dir, 'a', 'b', `.${STATE_FILE}.tmp`))).toBe(false);
    expect(statSync(path.join(dir, 'a', 'b', STATE_FILE)).mode & 0o077).toBe(0);
  });

  test('a temp file left by a crash is ignored on load and replaced on save', async () => {
    await store.save(sampleState());
    writeFileSync(tmp(), '{"version": 2, "netw'); // torn write of a newer state
    expect(await store.load()).toEqual(sampleState());
    const next = sampleState();
    delete next.endpoints.e1;
    await store.save(next);
    expect(existsSync(tmp())).toBe(false);
    expect(await store.load()).toEqual(next);
  });

  test('a temp file alone (crash before the first rename) is an empty state', async () => {
    writeFileSync(tmp(), JSON.stringify(encodeState(sampleState())));
    expect(await store.load()).toEqual(emptyState());
  });

  test('corrupt JSON is a STATE error and the file is kept untouched', async () => {
    const garbage = '{"version": 2, "networks": {';
    writeFileSync(file(), garbage);
    const msg = await stateErrorOf(store.load());
    expect(msg).toContain(file());
    expect(readFileSync(file(), 'utf8')).toBe(garbage);
  });

  test.each([
    ['a version this tsbridge does not know', { ...emptyState(), version: 3 }],
    ['no version', { networks: {}, endpoints: {}, pools: {} }],
    ['networks missing', { version: 2, endpoints: {}, pools: {} }],
    ['pools as a list', { version: 2, networks: {}, endpoints: {}, pools: [] }],
    ['a version 1 file with pools as a list', { version: 1, networks: {}, endpoints: {}, pools: [] }],
    ['a network without a kind', { ...encodeState(sampleState()), networks: { n1: { ...encodeState(sampleState()).networks.n1, kind: undefined } } }],
    ['a network filed under another ID', { ...encodeState(sampleState()), networks: { n2: encodeState(sampleState()).networks.n1 } }],
    ['an endpoint without its link names', { ...encodeState(sampleState()), endpoints: { e1: { ...encodeState(sampleState()).endpoints.e1, hostVeth: undefined } } }],
    ['JSON null', null],
    ['a list', []],
  ])('%s is a STATE error, never an empty state', async (_what, doc) => {
    const text = JSON.stringify(doc);
    writeFileSync(file(), text);
    await stateErrorOf(store.load());
    expect(readFileSync(file(), 'utf8')).toBe(text);
  });

  test('an unreadable state file (here: a directory) is a STATE error', async () => {
    mkdirSync(file());
    await stateErrorOf(store.load());
  });

  test('a state without ulaBase (older file) loads with ulaBase null', () => {
    const { ulaBase: _drop, ...old } = encodeState(sampleState());
    expect(parseState(JSON.stringify(old)).ulaBase).toBeNull();
  });

  test('what is saved is the current version\'s document', async () => {
    await store.save(sampleState());
    const doc = JSON.parse(readFileSync(file(), 'utf8'));
    expect(doc.version).toBe(STATE_VERSION);
    expect(doc).toEqual(encodeState(sampleState(), doc.seq));
    expect(readFileSync(path.join(dir, 'state.journal'), 'utf8')).toBe(''); // the snapshot holds it all
  });
});

describe('Mutex', () => {
  test('runs in FIFO order, one at a time, whatever each takes', async () => {
    const m = new Mutex();
    const order: number[] = [];
    let running = 0;
    let most = 0;
    const delays = [30, 0, 10, 0, 5, 0];
    await Promise.all(
      delays.map((ms, i) =>
        m.run(async () => {
          running++;
          most = Math.max(most, running);
          await new Promise((r) => setTimeout(r, ms));
          order.push(i);
          running--;
        }),
      ),
    );
    expect(order).toEqual([0, 1, 2, 3, 4, 5]);
    expect(most).toBe(1);
  });

  test('a failing run releases the lock and returns its error to its caller only', async () => {
    const m = new Mutex();
    const a = m.run(async () => {
      throw new Error('a failed');
    });
    const b = m.run(async () => 'b');
    await expect(a).rejects.toThrow('a failed');
    await expect(b).resolves.toBe('b');
  });
});

describe('Db', () => {
  test('tx keeps changes when it succeeds', async () => {
    const db = new Db(new MemoryStore(), emptyState());
    await db.tx(async (s) => {
      s.ulaBase = 'fd00:1::/48';
    });
    expect(db.state.ulaBase).toBe('fd00:1::/48');
  });

  test('tx puts the in-memory state back as it was when the operation throws', async () => {
    const store = new MemoryStore();
    const db = new Db(store, sampleState());
    await expect(
      db.tx(async (s) => {
        delete s.networks.n1;
        s.endpoints.e1!.ports = [];
        s.pools['tsb-v4-10.9.0.0/24']!.allocated['10.9.0.2'] = 'endpoint';
        throw new Error('step 3 failed');
      }),
    ).rejects.toThrow('step 3 failed');
    expect(db.state).toEqual(sampleState());
    expect(store.saves).toBe(0);
  });

  test('tx runs one operation at a time: a read-modify-write across an await is never lost', async () => {
    const db = new Db(new MemoryStore(), emptyState());
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        db.tx(async (s) => {
          const n = Object.keys(s.pools).length;
          await new Promise((r) => setTimeout(r, i % 3));
          s.pools[`p${n}`] = { id: `p${n}`, family: 4, pool: '10.0.0.0/24', subPool: null, auto: false, allocated: {}, cursor: null };
        }),
      ),
    );
    expect(Object.keys(db.state.pools)).toHaveLength(50);
  });

  test('save writes the current state; a failing save is a STATE error and rolls the tx back', async () => {
    const store = new MemoryStore();
    const db = new Db(store, emptyState());
    await db.tx(async (s) => {
      s.ulaBase = 'fd00:1::/48';
      await db.save();
    });
    expect(store.saved?.ulaBase).toBe('fd00:1::/48');
    store.failNextSave = true;
    await stateErrorOf(
      db.tx(async (s) => {
        s.ulaBase = 'fd00:2::/48';
        await db.save();
      }),
    );
    expect(db.state.ulaBase).toBe('fd00:1::/48');
    expect(store.saved?.ulaBase).toBe('fd00:1::/48');
  });

  test('drain waits for operations in flight; busy counts them', async () => {
    const db = new Db(new MemoryStore(), emptyState());
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let done = false;
    const op = db.tx(async () => {
      await gate;
      done = true;
    });
    expect(db.busy).toBe(1);
    const drained = db.drain().then(() => done);
    release();
    expect(await drained).toBe(true);
    await op;
    expect(db.busy).toBe(0);
  });
});

describe('Db.addresses: a pool changed in place, address by address', () => {
  const P = 'tsb-v4-10.9.0.0/24';
  /** A pool holding `n` more addresses, with allocation times, already on the store. */
  async function bigPool(n: number): Promise<{ db: Db; store: MemoryStore }> {
    const s = sampleState();
    const pool = s.pools[P]!;
    pool.pool = '10.9.0.0/16';
    pool.since = {};
    for (let i = 0; i < n; i++) {
      const a = `10.9.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`;
      pool.allocated[a] = 'endpoint';
      pool.since[a] = 1000 + i;
    }
    const store = new MemoryStore();
    const db = new Db(store, s);
    await db.tx(async () => db.save()); // nothing changed: nothing written
    store.saved = structuredClone(s);
    return { db, store };
  }

  test('the save writes the addresses named and the cursor, whatever the pool holds', async () => {
    for (const n of [0, 1000]) {
      const { db, store } = await bigPool(n);
      await db.tx(async () => {
        db.addresses(P, { set: { '10.9.200.7': 'endpoint' }, since: { '10.9.200.7': 5 }, cursor: '10.9.200.7' });
        await db.save({ sync: false });
      });
      expect(store.changes.at(-1)).toEqual([{ t: 'addr', id: P, set: { '10.9.200.7': 'endpoint' }, del: [], cursor: '10.9.200.7', since: { '10.9.200.7': 5 } }]);
      await db.tx(async () => {
        db.addresses(P, { del: ['10.9.200.7'] });
        await db.save();
      });
      expect(store.changes.at(-1)).toEqual([{ t: 'addr', id: P, set: {}, del: ['10.9.200.7'], cursor: '10.9.200.7', since: {} }]);
      expect(db.state.pools[P]!.allocated['10.9.200.7']).toBeUndefined();
      expect(db.state.pools[P]!.since!['10.9.200.7']).toBeUndefined();
    }
  });

  test('a failing operation puts the addresses back as they were, and commits that when it had saved', async () => {
    const { db, store } = await bigPool(3);
    const before = structuredClone(db.state);
    await expect(
      db.tx(async () => {
        db.addresses(P, { set: { '10.9.0.9': 'endpoint' }, since: { '10.9.0.9': 7 }, cursor: '10.9.0.9' });
        db.addresses(P, { del: ['10.9.1.1'] });
        await db.save();
        db.addresses(P, { set: { '10.9.1.1': 'aux' } });
        throw new Error('later step failed');
      }),
    ).rejects.toThrow('later step failed');
    expect(db.state).toEqual(before);
    // What was saved is put back on the store too (MemoryStore checks the journal against the state).
    expect(store.changes.at(-1)).toEqual([{ t: 'addr', id: P, set: { '10.9.1.1': 'endpoint' }, del: ['10.9.0.9'], cursor: null, since: { '10.9.1.1': 1000 } }]);
  });

  test('the same pool changed as a whole after in place: the rollback still finds it as it was', async () => {
    const { db } = await bigPool(2);
    const before = structuredClone(db.state);
    await expect(
      db.tx(async (s) => {
        db.addresses(P, { set: { '10.9.0.9': 'endpoint' }, cursor: '10.9.0.9' });
        s.pools[P]!.subPool = '10.9.0.0/24'; // the whole record, through the tracked state
        db.addresses(P, { del: ['10.9.1.1'] });
        throw new Error('failed');
      }),
    ).rejects.toThrow('failed');
    expect(db.state).toEqual(before);
  });

  test('outside a transaction it refuses', () => {
    const db = new Db(new MemoryStore(), sampleState());
    expect(() => db.addresses(P, { del: ['10.9.0.1'] })).toThrow(/outside a transaction/);
  });
});
