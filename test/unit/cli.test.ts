/**
 * `tsbridge status` and `tsbridge health` from fixtures (a state file, the plugin's health report,
 * Docker's answer to `GET /networks/ID`), the Docker client against a fake Engine API on a Unix
 * socket, and the plugin client against the real app.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCli, type CliIo } from '../../src/cli.js';
import { DockerClient, DockerUnreachable, dockerSocket } from '../../src/docker/client.js';
import { PluginClient, PluginUnreachable, type PluginApi } from '../../src/cli/plugin.js';
import type { HealthReport } from '../../src/metrics/health.js';
import { silentLogger } from '../../src/logging.js';
import { createApp } from '../../src/server/app.js';
import { REPO_ROOT } from '../fakes/recorded.js';
import { makeWorld } from '../fakes/world.js';
import { serveOnSocket } from '../lib/http.js';

const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures', 'cli');
const WEB = '3f1c0a9e2b7d4c5e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e';
const HEALTH: HealthReport = JSON.parse(readFileSync(path.join(FIXTURES, 'health.json'), 'utf8'));
const NOW = Date.parse('2025-03-01T13:12:00.000Z');

let dir: string;
let out: string;
let err: string;
let docker: Awaited<ReturnType<typeof serveOnSocket>>;
let dockerRequests: string[];

/** A fake Engine API: `GET /networks/WEB` answers the fixture, any other network 404. */
beforeAll(async () => {
  docker = await serveOnSocket((req, res) => {
    dockerRequests.push(`${req.method} ${req.url}`);
    if (req.url === `/networks/${WEB}`) res.writeHead(200, { 'Content-Type': 'application/json' }).end(readFileSync(path.join(FIXTURES, 'docker-network-web.json')));
    else res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"message":"network not found"}');
  });
});
afterAll(async () => docker.close());

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tsbridge-cli-'));
  copyFileSync(path.join(FIXTURES, 'state.json'), path.join(dir, 'state.json'));
  out = '';
  err = '';
  dockerRequests = [];
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const pluginAnswering = (...reports: (HealthReport | Error)[]): ((socket: string) => PluginApi) & { calls: number } => {
  const f = Object.assign(
    () => ({
      health: async () => {
        const r = reports[Math.min(f.calls++, reports.length - 1)]!;
        if (r instanceof Error) throw r;
        return r;
      },
    }),
    { calls: 0 },
  );
  return f;
};

function io(over: Partial<CliIo> = {}): CliIo {
  return {
    out: (s) => void (out += s),
    err: (s) => void (err += s),
    env: { TSBRIDGE_STATE_DIR: dir, DOCKER_HOST: `unix://${docker.socket}` },
    plugin: pluginAnswering(HEALTH),
    now: () => NOW,
    sleep: async () => undefined,
    ...over,
  };
}

