/**
 * Issue 7, a second real client: docker-compose with a compose file whose network uses tsbridge
 * as driver and IPAM driver (test/fixtures/compose/docker-compose.yml). Services reach each other
 * by name, a published port answers, `docker-compose down` cleans up.
 *
 * Which Compose is the engine's (issue 10): on Docker 20.10 Compose v1 (Debian's docker-compose
 * 1.29), on Docker 28 Compose v2 (the CLI plugin unpacked with engine 28, first on PATH as
 * `docker-compose` when scripts/test.sh runs the tier with TSBRIDGE_ENGINE=28).
 *
 * Needs root, a running dockerd, the test image, dist/ built and `docker-compose`
 * (scripts/install-deps.sh installs v1, scripts/engine.sh install 28 unpacks v2).
 */
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Cleanup } from '../lib/cleanup.js';
import { docker, dockerOk, requireDocker, waitFor } from '../lib/docker.js';
import { randomId } from '../lib/netns.js';
import { REPO_ROOT, startPlugin, type PluginHandle } from '../lib/plugin.js';
import { tcpRequest } from '../lib/probe.js';
import { requireRoot, sh, shOk } from '../lib/run.js';
import { footprint, TEST_IMAGE } from './helpers.js';

const DRIVER = 'tsbt-compose';
const FILE = path.join(REPO_ROOT, 'test', 'fixtures', 'compose', 'docker-compose.yml');
const PROJECT = `tsbtcompose${randomId()}`;
const NETWORK = `${PROJECT}_backend`;
const HOST_PORT = 23100 + (randomBytes(2).readUInt16BE() % 800);
const SUBNET = '10.215.41.0/24';
const INDEX = 'hello from tsbridge-test';

const env = {
  TSBRIDGE_DRIVER: DRIVER,
  TSBRIDGE_IMAGE: TEST_IMAGE,
  TSBRIDGE_HTTP_PORT: String(HOST_PORT),
  TSBRIDGE_SUBNET: SUBNET,
};
const compose = (args: string[], timeoutMs = 120_000) =>
  sh('docker-compose', ['-f', FILE, '-p', PROJECT, ...args], { env, timeoutMs, cwd: REPO_ROOT });
const composeOk = (args: string[], timeoutMs = 120_000) =>
  shOk('docker-compose', ['-f', FILE, '-p', PROJECT, ...args], { env, timeoutMs, cwd: REPO_ROOT });

/** The Compose each named engine is tested with (scripts/test.sh sets TSBRIDGE_ENGINE). */
const EXPECTED_COMPOSE: Record<string, RegExp> = { '20.10': /^1\./, '28': /^2\./ };

const cleanup = new Cleanup();
let plugin: PluginHandle;

beforeAll(async () => {
  requireRoot('the docker-compose e2e test');
  await requireDocker();
  const v = await shOk('docker-compose', ['version', '--short']);
  if (v.exitCode !== 0) throw new Error(`docker-compose is not installed (scripts/install-deps.sh installs it): ${v.stderr}`);
  const expected = EXPECTED_COMPOSE[process.env.TSBRIDGE_ENGINE ?? ''];
  if (expected && !expected.test(v.stdout.trim())) {
    throw new Error(`engine ${process.env.TSBRIDGE_ENGINE} is tested with Compose ${expected.source}, but docker-compose on PATH is ${v.stdout.trim()}`);
  }
  console.log(`docker-compose ${v.stdout.trim()} against engine ${process.env.TSBRIDGE_ENGINE ?? '(unnamed)'}`);
  plugin = await startPlugin({ name: DRIVER });
  cleanup.add(() => plugin.dispose(), 'plugin');
  cleanup.add(async () => {
    await composeOk(['down', '--timeout', '1', '--remove-orphans']);
    await dockerOk(['network', 'rm', NETWORK]);
  }, 'compose project');
});

afterAll(async () => {
  await cleanup.run();
});

describe('docker-compose with driver: tsbridge', () => {
  test('up creates the network through tsbridge and starts both services', async () => {
    const t0 = Date.now();
    await compose(['up', '-d']);
    console.log(`docker-compose up -d: ${Date.now() - t0} ms`);
    const info = JSON.parse(await docker(['network', 'inspect', NETWORK]))[0];
    expect(info.Driver).toBe(DRIVER);
    expect(info.IPAM.Driver).toBe(DRIVER);
    expect(info.IPAM.Config[0].Subnet).toBe(SUBNET);
    const ps = await compose(['ps', '-q']);
    expect(ps.split('\n').filter(Boolean)).toHaveLength(2);
  });

  test('services reach each other by name', async () => {
    const out = await compose([
      'exec', '-T', 'client', 'sh', '-c',
      "ping -c1 -W2 web && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 80 && cat /sys/class/net/eth0/mtu",
    ]);
    expect(out).toMatch(/64 bytes from 10\.215\.41\.\d+/);
    expect(out).toContain(INDEX);
    expect(out.trim().split('\n').pop()).toBe('1400');
  });

  test('the published port answers on the host', async () => {
    const reply = await waitFor(async () => {
      const r = await tcpRequest('127.0.0.1', HOST_PORT, 'GET / HTTP/1.0\r\n\r\n');
      return r.includes(INDEX) ? r : undefined;
    }, 10_000, { what: `127.0.0.1:${HOST_PORT}` });
    expect(reply).toContain('200 OK');
  });

  test('down removes the containers and the network, leaving nothing of tsbridge behind', async () => {
    const t0 = Date.now();
    await compose(['down', '--timeout', '1']);
    console.log(`docker-compose down: ${Date.now() - t0} ms`);
    expect((await dockerOk(['network', 'inspect', NETWORK])).exitCode).not.toBe(0);
    expect(await compose(['ps', '-q'])).toBe('');
    expect(await footprint()).toEqual({ links: [], nft: [], iptables: [] });
    expect(plugin.running).toBe(true);
  });
});
