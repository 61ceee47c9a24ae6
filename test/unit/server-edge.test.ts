/**
 * Hostile or absurd input at the protocol edge, over a real Unix socket: bodies that are not
 * objects, IDs that are JavaScript's own property names, IPAM options, and every error Express
 * or Node's HTTP parser can raise — always answered as JSON with Err and Error, never an HTML
 * page, and never changing anything.
 */
import { createApp, jsonClientErrors, routes } from '../../src/server/app.js';
import { silentLogger } from '../../src/logging.js';
import { FakeHost } from '../fakes/host.js';
import { makeWorld, NET_A, EP_1, type World } from '../fakes/world.js';
import { rawExchange, serveOnSocket, socketRequest, type RawReply } from '../lib/http.js';

let w: World;
let srv: Awaited<ReturnType<typeof serveOnSocket>>;

const post = (path: string, body?: string) => socketRequest(srv.socket, { path, body });
const json = (v: unknown) => JSON.stringify(v);

/** What a refused call must not change: the state in memory and on "disk", and the kernel. */
function snapshot() {
  return { state: structuredClone(w.db.state), saves: w.store.saves, kernel: w.kernel.snapshot(), calls: w.kernel.calls.length };
}

function expectJsonError(r: RawReply, status: number, message: RegExp | string): void {
  expect(r.headers['content-type']).toMatch(/^application\/json/);
  expect(r.status).toBe(status);
  expect(r.body).toEqual({ Err: expect.any(String), Error: expect.any(String) });
  expect(r.body.Err).toBe(r.body.Error);
  if (typeof message === 'string') expect(r.body.Err).toContain(message);
  else expect(r.body.Err).toMatch(message);
}

beforeEach(async () => {
  w = makeWorld({ host: new FakeHost({ ephemeral: [49152, 49160] }) });
  srv = await serveOnSocket(createApp({ driver: w.driver, ipam: w.ipam, log: silentLogger() }), (s) => jsonClientErrors(s));
});

afterEach(async () => {
  await srv.close();
});

const ARG_CALLS = [...routes({ driver: null as never, ipam: null as never, log: silentLogger() })].filter(([, r]) => r.args).map(([p]) => p);
const NO_ARG_CALLS = [...routes({ driver: null as never, ipam: null as never, log: silentLogger() })].filter(([, r]) => !r.args).map(([p]) => p);

describe('bodies that are not JSON objects', () => {
  test('RequestPool with a body of null is refused and allocates nothing', async () => {
    const before = snapshot();
    const r = await post('/IpamDriver.RequestPool', 'null');
    expectJsonError(r, 500, 'malformed request: body must be a JSON object, got null');
    expect(snapshot()).toEqual(before);
    expect(w.db.state.pools).toEqual({});
  });

  test.each(['null', '[]', '[{"Pool":"10.1.0.0/24"}]', '"x"', '5', 'true', ''])('every call with arguments refuses the body %j and changes nothing', async (body) => {
    expect(ARG_CALLS.length).toBe(13);
    const before = snapshot();
    for (const call of ARG_CALLS) {
      const r = await post(call, body);
      expectJsonError(r, 500, /^malformed request: (body must be a JSON object|this call needs a JSON object, the body is empty)/);
    }
    expect(snapshot()).toEqual(before);
  });

  test('calls without arguments accept no body, an empty one, null and an object; an array or a string is refused', async () => {
    expect(NO_ARG_CALLS).toContain('/Plugin.Activate');
    for (const call of NO_ARG_CALLS) {
      for (const body of [undefined, '', 'null', '{}', '{"Key":"x"}']) expect({ call, body, status: (await post(call, body)).status }).toEqual({ call, body, status: 200 });
      for (const body of ['[]', '"x"']) expectJsonError(await post(call, body), 500, 'body must be a JSON object');
    }
  });
});