describe('tsbridge status', () => {
  test('the instance, the plugin, and each network, endpoint and pool, with names from Docker', async () => {
    expect(await runCli(['status'], io())).toBe(0);
    expect(err).toBe('');
    expect(dockerRequests.sort()).toEqual([`GET /networks/${WEB}`, 'GET /networks/9b00d1c2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0'].sort());
    expect(out.replace(dir, 'STATE_DIR')).toBe(readFileSync(path.join(FIXTURES, 'status.txt'), 'utf8'));
  });

  test('--json: the same facts, full IDs', async () => {
    expect(await runCli(['status', '--json'], io())).toBe(0);
    const st = JSON.parse(out);
    expect(st).toMatchObject({ instance: 'tsbridge', socket: '/run/docker/plugins/tsbridge.sock', stateDir: dir, stateError: null, dockerNames: null, plugin: HEALTH });
    expect(st.networks).toEqual([
      { id: WEB, name: 'web', kind: 'bridge', phase: 'ready', bridge: 'tsb-3f1c0a9e2b7', subnets: ['10.210.0.0/24', 'fd5e:9a1:0:1::/64'], gateways: ['10.210.0.1/24', 'fd5e:9a1:0:1::1/64'], options: { 'com.docker.network.driver.mtu': 1400, 'com.docker.network.bridge.enable_icc': false, ipv6: true } },
      expect.objectContaining({ name: null, bridge: 'backend0', options: { 'com.docker.network.bridge.name': 'backend0', internal: true } }),
    ]);
    expect(st.endpoints[0]).toEqual({
      id: '9b2e41c07d55a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6', networkId: WEB, containerName: 'shop', addresses: ['10.210.0.2/24', 'fd5e:9a1:0:1::2/64'],
      mac: '02:9b:2e:41:c0:7d', hostVeth: 'tsv9b2e41c07d55', joined: true,
      ports: [{ proto: 'udp', hostIp: '127.0.0.1', hostPort: 5353, containerPort: 53 }, { proto: 'tcp', hostIp: '', hostPort: 8080, containerPort: 80 }],
    });
    expect(st.pools[1]).toEqual({ id: 'tsb-v4-10.211.5.0/24', pool: '10.211.5.0/24', range: '10.211.5.0/25', auto: false, allocated: { gateway: 1, endpoint: 1, aux: 1 } });
  });

  test('the plugin not serving, or not healthy: exit 1, and why', async () => {
    expect(await runCli(['status', '--socket', path.join(dir, 'none.sock')], io({ plugin: undefined }))).toBe(1);
    expect(out).toContain(`plugin      not serving: no socket at ${path.join(dir, 'none.sock')}: the plugin is not running`);
    out = '';
    const sick = { ...HEALTH, healthy: false, problems: ['the last sweep failed: nft: command not found'] };
    expect(await runCli(['status', '--state-dir', dir], io({ plugin: pluginAnswering(sick) }))).toBe(1);
    expect(out).toContain('plugin      serving, NOT HEALTHY; pid 4242');
    expect(out).toContain('            ! the last sweep failed: nft: command not found');
  });

  test('Docker not reachable: no names, said once, and the rest as usual', async () => {
    expect(await runCli(['status'], io({ env: { TSBRIDGE_STATE_DIR: dir, DOCKER_HOST: `unix://${dir}/no-docker.sock` } }))).toBe(0);
    expect(out).toContain(`names       not available: no Docker socket at ${dir}/no-docker.sock`);
    expect(out).toContain('3f1c0a9e2b7d   -      bridge');
    expect(await runCli(['status', '--json'], io({ env: { TSBRIDGE_STATE_DIR: dir, DOCKER_HOST: 'tcp://10.0.0.1:2375' } }))).toBe(0);
    expect(JSON.parse(out.slice(out.indexOf('{'))).dockerNames).toBe('DOCKER_HOST=tcp://10.0.0.1:2375 is not a unix:// socket; tsbridge asks Docker only over its Unix socket');
  });

  test('a corrupt state file: exit 1 with the reason', async () => {
    rmSync(path.join(dir, 'state.json'));
    await import('node:fs').then((fs) => fs.writeFileSync(path.join(dir, 'state.json'), '{"version": 2}'));
    expect(await runCli(['status', '--no-docker'], io())).toBe(1);
    expect(out).toMatch(/state {7}\S+ {2}\(state store: .* is not a tsbridge state document/);
  });
});

describe('tsbridge health', () => {
  test('healthy: exit 0 and a summary on stdout', async () => {
    expect(await runCli(['health'], io())).toBe(0);
    expect(out).toBe(
      [
        'tsbridge (instance tsbridge): serving, healthy (pid 4242, up 3h 12m, version 0.1.0)',
        '  start-up reconciliation: ok, 184 ms, networksRestored 2, endpointsDropped 1',
        '  last sweep: 12s ago, ok, 9 ms, 0 endpoints removed',
        '  2 networks, 2 endpoints, 0 calls in flight; state /var/lib/tsbridge',
        '',
      ].join('\n'),
    );
  });

  test('not healthy, or not serving: exit 1 and why on stderr; --json and --quiet', async () => {
    const sick = { ...HEALTH, healthy: false, problems: ['no sweep has ended for 400 s (interval 30 s): a call or a sweep may be stuck'] };
    expect(await runCli(['health'], io({ plugin: pluginAnswering(sick) }))).toBe(1);
    expect(err).toContain('NOT HEALTHY');
    expect(err).toContain('  ! no sweep has ended for 400 s');
    err = '';
    expect(await runCli(['health', '--instance', 'lab'], io({ plugin: undefined, env: {} }))).toBe(1);
    expect(err).toBe('tsbridge (instance lab): not serving: no socket at /run/docker/plugins/lab.sock: the plugin is not running (or this is not its instance: --instance, TSBRIDGE_SOCKET)\n');
    expect(await runCli(['health', '--json', '--socket', path.join(dir, 'x.sock')], io({ plugin: undefined }))).toBe(1);
    expect(JSON.parse(out)).toEqual({ serving: false, error: expect.stringContaining('no socket at') });
    out = '';
    err = '';
    expect(await runCli(['health', '-q'], io({ plugin: pluginAnswering(new PluginUnreachable('gone')) }))).toBe(1);
    expect(out + err).toBe('');
  });

  test('--wait asks again until the plugin is healthy, or the time is up', async () => {
    let t = NOW;
    const clock = { now: () => t, sleep: async (ms: number) => void (t += ms) };
    const starting = pluginAnswering(new PluginUnreachable('no socket'), new PluginUnreachable('no socket'), HEALTH);
    expect(await runCli(['health', '--wait', '10'], io({ ...clock, plugin: starting }))).toBe(0);
    expect(starting.calls).toBe(3);
    const never = pluginAnswering(new PluginUnreachable('no socket'));
    expect(await runCli(['health', '--wait', '2', '-q'], io({ ...clock, plugin: never }))).toBe(1);
    expect(never.calls).toBe(11); // the first, then every 200 ms for 2 s
    expect(await runCli(['health', '--wait', 'soon'], io())).toBe(2);
  });
});

describe('the clients', () => {
  test('DockerClient: names from the Engine API; 404 is a network Docker does not have', async () => {
    const nets = await new DockerClient(docker.socket).networks([WEB, 'ab'.repeat(32)]);
    expect(nets.get(WEB)).toEqual({ id: WEB, name: 'web', driver: 'tsbridge', containers: [{ endpointId: '9b2e41c07d55a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6', containerId: expect.any(String), name: 'shop' }] });
    expect(nets.get('ab'.repeat(32))).toBeNull();
  });

  test('DockerClient: no socket, and a Docker that does not answer in time, are DockerUnreachable', async () => {
    await expect(new DockerClient(path.join(dir, 'nope.sock')).networks([WEB])).rejects.toThrow(new DockerUnreachable(`no Docker socket at ${path.join(dir, 'nope.sock')}`));
    const silent = await serveOnSocket(() => undefined);
    try {
      await expect(new DockerClient(silent.socket, 200).networks([WEB])).rejects.toThrow(`no answer from Docker on ${silent.socket} within 200 ms`);
    } finally {
      silent.server.closeAllConnections();
      await silent.close();
    }
  });

  test('DOCKER_HOST', () => {
    expect(dockerSocket({})).toEqual({ socket: '/var/run/docker.sock' });
    expect(dockerSocket({ DOCKER_HOST: 'unix:///run/user/1000/docker.sock' })).toEqual({ socket: '/run/user/1000/docker.sock' });
    expect(dockerSocket({ DOCKER_HOST: 'ssh://host' })).toEqual({ error: expect.stringContaining('not a unix:// socket') });
  });

  test('PluginClient: the real app\'s health call; an app without one; a server that is not tsbridge', async () => {
    const w = makeWorld();
    const app = await serveOnSocket(createApp({ driver: w.driver, ipam: w.ipam, log: silentLogger(), health: () => HEALTH }));
    const bare = await serveOnSocket(createApp({ driver: w.driver, ipam: w.ipam, log: silentLogger() }));
    const other = await serveOnSocket((_req, res: http.ServerResponse) => res.writeHead(200).end('<html>hello</html>'));
    try {
      expect(await new PluginClient(app.socket).health()).toEqual(HEALTH);
      await expect(new PluginClient(bare.socket).health()).rejects.toThrow('has no health call (an older tsbridge?)');
      await expect(new PluginClient(other.socket).health()).rejects.toThrow('with something that is not JSON: is it tsbridge?');
    } finally {
      await Promise.all([app.close(), bare.close(), other.close()]);
    }
  });
});
