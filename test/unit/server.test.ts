/**
 * The Express app over a real Unix socket, called the way dockerd calls it:
 * POST, no Content-Type, empty bodies for argument-less calls. Ends with a
 * replay of every request recorded from Docker 20.10, in file order.
 */
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createApp } from '../../src/server/app.js';
import { silentLogger } from '../../src/logging.js';
import { FakeHost } from '../fakes/host.js';
import { loadRecorded } from '../fakes/recorded.js';
import { firewallAgrees, makeWorld, type World } from '../fakes/world.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: any;
}

/** POST like dockerd: Accept header, no Content-Type; `body` undefined sends nothing. */
function post(socketPath: string, call: string, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { Accept: 'application/vnd.docker.plugins.v1.2+json' };
    if (body !== undefined) headers['Content-Length'] = Buffer.byteLength(body);
    const req = http.request({ socketPath, path: call, method: 'POST', headers, agent: false }, (res) => {
      let raw = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (raw += c));
      res.on('end', () => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(raw);
        } catch {
          parsed = { unparsable: raw };
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
      });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

let dir: string;
let socket: string;
let server: http.Server;
let w: World;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tsbridge-server-'));
  socket = path.join(dir, 'tsbridge.sock');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  // A host with sshd on 22 and the first ephemeral port busy.
  w = makeWorld({ host: new FakeHost({ ephemeral: [49152, 49160], listeners: [{ proto: 'tcp', ip: '', port: 22 }, { proto: 'tcp', ip: '0.0.0.0', port: 49152 }] }) });
  const app = createApp({ driver: w.driver, ipam: w.ipam, log: silentLogger() });
  server = await new Promise<http.Server>((resolve, reject) => {
    const s = app.listen(socket, () => resolve(s));
    s.on('error', reject);
  });
});

afterEach(async () => {
  await new Promise<void>((r) => server.close(() => r()));
});

describe('handshake and plumbing', () => {
  test('Plugin.Activate with an empty body implements both drivers', async () => {
    const r = await post(socket, '/Plugin.Activate');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ Implements: ['NetworkDriver', 'IpamDriver'] });
    expect(r.headers['content-type']).toMatch(/json/);
  });

  test('Plugin.Activate with a zero-length body sent explicitly', async () => {
    expect((await post(socket, '/Plugin.Activate', '')).body).toEqual({ Implements: ['NetworkDriver', 'IpamDriver'] });
  });

  test('capabilities and address spaces', async () => {
    expect((await post(socket, '/NetworkDriver.GetCapabilities')).body).toEqual({ Scope: 'local', ConnectivityScope: 'local' });
    expect((await post(socket, '/IpamDriver.GetCapabilities')).body).toEqual({ RequiresMACAddress: false, RequiresRequestReplay: false });
    const spaces = await post(socket, '/IpamDriver.GetDefaultAddressSpaces');
    expect(spaces.status).toBe(200);
    expect(spaces.body).toEqual({ LocalDefaultAddressSpace: expect.any(String), GlobalDefaultAddressSpace: expect.any(String) });
  });

  test('an unknown call is 404 with Err', async () => {
    const r = await post(socket, '/NetworkDriver.NoSuchThing', '{}');
    expect(r.status).toBe(404);
    expect(r.body.Err).toContain('NoSuchThing');
  });

  test('a malformed JSON body is 500 with the same message under Err and Error', async () => {
    const r = await post(socket, '/NetworkDriver.CreateNetwork', '{"NetworkID": ');
    expect(r.status).toBe(500);
    expect(r.body.Err).toEqual(expect.stringContaining('malformed request'));
    expect(r.body.Error).toBe(r.body.Err);
  });

  test('a JSON body that is not an object is refused', async () => {
    const r = await post(socket, '/NetworkDriver.CreateNetwork', '[1,2]');
    expect(r.status).toBe(500);
    expect(r.body.Err).toBeTruthy();
  });

  test('an IPAM error carries Error (what the IPAM client reads)', async () => {
    const r = await post(socket, '/IpamDriver.RequestAddress', JSON.stringify({ PoolID: 'tsb-v4-10.1.0.0/24', Address: '', Options: null }));
    expect(r.status).toBe(500);
    expect(r.body.Error).toContain('unknown address pool');
  });

  test('a network driver error carries Err', async () => {
    const r = await post(socket, '/NetworkDriver.Join', JSON.stringify({ NetworkID: 'ab'.repeat(32), EndpointID: 'cd'.repeat(32) }));
    expect(r.status).toBe(500);
    expect(r.body.Err).toContain('unknown network');
  });

  test('CreateEndpoint returns the MAC only when Docker gave none', async () => {
    const net = 'ab'.repeat(32);
    const createNet = { NetworkID: net, Options: { 'com.docker.network.generic': {} }, IPv4Data: [{ Pool: '10.77.0.0/24', Gateway: '10.77.0.1/24' }] };
    expect((await post(socket, '/NetworkDriver.CreateNetwork', JSON.stringify(createNet))).status).toBe(200);
    const ep = (id: string, mac: string) => JSON.stringify({ NetworkID: net, EndpointID: id, Interface: { Address: '10.77.0.2/24', AddressIPv6: '', MacAddress: mac } });
    const none = await post(socket, '/NetworkDriver.CreateEndpoint', ep('cd'.repeat(32), ''));
    expect(none.status).toBe(200);
    expect(none.body).toEqual({ Interface: { MacAddress: expect.stringMatching(/^02(:[0-9a-f]{2}){5}$/) } });
    const given = await post(socket, '/NetworkDriver.CreateEndpoint', ep('ef'.repeat(32), '02:42:0a:4d:00:03'));
    expect(given.status).toBe(200);
    expect(given.body.Interface ?? null).toBeNull();
  });
});

