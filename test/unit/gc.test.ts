/**
 * `tsbridge gc` and the pieces under it, in one process: a fake Engine API on a Unix socket
 * (Docker's JSON as it answers `GET /networks` and `GET /networks/ID`), the real app on another
 * with the admin call, the real command between them.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCli } from '../../src/cli.js';
import { DockerClient, DockerUnreachable, type DockerEngine } from '../../src/docker/client.js';
import { observe, parseObservation, readEndpoints, readNetwork } from '../../src/docker/observe.js';
import { Convergence, convergeOnce } from '../../src/driver/converge.js';
import { DriverService } from '../../src/driver/service.js';
import { IpamService } from '../../src/ipam/service.js';
import { silentLogger } from '../../src/logging.js';
import { createApp } from '../../src/server/app.js';
import { errorOf, EP_1, makeWorld, NET_A, networkSpec, endpointSpec, portReq, type World } from '../fakes/world.js';
import { serveOnSocket, socketRequest } from '../lib/http.js';

/** Docker's predefined networks as `GET /networks` lists them (Docker 20.10's fields that matter). */
const HOST = { Name: 'host', Id: 'f'.repeat(64), Driver: 'host', IPAM: { Driver: 'default', Options: null, Config: [] }, Containers: {} };
const NONE = { Name: 'none', Id: 'e'.repeat(64), Driver: 'null', IPAM: { Driver: 'default', Options: null, Config: [] }, Containers: {} };
const BRIDGE = { Name: 'bridge', Id: 'd'.repeat(64), Driver: 'bridge', IPAM: { Driver: 'default', Options: null, Config: [{ Subnet: '172.17.0.0/16', Gateway: '172.17.0.1' }] }, Containers: {} };
/** Network A as Docker lists it while it has it. */
const A = {
  Name: 'web',
  Id: NET_A,
  Driver: 'tsbridge',
  IPAM: { Driver: 'tsbridge', Options: {}, Config: [{ Subnet: '10.10.0.0/24', Gateway: '10.10.0.1', AuxiliaryAddresses: { router: '10.10.0.254' } }] },
  Containers: {},
};
const A_INSPECT = { ...A, Containers: { ['c'.repeat(64)]: { Name: 'shop', EndpointID: EP_1, MacAddress: '02:42:0a:0a:00:02', IPv4Address: '10.10.0.2/24', IPv6Address: '' } } };

class FakeEngine implements DockerEngine {
  list: unknown[] = [HOST, NONE, BRIDGE];
  inspects = new Map<string, unknown>();
  asked: string[] = [];
  async listNetworks() {
    this.asked.push('list');
    return structuredClone(this.list);
  }
  async inspectNetwork(id: string) {
    this.asked.push(`inspect ${id.slice(0, 4)}`);
    return this.inspects.has(id) ? structuredClone(this.inspects.get(id)) : null;
  }
}

describe('reading Docker', () => {
  test('the list and the inspects of networks that may be tsbridge\'s or use its IPAM, as plain data', async () => {
    const e = new FakeEngine();
    e.list.push(A, { ...BRIDGE, Name: 'other', Id: 'b'.repeat(64), IPAM: { Driver: 'tsbridge', Config: [{ Subnet: '10.40.0.0/24', Gateway: '10.40.0.1' }] } });
    e.inspects.set(NET_A, A_INSPECT);
    e.inspects.set('b'.repeat(64), { Containers: { ['ep-' + EP_1]: { EndpointID: '9'.repeat(64), IPv4Address: '10.40.0.5/24', IPv6Address: 'fd00:40::5/64' } } });
    const obs = await observe(e);
    expect(e.asked.sort()).toEqual(['inspect aaaa', 'inspect bbbb', 'list']);
    expect(obs.networks.find((n) => n.id === NET_A)).toEqual({
      id: NET_A,
      driver: 'tsbridge',
      ipamDriver: 'tsbridge',
      subnets: [{ subnet: '10.10.0.0/24', gateway: '10.10.0.1', aux: ['10.10.0.254'] }],
      endpoints: [{ id: EP_1, ipv4: '10.10.0.2', ipv6: null }],
    });
    expect(obs.networks.find((n) => n.id === 'b'.repeat(64))!.endpoints).toEqual([{ id: '9'.repeat(64), ipv4: '10.40.0.5', ipv6: 'fd00:40::5' }]);
    expect(obs.networks.find((n) => n.driver === 'bridge' && n.ipamDriver === 'default')!.endpoints).toBeNull(); // not asked
  });

  test('a network gone between the list and its inspect is left out', async () => {
    const e = new FakeEngine();
    e.list.push(A);
    expect((await observe(e)).networks.map((n) => n.id)).not.toContain(NET_A);
  });

  test("an answer without Docker's predefined networks is not trusted", async () => {
    const e = new FakeEngine();
    e.list = [];
    await expect(observe(e)).rejects.toThrow(DockerUnreachable);
    e.list = [A];
    await expect(observe(e)).rejects.toThrow(/predefined host and none/);
  });

  test('odd entries: a subnet Docker could not parse is skipped; endpoints without an ID too; a network without Id is refused', () => {
    expect(readNetwork({ Id: 'x', Driver: 'd', IPAM: { Driver: 'i', Config: [{ Subnet: 'nonsense' }, { Subnet: '10.1.0.0/16' }] } }).subnets).toEqual([{ subnet: '10.1.0.0/16', gateway: null, aux: [] }]);
    expect(readEndpoints({ Containers: { a: { EndpointID: '' }, b: 'x', c: { EndpointID: 'e'.repeat(64), IPv4Address: 'junk' } } })).toEqual([{ id: 'e'.repeat(64), ipv4: null, ipv6: null }]);
    expect(() => readNetwork({ Name: 'x' })).toThrow(DockerUnreachable);
  });

  test('the Engine API client: GET /networks and GET /networks/ID over the socket; 404 is null', async () => {
    const seen: string[] = [];
    const srv = await serveOnSocket((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      if (req.url === '/networks') res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify([HOST, NONE, A]));
      else if (req.url === `/networks/${NET_A}`) res.writeHead(200).end(JSON.stringify(A_INSPECT));
      else res.writeHead(404).end('{"message":"not found"}');
    });
    try {
      const c = new DockerClient(srv.socket);
      expect((await observe(c)).networks.map((n) => n.id)).toEqual([HOST.Id, NONE.Id, NET_A]);
      expect(await c.inspectNetwork('ab'.repeat(32))).toBeNull();
      expect(seen).toEqual(['GET /networks', `GET /networks/${NET_A}`, `GET /networks/${'ab'.repeat(32)}`]);
    } finally {
      await srv.close();
    }
  });
});

