/**
 * Proves the e2e rig: a running Docker engine, the tsbridge-test image (busybox + udp-echo), and
 * the plugin helper (driven here with a stub plugin, so this file does not depend on src/).
 * Needs root, a running dockerd (scripts/docker-up.sh) and the image (scripts/test-image.sh).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Cleanup } from '../lib/cleanup.js';
import { containerIp, docker, dockerOk, removeContainers, removeNetworks, requireDocker, TEST_IMAGE, uniqueName, waitFor } from '../lib/docker.js';
import { createNetns } from '../lib/netns.js';
import { pluginCall, startPlugin } from '../lib/plugin.js';
import { parsePeerReply, udpRequest } from '../lib/probe.js';
import { requireRoot } from '../lib/run.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

beforeAll(async () => {
  requireRoot('test/e2e/rig.test.ts');
  await requireDocker();
  const img = await dockerOk(['image', 'inspect', TEST_IMAGE]);
  if (img.exitCode !== 0) throw new Error(`image ${TEST_IMAGE} is missing: run scripts/test-image.sh`);
});

/** Runs a detached container and registers its removal. */
async function runDetached(args: string[]): Promise<string> {
  const name = uniqueName('rig');
  cleanup.add(() => removeContainers([name]), `container ${name}`);
  await docker(['run', '-d', '--name', name, ...args]);
  return name;
}

describe('docker', () => {
  test('the engine answers', async () => {
    expect(await docker(['info', '--format', '{{.ServerVersion}}'])).toMatch(/^\d+\.\d+/);
  });

  test(`${TEST_IMAGE} runs busybox with --network none`, async () => {
    expect(await docker(['run', '--rm', '--network', 'none', TEST_IMAGE, 'busybox', 'echo', 'hi'])).toBe('hi');
  }, 30_000);
});

describe('udp-echo', () => {
  test('answers from a container on the default bridge with the address it saw', async () => {
    const name = await runDetached([TEST_IMAGE, 'udp-echo', '7777']);
    await waitFor(async () => (await docker(['logs', name])).includes('listening on 7777'), 10_000, { what: 'udp-echo to listen' });
    const ip = await containerIp(name);
    const gateway = await docker(['network', 'inspect', 'bridge', '-f', '{{(index .IPAM.Config 0).Gateway}}']);

    const fromHost = parsePeerReply(await udpRequest(ip, 7777, 'hello from host'));
    expect(fromHost).toMatchObject({ address: gateway, payload: 'hello from host' });

    const inside = parsePeerReply(await docker(['exec', name, 'udp-echo', '-s', '127.0.0.1', '7777', 'loop']));
    expect(inside).toMatchObject({ address: '127.0.0.1', payload: 'loop' });

    // udp-echo runs as PID 1: it must honour SIGTERM rather than wait for docker's 10 s SIGKILL.
    const t0 = Date.now();
    await docker(['stop', name]);
    expect(Date.now() - t0).toBeLessThan(5000);
  }, 30_000);

  test('is dual-stack: answers IPv4 and IPv6 on one socket (run in a netns)', async () => {
    // Containers on the default bridge have IPv6 disabled, so try the same binary in a netns.
    const name = await runDetached(['--network', 'none', TEST_IMAGE, 'sleep', '60']);
    const dir = await mkdtemp(path.join(tmpdir(), 'tsbt-rig-'));
    cleanup.add(() => rm(dir, { recursive: true, force: true }), 'tmp dir');
    const bin = path.join(dir, 'udp-echo');
    await docker(['cp', `${name}:/bin/udp-echo`, bin]);
    const ns = await createNetns('rig');
    cleanup.add(() => ns.delete(), `netns ${ns.name}`);
    ns.spawn(bin, ['7777']);

    const v4 = await waitFor(() => ns.exec(bin, ['-s', '127.0.0.1', '7777', 'four']), 5000, { what: 'udp-echo over IPv4' });
    expect(parsePeerReply(v4)).toMatchObject({ address: '127.0.0.1', payload: 'four' });
    expect(parsePeerReply(await ns.exec(bin, ['-s', '::1', '7777', 'six']))).toMatchObject({ address: '::1', payload: 'six' });
    expect((await ns.execOk(bin, ['-s', '127.0.0.1', '7778', 'nobody'])).exitCode).toBe(1);
  }, 30_000);
});

