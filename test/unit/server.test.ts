/**
 * The Express app over a real Unix socket, called the way dockerd calls it:
 * POST, no Content-Type, empty bodies for argument-less calls. Ends with a
 * replay of every request recorded from Docker 20.10, in file order.
 */
import http from 'node:http';
import { PassThrough } from 'node:stream';
import winston from 'winston';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createApp } from '../../src/server/app.js';
import { silentLogger } from '../../src/logging.js';
import { FakeHost } from '../fakes/host.js';
import { loadRecorded, RECORDED_28_FILE } from '../fakes/recorded.js';
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

test('one log line per call: the call, its IDs, ms, and cpuMs (the CPU time of the process meanwhile)', async () => {
  const sink = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  sink.on('data', (b: Buffer) => { for (const l of b.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>); });
  const log = winston.createLogger({ level: 'info', format: winston.format.json(), transports: [new winston.transports.Stream({ stream: sink })] });
  const logged = `${socket}.log`;
  const s = await new Promise<http.Server>((resolve, reject) => {
    const x = createApp({ driver: w.driver, ipam: w.ipam, log }).listen(logged, () => resolve(x));
    x.on('error', reject);
  });
  try {
    const pool = await post(logged, '/IpamDriver.RequestPool', JSON.stringify({ AddressSpace: 'local', Pool: '10.78.0.0/24', SubPool: '', Options: {}, V6: false }));
    expect(pool.status).toBe(200);
  } finally {
    await new Promise<void>((r) => s.close(() => r()));
  }
  await new Promise((r) => setImmediate(r));
  const line = lines.find((l) => l.call === 'IpamDriver.RequestPool');
  expect(line).toMatchObject({ message: 'ok', Pool: '10.78.0.0/24' });
  expect(typeof line!.ms).toBe('number');
  expect(typeof line!.cpuMs).toBe('number');
  expect(line!.cpuMs as number).toBeGreaterThanOrEqual(0);
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

/**
 * Issue 10: the requests Docker 28.5 sent (test/fixtures/docker/28.5-requests.jsonl, recorded by
 * scripts/record-requests.sh 28 through a proxy in front of tsbridge), replayed in file order.
 * What 28 sends that 20.10 did not, each accepted here: `com.docker.network.enable_ipv4` in every
 * CreateNetwork, `com.docker.network.driver.private.no_proxy_6to4` in every
 * ProgramExternalConnectivity, `com.docker.network.endpoint.ifname` and
 * `com.docker.network.endpoint.sysctls` in CreateEndpoint, GetDefaultAddressSpaces before every
 * network, and IPv6-only networks (`--ipv4=false --ipv6`: IPv4Data empty).
 */
describe('replay of every request recorded from Docker 28.5', () => {
  const all = loadRecorded(RECORDED_28_FILE);
  const ipv6Only = (r: { scenario: string }) => r.scenario.startsWith('IPv6-only');
  const scenarios = [...new Set(all.map((r) => r.scenario))];

  test('the recording holds every scenario of the 20.10 one and the 28-only ones', () => {
    const has = (what: string) => scenarios.some((s) => s.includes(what));
    for (const what of ['--ip-range', '--internal', '-p 8080:80', 'network connect --driver-opt foo=bar', 'dual-stack', '--ipv4=false --ipv6', 'endpoint.ifname=', '--sysctl', 'endpoint.sysctls=', 'docker restart', 'network disconnect rec7; network connect rec7']) {
      expect({ what, found: has(what) }).toEqual({ what, found: true });
    }
    const calls = (c: string) => all.filter((r) => r.call === c);
    expect(calls('/NetworkDriver.CreateNetwork').every((r) => typeof r.request!.Options['com.docker.network.enable_ipv4'] === 'boolean')).toBe(true);
    expect(calls('/NetworkDriver.ProgramExternalConnectivity').every((r) => r.request!.Options['com.docker.network.driver.private.no_proxy_6to4'] === false)).toBe(true);
    expect(calls('/NetworkDriver.CreateEndpoint').some((r) => r.request!.Options['com.docker.network.endpoint.ifname'] === 'foo0')).toBe(true);
    expect(calls('/NetworkDriver.CreateEndpoint').some((r) => typeof r.request!.Options['com.docker.network.endpoint.sysctls'] === 'string')).toBe(true);
    expect(calls('/NetworkDriver.CreateNetwork').filter((r) => r.request!.IPv4Data.length === 0)).toHaveLength(2);
  });

  test('every call but the IPv6-only networks succeeds, replies have the right shape, and nothing is left afterwards', async () => {
    const recorded = all.filter((r) => !ipv6Only(r));
    const internalNets = new Set(
      recorded.filter((r) => r.call === '/NetworkDriver.CreateNetwork' && r.request!.Options['com.docker.network.internal'] === true).map((r) => r.request!.NetworkID as string),
    );
    expect(internalNets.size).toBe(2);
    const published: string[][] = [];
    let joins = 0;
    for (const rec of recorded) {
      const req = rec.request === null ? undefined : structuredClone(rec.request);
      const r = await post(socket, rec.call, req === undefined ? undefined : JSON.stringify(req));
      const where = `line ${rec.line + 1} ${rec.call}: ${JSON.stringify(r.body)}`;
      expect({ where, status: r.status }).toEqual({ where, status: 200 });
      expect({ where, Err: r.body.Err, Error: r.body.Error }).toEqual({ where, Err: undefined, Error: undefined });
      switch (rec.call) {
        case '/IpamDriver.RequestPool':
          expect({ where, Pool: r.body.Pool, PoolID: r.body.PoolID }).toEqual({ where, Pool: req!.Pool, PoolID: `tsb-v${req!.V6 ? 6 : 4}-${req!.Pool}` });
          break;
        case '/IpamDriver.RequestAddress':
          if (req!.Address) expect(r.body.Address).toBe(`${req!.Address}/${req!.PoolID.split('/')[1]}`);
          else expect(r.body.Address).toMatch(/\/(24|64)$/);
          break;
        case '/NetworkDriver.Join': {
          joins++;
          if (internalNets.has(req!.NetworkID)) expect(r.body.Gateway).toBeUndefined();
          else expect({ where, Gateway: r.body.Gateway }).toEqual({ where, Gateway: expect.stringMatching(/^\d+\.\d+\.\d+\.1$/) });
          const v6 = recorded.find((x) => x.call === '/NetworkDriver.CreateEndpoint' && x.request!.EndpointID === req!.EndpointID)!.request!.Interface.AddressIPv6;
          if (v6) expect(r.body.GatewayIPv6).toMatch(/^fd00:9[47]::1$/);
          else expect(r.body.GatewayIPv6).toBeUndefined();
          break;
        }
        case '/NetworkDriver.ProgramExternalConnectivity':
          published.push(w.kernel.snapshot().firewall.ports);
          break;
      }
    }
    expect(joins).toBe(7);
    // rec1: -p 8080:80 -p 127.0.0.1:5353:53/udp -p 7000-7001:7000-7001 -p 9000; rec6 (twice, restarted): -p 8081:80 -p [::]:8082:80
    expect(published[0]).toEqual(['tcp 0.0.0.0:49153 -> 10.99.0.128:9000', 'tcp 0.0.0.0:7000 -> 10.99.0.128:7000', 'tcp 0.0.0.0:7001 -> 10.99.0.128:7001', 'tcp 0.0.0.0:8080 -> 10.99.0.128:80', 'udp 127.0.0.1:5353 -> 10.99.0.128:53'].sort());
    // A wildcard host address publishes in both families the container has; [::] in IPv6 only.
    const rec6 = (n: number) => [`tcp 0.0.0.0:8081 -> 10.94.0.${n}:80`, `tcp [::]:8081 -> [fd00:94::${n}]:80`, `tcp [::]:8082 -> [fd00:94::${n}]:80`].sort();
    expect(published.slice(1)).toEqual([[], rec6(2), rec6(3)]);

    await w.driver.settle();
    const snap = w.kernel.snapshot();
    expect(snap.bridges).toEqual([]);
    expect(snap.veths).toEqual([]);
    expect(snap.firewall).toEqual({ tables: false, bridges: [], ports: [], noIcc: [], guarded: [] });
    expect(w.db.state.networks).toEqual({});
    expect(w.db.state.endpoints).toEqual({});
    expect(w.db.state.pools).toEqual({});
  });

  for (const scenario of scenarios.filter((s) => s.startsWith('IPv6-only'))) {
    test(`IPv6-only network accepted: ${scenario.split(':')[0]}`, async () => {
      const recorded = all.filter((r) => r.scenario === scenario);
      for (const rec of recorded) {
        const r = await post(socket, rec.call, rec.request === null ? undefined : JSON.stringify(rec.request));
        const where = `line ${rec.line + 1} ${rec.call}: ${JSON.stringify(r.body)}`;
        expect({ where, status: r.status }).toEqual({ where, status: 200 });
      }
      const create = recorded.find((r) => r.call === '/NetworkDriver.CreateNetwork')!;
      expect(Object.keys(w.db.state.networks)).toContain(create.request!.NetworkID);
    });
  }
});

describe('Docker 28/29 additions outside the recording', () => {
  test('GetCapabilities does not declare GwAllocChecker (docs/architecture.md, "GwAllocCheck: not declared")', async () => {
    const r = await post(socket, '/NetworkDriver.GetCapabilities');
    expect(r.body).toEqual({ Scope: 'local', ConnectivityScope: 'local' });
    expect(r.body).not.toHaveProperty('GwAllocChecker');
  });

  test('RequestAddress with com.docker.network.endpoint.name (Docker 29) is served like any other', async () => {
    const pool = (await post(socket, '/IpamDriver.RequestPool', JSON.stringify({ AddressSpace: 'local', Pool: '10.77.0.0/24', SubPool: '', Options: {}, V6: false }))).body;
    const gw = await post(socket, '/IpamDriver.RequestAddress', JSON.stringify({ PoolID: pool.PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway', 'com.docker.network.endpoint.name': 'gateway' } }));
    expect(gw.body).toEqual({ Address: '10.77.0.1/24', Data: {} });
    const ep = await post(socket, '/IpamDriver.RequestAddress', JSON.stringify({ PoolID: pool.PoolID, Address: '', Options: { 'com.docker.network.endpoint.name': 'web' } }));
    expect(ep.status).toBe(200);
    expect(ep.body).toEqual({ Address: '10.77.0.2/24', Data: {} });
  });

  test('RequestPool for "0.0.0.0/24" and "::/96" (Docker 29: any pool of that size) answers a real pool', async () => {
    const v4 = await post(socket, '/IpamDriver.RequestPool', JSON.stringify({ AddressSpace: 'local', Pool: '0.0.0.0/24', SubPool: '', Options: {}, V6: false }));
    expect(v4.body).toEqual({ PoolID: 'tsb-v4-10.210.0.0/24', Pool: '10.210.0.0/24', Data: {} });
    const v6 = await post(socket, '/IpamDriver.RequestPool', JSON.stringify({ AddressSpace: 'local', Pool: '::/96', SubPool: '', Options: {}, V6: true }));
    expect(v6.status).toBe(200);
    expect(v6.body.Pool).toMatch(/^fd[0-9a-f]{2}:[0-9a-f:]+\/96$/);
  });

  test('ProgramExternalConnectivity with no_proxy_6to4 true (29 sends it when the gateway role changes) is accepted', async () => {
    const net = 'ab'.repeat(32);
    const ep = 'cd'.repeat(32);
    await post(socket, '/NetworkDriver.CreateNetwork', JSON.stringify({ NetworkID: net, Options: { 'com.docker.network.enable_ipv4': true, 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': {} }, IPv4Data: [{ AddressSpace: 'local', Pool: '10.77.0.0/24', Gateway: '10.77.0.1/24' }], IPv6Data: [] }));
    await post(socket, '/NetworkDriver.CreateEndpoint', JSON.stringify({ NetworkID: net, EndpointID: ep, Interface: { Address: '10.77.0.2/24', AddressIPv6: '', MacAddress: '' }, Options: { 'com.docker.network.endpoint.sysctls': 'net.ipv4.conf.IFNAME.log_martians=1', 'com.docker.network.endpoint.ifname': 'eth7' } }));
    await post(socket, '/NetworkDriver.Join', JSON.stringify({ NetworkID: net, EndpointID: ep, SandboxKey: '/var/run/docker/netns/x', Options: {} }));
    const r = await post(socket, '/NetworkDriver.ProgramExternalConnectivity', JSON.stringify({ NetworkID: net, EndpointID: ep, Options: { 'com.docker.network.driver.private.no_proxy_6to4': true, 'com.docker.network.portmap': [{ Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: 8080, HostPortEnd: 8080 }] } }));
    expect(r.status).toBe(200);
    expect(w.kernel.snapshot().firewall.ports).toEqual(['tcp 0.0.0.0:8080 -> 10.77.0.2:80']);
  });
});