describe('the admin call body', () => {
  const ok = { networks: [{ id: 'f'.repeat(64), driver: 'host', ipamDriver: 'default', subnets: [], endpoints: null }] };
  test('a good observation passes, canonicalised', () => {
    const o = parseObservation({ networks: [...ok.networks, { id: NET_A, driver: 'tsbridge', ipamDriver: 'tsbridge', subnets: [{ subnet: 'FD00:10::/64', gateway: 'FD00:10:0::1', aux: [] }], endpoints: [{ id: EP_1, ipv4: null, ipv6: 'fd00:10:0:0::2' }] }] });
    expect(o.networks[1]!.subnets[0]).toEqual({ subnet: 'fd00:10::/64', gateway: 'fd00:10::1', aux: [] });
    expect(o.networks[1]!.endpoints).toEqual([{ id: EP_1, ipv4: null, ipv6: 'fd00:10::2' }]);
  });

  test.each([
    ['not an object', null],
    ['no list', { networks: 3 }],
    ['a network without id', { networks: [{ driver: 'x', ipamDriver: 'y', subnets: [] }] }],
    ['a subnet that is not one', { networks: [{ ...ok.networks[0], subnets: [{ subnet: '10.0.0.1/8' }] }] }],
    ['an endpoint ID that is not hex', { networks: [{ ...ok.networks[0], endpoints: [{ id: '../x' }] }] }],
    ['an address that is not one', { networks: [{ ...ok.networks[0], endpoints: [{ id: EP_1, ipv4: 'x' }] }] }],
    ['no predefined network (not Docker\'s list)', { networks: [] }],
  ])('%s is refused', (_what, body) => {
    expect(errorOf(() => parseObservation(body)).code).toBe('BAD_REQUEST');
  });
});