describe("IDs that are JavaScript's own property names", () => {
  const NAMES = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'prototype'];

  test.each(NAMES)('%s as a PoolID is refused as no pool tsbridge gave, for every IPAM call; nothing changes', async (id) => {
    const before = snapshot();
    for (const [call, body] of [
      ['/IpamDriver.RequestAddress', { PoolID: id, Address: '', Options: null }],
      ['/IpamDriver.ReleaseAddress', { PoolID: id, Address: '10.0.0.2' }],
      ['/IpamDriver.ReleasePool', { PoolID: id }],
    ] as const) {
      expectJsonError(await post(call, json(body)), 500, `PoolID must be a pool ID tsbridge gave (such as tsb-v4-10.10.0.0/24), got "${id}"`);
    }
    expect(snapshot()).toEqual(before);
    expect(Object.getPrototypeOf(w.db.state.pools)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).Pool).toBeUndefined();
  });

  test.each(NAMES)('%s as a NetworkID or EndpointID is refused, never a 500 of an internal error', async (id) => {
    const before = snapshot();
    expectJsonError(await post('/NetworkDriver.DeleteNetwork', json({ NetworkID: id })), 500, `NetworkID must be a hex ID, got "${id}"`);
    for (const call of ['/NetworkDriver.Join', '/NetworkDriver.Leave', '/NetworkDriver.EndpointOperInfo', '/NetworkDriver.DeleteEndpoint', '/NetworkDriver.RevokeExternalConnectivity']) {
      const r1 = await post(call, json({ NetworkID: id, EndpointID: EP_1 }));
      expectJsonError(r1, 500, `NetworkID must be a hex ID, got "${id}"`);
      const r2 = await post(call, json({ NetworkID: NET_A, EndpointID: id }));
      expectJsonError(r2, 500, `EndpointID must be a hex ID, got "${id}"`);
    }
    expect(snapshot()).toEqual(before);
  });

  test('the IPAM itself looks pools up as own properties: __proto__ is an unknown pool, its release a no-op', async () => {
    await expect(w.ipam.requestAddress('__proto__', '', 'endpoint')).rejects.toThrow('unknown address pool __proto__');
    await expect(w.ipam.requestAddress('constructor', '', 'endpoint')).rejects.toThrow('unknown address pool constructor');
    const saves = w.store.saves;
    await w.ipam.releasePool('__proto__');
    await w.ipam.releaseAddress('toString', '10.0.0.2');
    expect(w.store.saves).toBe(saves);
  });

  test('a body with a __proto__ key creates no prototype: it is an unknown option', async () => {
    const r = await post('/IpamDriver.RequestPool', '{"Pool":"10.1.0.0/24","Options":{"__proto__":"x"}}');
    expectJsonError(r, 500, 'option __proto__ is not supported by tsbridge');
    expect(w.db.state.pools).toEqual({});
  });
});

describe('IPAM options (--ipam-opt)', () => {
  const pool = (Options: unknown) => json({ AddressSpace: 'local', Pool: '10.1.0.0/24', SubPool: '', Options, V6: false });

  test('an unknown key is refused by name and no pool is made', async () => {
    expectJsonError(await post('/IpamDriver.RequestPool', pool({ foo: 'bar' })), 500, 'option foo is not supported by tsbridge');
    expectJsonError(await post('/IpamDriver.RequestPool', pool({ 'io.tsbridge.flavour': 'x' })), 500, 'option io.tsbridge.flavour is not supported by tsbridge');
    // A known one this plugin cannot serve (no etcd configured) is refused as such.
    expectJsonError(await post('/IpamDriver.RequestPool', pool({ 'io.tsbridge.overlay': 'x' })), 500, 'option io.tsbridge.overlay needs a cluster store: set TSBRIDGE_ETCD_ENDPOINTS');
    expectJsonError(await post('/IpamDriver.RequestPool', pool({ RequestAddressType: 'com.docker.network.gateway' })), 500, 'option RequestAddressType is not supported');
    expect(w.db.state.pools).toEqual({});
  });

  test('Docker\'s own keys are accepted: com.docker.* on a pool, and on an address with the gateway request', async () => {
    const r = await post('/IpamDriver.RequestPool', pool({ 'com.docker.network.ipam.serial': 'true' }));
    expect(r.status).toBe(200);
    const PoolID = r.body.PoolID as string;
    const gw = await post('/IpamDriver.RequestAddress', json({ PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } }));
    expect(gw.body).toEqual({ Address: '10.1.0.1/24', Data: {} });
    // Docker 29 names the endpoint; an IPAM asking for MACs gets the MAC too.
    const ep = await post('/IpamDriver.RequestAddress', json({ PoolID, Address: '', Options: { 'com.docker.network.endpoint.name': 'web', 'com.docker.network.endpoint.macaddress': '02:42:0a:01:00:02' } }));
    expect(ep.body).toEqual({ Address: '10.1.0.2/24', Data: {} });
    expect(w.db.state.pools[PoolID]!.allocated).toEqual({ '10.1.0.1': 'gateway', '10.1.0.2': 'endpoint' });
  });

  test('on an address: an unknown key, an unknown address type, a value that is not a string, Options that are not an object', async () => {
    const PoolID = (await post('/IpamDriver.RequestPool', pool({}))).body.PoolID as string;
    const before = snapshot();
    const addr = (Options: unknown) => post('/IpamDriver.RequestAddress', json({ PoolID, Address: '', Options }));
    expectJsonError(await addr({ foo: 'bar' }), 500, 'option foo is not supported by tsbridge');
    expectJsonError(await addr({ RequestAddressType: 'aux' }), 500, 'invalid option RequestAddressType=aux: the only address type is com.docker.network.gateway');
    expectJsonError(await addr({ 'com.docker.network.endpoint.name': 5 }), 500, 'invalid option com.docker.network.endpoint.name=5: expected a string');
    expectJsonError(await addr(['RequestAddressType']), 500, 'malformed request: Options must be an object');
    expectJsonError(await post('/IpamDriver.RequestPool', json({ Pool: '10.2.0.0/24', V6: 'true' })), 500, 'V6 must be true or false');
    expect(snapshot()).toEqual(before);
  });
});