/** A stand-in for dist/src/main.js honouring the same contract (env, socket, Plugin.Activate). */
const STUB_PLUGIN = `
const http = require('node:http'), fs = require('node:fs');
const sock = process.env.TSBRIDGE_SOCKET;
fs.rmSync(sock, { force: true });
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => {
    console.log('CALL ' + req.url + ' content-type=' + (req.headers['content-type'] || 'none') + ' body=' + body);
    let out = {};
    if (req.url === '/Plugin.Activate') out = { Implements: ['NetworkDriver'] };
    if (req.url === '/NetworkDriver.GetCapabilities') out = { Scope: 'local' };
    if (req.url === '/Stub.Env') out = { socket: sock, stateDir: process.env.TSBRIDGE_STATE_DIR, level: process.env.TSBRIDGE_LOG_LEVEL, extra: process.env.STUB_EXTRA, pid: process.pid };
    res.end(JSON.stringify(out));
  });
});
server.listen(sock, () => console.error('stub listening on ' + sock));
process.on('SIGTERM', () => { console.log('stub got SIGTERM'); fs.rmSync(sock, { force: true }); process.exit(0); });
`;

describe('plugin helper (stub plugin)', () => {
  test('starts, is called like Docker calls it, survives kill -9 + restart, disposes', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'tsbt-stub-'));
    cleanup.add(() => rm(dir, { recursive: true, force: true }), 'stub dir');
    const entry = path.join(dir, 'stub.cjs');
    await writeFile(entry, STUB_PLUGIN);

    const name = uniqueName('stub');
    const plugin = await startPlugin({ name, entry, env: { STUB_EXTRA: 'x1' } });
    cleanup.add(() => plugin.dispose(), `plugin ${name}`);
    expect(plugin.socket).toBe(`/run/docker/plugins/${name}.sock`);
    expect(existsSync(plugin.stateDir)).toBe(true);

    const env = await pluginCall(plugin.socket, 'Stub.Env');
    expect(env.status).toBe(200);
    expect(env.body).toEqual({ socket: plugin.socket, stateDir: plugin.stateDir, level: 'debug', extra: 'x1', pid: plugin.pid });
    const create = await pluginCall(plugin.socket, 'NetworkDriver.CreateNetwork', { NetworkID: 'abc' });
    expect(create.body).toEqual({});
    // The stub's log line and its answer travel on different pipes: wait for the line.
    const logged = (match: (l: string) => boolean, what: string) => waitFor(() => plugin.logs().some(match), 5000, { what: `stub log: ${what}` });
    await logged((l) => l === 'CALL /NetworkDriver.CreateNetwork content-type=none body={"NetworkID":"abc"}', 'CreateNetwork abc');
    expect(plugin.logs()).toContain('CALL /Plugin.Activate content-type=none body=');

    // The Docker daemon finds the legacy plugin by its socket and calls it.
    const net = uniqueName('net');
    cleanup.add(() => removeNetworks([net]), `network ${net}`);
    await docker(['network', 'create', '-d', name, '--subnet', '198.19.255.248/29', net]);
    await logged((l) => l.startsWith('CALL /NetworkDriver.CreateNetwork') && l.includes('198.19.255.248/29'), 'CreateNetwork from dockerd');

    const firstPid = plugin.pid;
    expect(await plugin.kill9()).toEqual({ exitCode: null, signal: 'SIGKILL' });
    expect(plugin.running).toBe(false);
    await plugin.restart();
    expect(plugin.pid).not.toBe(firstPid);
    expect((await pluginCall(plugin.socket, 'Stub.Env')).body.pid).toBe(plugin.pid);

    await docker(['network', 'rm', net]);
    await logged((l) => l.startsWith('CALL /NetworkDriver.DeleteNetwork'), 'DeleteNetwork from dockerd');

    expect(await plugin.stop()).toEqual({ exitCode: 0, signal: null });
    await logged((l) => l === 'stub got SIGTERM', 'SIGTERM');
    await plugin.dispose();
    expect(existsSync(plugin.socket)).toBe(false);
    expect(existsSync(plugin.stateDir)).toBe(false);
  }, 60_000);

  test('startPlugin fails clearly when the plugin exits at start-up', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'tsbt-stub-'));
    cleanup.add(() => rm(dir, { recursive: true, force: true }), 'stub dir');
    const entry = path.join(dir, 'bad.cjs');
    await writeFile(entry, `console.error('cannot start: no config'); process.exit(3);`);
    await expect(startPlugin({ name: uniqueName('bad'), entry })).rejects.toThrow(/exited \(code 3.*\n.*cannot start: no config/);
  }, 20_000);
});