describe('tsbridge gc against the real app', () => {
  let w: World;
  let clock: { at: number; m: number; wall(): number; mono(): number };
  let engine: FakeEngine;
  let app: Awaited<ReturnType<typeof serveOnSocket>>;
  let conv: Convergence;
  let dir: string;

  beforeEach(async () => {
    w = makeWorld();
    clock = { at: 1_700_000_000_000, m: 0, wall() { return this.at; }, mono() { return this.m; } };
    const now = () => clock.at;
    w.driver = new DriverService(w.db, w.kernel, w.host, silentLogger(), w.runtime, now);
    w.ipam = new IpamService(w.db, w.host, () => [], undefined, now);
    const pool = await w.ipam.requestPool({ pool: '10.10.0.0/24', subPool: '', v6: false });
    await w.ipam.requestAddress(pool.poolId, '', 'gateway');
    await w.driver.createNetwork(networkSpec());
    await w.driver.createEndpoint(endpointSpec({ ipv4: await w.ipam.requestAddress(pool.poolId, '', 'endpoint') }));
    await w.driver.join(NET_A, EP_1);
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
    clock.at += 3_600_000;
    clock.m += 3_600_000;
    conv = new Convergence(w.driver, silentLogger(), { graceMs: 60_000, confirmMs: 2_000 }, clock);
    app = await serveOnSocket(createApp({ driver: w.driver, ipam: w.ipam, log: silentLogger(), convergence: conv }));
    engine = new FakeEngine();
    dir = mkdtempSync(path.join(tmpdir(), 'tsbridge-gc-'));
  });
  afterEach(async () => {
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function gc(...args: string[]) {
    let out = '';
    let err = '';
    const slept: number[] = [];
    const code = await runCli(['gc', '--socket', app.socket, '--state-dir', dir, ...args], {
      out: (s) => (out += s),
      err: (s) => (err += s),
      env: {},
      dockerEngine: engine,
      sleep: async (ms) => {
        slept.push(ms);
        clock.m += ms;
        clock.at += ms;
      },
    });
    return { code, out, err, slept };
  }

  test('Docker removed the network while the plugin was down: gc removes it, asking Docker twice, 2 s apart', async () => {
    const r = await gc();
    expect(r).toMatchObject({ code: 0, err: '', slept: [2000] });
    expect(r.out).toBe(
      [
        'removed (Docker no longer has them):',
        `  network   ${NET_A.slice(0, 12)}   (its bridge, rules, endpoints and their published ports)`,
        '  pool      tsb-v4-10.10.0.0/24',
        '',
      ].join('\n'),
    );
    expect(engine.asked.filter((a) => a === 'list')).toHaveLength(2);
    expect(w.db.state).toMatchObject({ networks: {}, endpoints: {}, pools: {} });
    expect(w.kernel.snapshot()).toMatchObject({ bridges: [], veths: [], firewall: { tables: false, ports: [] } });
  });

  test('a network Docker still has: nothing removed, one look at Docker', async () => {
    engine.list.push(A);
    engine.inspects.set(NET_A, A_INSPECT);
    const r = await gc();
    expect(r).toMatchObject({ code: 0, slept: [], out: 'nothing removed: tsbridge holds nothing Docker lacks\n' });
    expect(Object.keys(w.db.state.networks)).toEqual([NET_A]);
  });

  test('--dry-run --json: what would go, nothing changed', async () => {
    const before = structuredClone(w.db.state);
    const r = await gc('--dry-run', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ dryRun: true, removed: { networks: [NET_A], pools: ['tsb-v4-10.10.0.0/24'] }, graceMs: 60_000 });
    expect(w.db.state).toEqual(before);
  });

  test('young records are left alone and said so', async () => {
    await w.ipam.requestPool({ pool: '10.50.0.0/24', subPool: '', v6: false });
    const r = await gc();
    expect(r.out).toContain('left alone, younger than 60 s (Docker may be creating them; run again later):\n  pool      tsb-v4-10.50.0.0/24\n');
  });

  test('Docker or the plugin not answering: exit 1 and why', async () => {
    engine.listNetworks = async () => {
      throw new DockerUnreachable('no Docker socket at /nowhere');
    };
    expect(await gc()).toMatchObject({ code: 1, err: 'tsbridge gc: cannot ask Docker: no Docker socket at /nowhere\n' });
    engine = new FakeEngine();
    let err = '';
    const code = await runCli(['gc', '--socket', path.join(dir, 'none.sock'), '--state-dir', dir], { out: () => undefined, err: (s) => (err += s), env: {}, dockerEngine: engine });
    expect(code).toBe(1);
    expect(err).toMatch(/^tsbridge gc: cannot ask the plugin: no socket at .*none\.sock/);
  });

  test('the admin call refuses a body that is not an observation, and changes nothing', async () => {
    const before = structuredClone(w.db.state);
    const r = await socketRequest(app.socket, { path: '/Tsbridge.Converge', body: JSON.stringify({ observation: { networks: [] } }) });
    expect(r.status).toBe(500);
    expect(r.body.Err).toMatch(/observation: it lacks Docker's predefined/);
    expect((await socketRequest(app.socket, { path: '/Tsbridge.Converge', body: JSON.stringify({ observation: { networks: [] }, dryRun: 'yes' }) })).body.Err).toMatch(/dryRun must be true or false/);
    expect(w.db.state).toEqual(before);
  });

  test('convergeOnce (the sweep): two looks, removal; Docker not answering changes nothing', async () => {
    const slept: number[] = [];
    const sleep = async (ms: number) => {
      slept.push(ms);
      clock.m += ms;
    };
    const down = new FakeEngine();
    down.listNetworks = async () => {
      throw new DockerUnreachable('nothing listens on /var/run/docker.sock');
    };
    expect(await convergeOnce(down, conv, sleep)).toEqual({ report: null, unreachable: 'nothing listens on /var/run/docker.sock' });
    expect(Object.keys(w.db.state.networks)).toEqual([NET_A]);
    const r = await convergeOnce(engine, conv, sleep);
    expect(slept).toEqual([2000]);
    expect(r.report!.removed.networks).toEqual([NET_A]);
  });
});