describe('errors raised before a handler runs, as JSON', () => {
  test('a body over 4 MiB is 413', async () => {
    const r = await post('/NetworkDriver.CreateNetwork', json({ NetworkID: NET_A, Pad: 'x'.repeat(5 * 1024 * 1024) }));
    expectJsonError(r, 413, /^malformed request: the body \(\d+ bytes\) is larger than 4 MiB$/);
    expect(w.db.state.networks).toEqual({});
  });

  test('a charset that cannot be decoded is 415', async () => {
    const r = await socketRequest(srv.socket, { path: '/IpamDriver.RequestPool', body: '{}', headers: { 'Content-Type': 'application/json; charset=klingon' } });
    expectJsonError(r, 415, 'unsupported charset "klingon": the body must be JSON in UTF-8');
  });

  test('a compressed body is 415', async () => {
    const r = await socketRequest(srv.socket, { path: '/IpamDriver.RequestPool', body: 'x', headers: { 'Content-Encoding': 'gzip' } });
    expectJsonError(r, 415, 'unsupported Content-Encoding "gzip": the body must not be compressed');
  });

  test('malformed JSON is BAD_REQUEST', async () => {
    expectJsonError(await post('/IpamDriver.RequestPool', '{"Pool": '), 500, /^malformed request: body is not JSON/);
  });

  test('a known call with another method is 405 naming POST; an unknown path is 404', async () => {
    for (const method of ['GET', 'PUT', 'DELETE', 'PATCH']) {
      const r = await socketRequest(srv.socket, { method, path: '/Plugin.Activate' });
      expectJsonError(r, 405, `/Plugin.Activate is called with POST, not ${method}`);
      expect(r.headers.allow).toBe('POST');
    }
    expectJsonError(await socketRequest(srv.socket, { method: 'GET', path: '/' }), 404, 'unknown call GET /');
    expectJsonError(await post('/NetworkDriver.__proto__', '{}'), 404, 'unknown call /NetworkDriver.__proto__');
    expectJsonError(await post('/%E0%A4%A', '{}'), 404, 'unknown call');
  });

  test('a request Node cannot parse is 400 JSON, then the connection closes', async () => {
    for (const bytes of [
      'POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n',
      'POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}',
      'NOT-HTTP\r\n\r\n',
    ]) {
      const raw = await rawExchange(srv.socket, bytes);
      expect(raw).toMatch(/^HTTP\/1\.1 400 Bad Request\r\nContent-Type: application\/json/);
      const body = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4));
      expect(body.Err).toMatch(/^malformed request: unreadable HTTP request/);
      expect(body.Error).toBe(body.Err);
    }
  });
});

describe('Plugin.Health', () => {
  test('GET and POST answer the report; without one the plugin says so as JSON', async () => {
    expectJsonError(await socketRequest(srv.socket, { method: 'GET', path: '/Plugin.Health' }), 404, 'no health report');
    const report = { serving: true, healthy: true };
    const other = await serveOnSocket(createApp({ driver: w.driver, ipam: w.ipam, log: silentLogger(), health: () => report as never }));
    try {
      for (const method of ['GET', 'POST']) {
        const r = await socketRequest(other.socket, { method, path: '/Plugin.Health' });
        expect(r.status).toBe(200);
        expect(r.body).toEqual(report);
      }
    } finally {
      await other.close();
    }
  });
});