describe('replay of every request recorded from Docker 20.10', () => {
  test('every call succeeds, replies have the right shape, and nothing is left afterwards', async () => {
    const recorded = loadRecorded();
    expect(recorded.length).toBeGreaterThan(40);
    /** Pool value → the PoolID we answered; recorded PoolIDs come from another plugin ("pool-10.99.0.0/24"). */
    const ours = new Map<string, string>();
    const mapPoolId = (theirs: string): string => {
      const hit = [...ours.entries()].find(([pool]) => theirs === pool || theirs.endsWith(`-${pool}`));
      if (!hit) throw new Error(`recorded PoolID ${theirs} matches no pool requested so far (${[...ours.keys()].join(', ')})`);
      return hit[1];
    };
    const internalNets = new Set(
      recorded.filter((r) => r.call === '/NetworkDriver.CreateNetwork' && r.request?.Options?.['com.docker.network.internal'] === true).map((r) => r.request!.NetworkID as string),
    );
    expect(internalNets.size).toBe(1);
    let joins = 0;
    const published: string[][] = [];

    for (const rec of recorded) {
      const req = rec.request === null ? undefined : structuredClone(rec.request);
      if (req && typeof req.PoolID === 'string') req.PoolID = mapPoolId(req.PoolID);
      const r = await post(socket, rec.call, req === undefined ? undefined : JSON.stringify(req));
      const where = `line ${rec.line + 1} ${rec.call}: ${JSON.stringify(r.body)}`;
      expect({ where, status: r.status }).toEqual({ where, status: 200 });
      expect({ where, Err: r.body.Err, Error: r.body.Error }).toEqual({ where, Err: undefined, Error: undefined });

      switch (rec.call) {
        case '/IpamDriver.RequestPool':
          expect(r.body.Pool).toBe(req!.Pool);
          ours.set(r.body.Pool, r.body.PoolID);
          break;
        case '/IpamDriver.RequestAddress':
          expect(r.body.Address).toMatch(/\/24$/);
          if (req!.Address) expect(r.body.Address).toBe(`${req!.Address}/24`);
          break;
        case '/NetworkDriver.CreateEndpoint':
          if (req!.Interface.MacAddress === '') expect({ where, body: r.body }).toEqual({ where, body: { Interface: { MacAddress: expect.stringMatching(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/) } } });
          else expect(r.body.Interface ?? null).toBeNull();
          break;
        case '/NetworkDriver.Join': {
          joins++;
          expect(r.body.InterfaceName).toEqual({ SrcName: expect.stringMatching(/^tsc[0-9a-f]{12}$/), DstPrefix: 'eth' });
          if (internalNets.has(req!.NetworkID)) expect(r.body.Gateway).toBeUndefined();
          else expect({ where, Gateway: r.body.Gateway }).toEqual({ where, Gateway: expect.stringMatching(/^\d+\.\d+\.\d+\.1$/) });
          const v6 = recorded.find((x) => x.call === '/NetworkDriver.CreateEndpoint' && x.request!.EndpointID === req!.EndpointID)!.request!.Interface.AddressIPv6;
          if (v6) expect(r.body.GatewayIPv6).toBe('fd00:97::1');
          else expect(r.body.GatewayIPv6).toBeUndefined();
          break;
        }
        case '/NetworkDriver.ProgramExternalConnectivity':
          published.push(w.kernel.snapshot().firewall.ports);
          expect(firewallAgrees(w).kernel).toEqual(firewallAgrees(w).state);
          break;
        case '/NetworkDriver.EndpointOperInfo':
          expect(r.body).toHaveProperty('Value');
          break;
      }
    }
    expect(joins).toBe(3);

    // -p 8080:80 -p 127.0.0.1:5353:53/udp -p 7000-7001:7000-7001 -p 9000 (from the ephemeral range, 49152 being busy)
    expect(published[0]).toEqual([
      'tcp 0.0.0.0:49153 -> 10.99.0.2:9000', 'tcp 0.0.0.0:7000 -> 10.99.0.2:7000', 'tcp 0.0.0.0:7001 -> 10.99.0.2:7001', 'tcp 0.0.0.0:8080 -> 10.99.0.2:80', 'udp 127.0.0.1:5353 -> 10.99.0.2:53',
    ].sort());
    expect(published[1]).toEqual([]);

    await w.driver.settle();
    const snap = w.kernel.snapshot();
    expect(snap.bridges).toEqual([]);
    expect(snap.veths).toEqual([]);
    expect(snap.firewall).toEqual({ tables: false, bridges: [], ports: [], noIcc: [], guarded: [] });
    expect(snap.nft).toEqual({});
    expect(w.db.state.networks).toEqual({});
    expect(w.db.state.endpoints).toEqual({});
    expect(w.db.state.pools).toEqual({});
    expect(w.store.saved).toEqual(w.db.state);
  });
});
