/**
 * etcd over TLS with client certificates (TSBRIDGE_ETCD_CA, _CERT, _KEY): a CA, a server and a
 * client certificate made with openssl for the test; the store works with its certificate and
 * is refused without one. Needs etcd-server and openssl.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EtcdStore } from '../../src/cluster/etcd.js';
import { requireEtcd, startEtcd, type EtcdServer } from '../lib/etcd.js';
import { sh } from '../lib/run.js';

let dir: string;
let etcd: EtcdServer;
const f = (name: string) => path.join(dir, name);

/** A key and a certificate signed by the test CA, with the extensions of `name`.ext. */
async function issue(name: string, subject: string): Promise<void> {
  await sh('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f(`${name}-key.pem`), '-subj', subject, '-out', f(`${name}.csr`)]);
  await sh('openssl', ['x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca-key.pem'), '-CAcreateserial', '-days', '1', '-extfile', f(`${name}.ext`), '-out', f(`${name}.pem`)]);
}

beforeAll(async () => {
  await requireEtcd();
  dir = await mkdtemp(path.join(tmpdir(), 'tsbridge-etcd-tls-'));
  await sh('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('ca-key.pem'), '-subj', '/CN=tsbridge test CA', '-days', '1', '-out', f('ca.pem')]);
  await writeFile(f('server.ext'), 'subjectAltName=IP:127.0.0.1\n# etcd also uses its server certificate as a client (its gateway, our health probe)\nextendedKeyUsage=serverAuth,clientAuth\n');
  await writeFile(f('client.ext'), 'extendedKeyUsage=clientAuth\n');
  await issue('server', '/CN=etcd');
  await issue('client', '/CN=tsbridge host');
  etcd = await startEtcd({ tls: { cert: f('server.pem'), key: f('server-key.pem'), ca: f('ca.pem') } });
});

afterAll(async () => {
  await etcd?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('with the CA and a client certificate the store works', async () => {
  expect(etcd.endpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  const store = new EtcdStore({
    endpoints: [etcd.endpoint],
    tls: { ca: await readFile(f('ca.pem')), cert: await readFile(f('client.pem')), key: await readFile(f('client-key.pem')) },
    callTimeoutMs: 3000,
  });
  try {
    await store.txn([], [{ put: '/tls/k', value: 'v' }]);
    expect((await store.get('/tls/k'))?.value).toBe('v');
  } finally {
    await store.close();
  }
});

test('without a client certificate etcd refuses the connection', async () => {
  const store = new EtcdStore({ endpoints: [etcd.endpoint], tls: { ca: await readFile(f('ca.pem')) }, callTimeoutMs: 2000 });
  try {
    await expect(store.get('/tls/k')).rejects.toThrow();
  } finally {
    await store.close();
  }
});
