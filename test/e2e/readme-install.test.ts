/**
 * Issue 16: the README's managed-plugin blocks, run as written — install, settings, use, upgrade,
 * uninstall — from this checkout, with a stand-in for Debian 12's sudo (env_reset, secure_path;
 * this machine has no sudo, like a root shell on a fresh Debian). Then nothing is left: no
 * plugin, network, container, link, nftables table or iptables chain, no state directory, no
 * `tsbridge` command, no build directory, and the rest of the firewall as it was.
 *
 * The blocks use fixed names (tsbridge:latest, net1, web, 10.10.0.0/24, host port 8080,
 * /var/lib/tsbridge-plugin, /usr/local/bin/tsbridge): the test refuses to start when any of them
 * is already taken, rather than touch what is not its own. `busybox` is the test image under a
 * second tag when there is no busybox image (there is no registry here).
 *
 * Needs root, a running dockerd (scripts/docker-up.sh), the test image (scripts/test-image.sh)
 * and what scripts/plugin-build.sh needs (it runs install-deps.sh --runtime and builds).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rename, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Cleanup } from '../lib/cleanup.js';
import { docker, dockerOk, requireDocker, waitFor } from '../lib/docker.js';
import { REPO_ROOT } from '../lib/plugin.js';
import { tcpRequest } from '../lib/probe.js';
import { readmeBlock, writeSudoStandIn } from '../lib/readme.js';
import { requireRoot, sh, shOk } from '../lib/run.js';
import { footprint, foreignFirewall, TEST_IMAGE } from './helpers.js';

const PLUGIN = 'tsbridge:latest';
const NET = 'net1';
const CONTAINER = 'web';
const SUBNET = '10.10.0.0/24';
const PORT = 8080;
const STATE = '/var/lib/tsbridge-plugin';
const COMMAND = '/usr/local/bin/tsbridge';
const BUILD = path.join(REPO_ROOT, 'plugin', 'build');
const HTTP_GET = 'GET / HTTP/1.0\r\n\r\n';

const cleanup = new Cleanup();
let shimDir: string;
let baselineForeign: string;

/** Runs one README block as a user's shell would (stops at the first failing command). */
async function runBlock(name: string, timeoutMs = 60_000): Promise<string> {
  const script = readmeBlock(name);
  const r = await shOk('bash', ['-e', '-o', 'pipefail', '-c', script], {
    cwd: REPO_ROOT,
    timeoutMs,
    env: { PATH: `${shimDir}:${process.env.PATH}` },
  });
  if (r.exitCode !== 0) {
    throw new Error(`README block "${name}" failed (exit ${r.exitCode}):\n${script}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
  }
  return r.stdout;
}

const exists = async (args: string[]) => (await dockerOk(args)).exitCode === 0;

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '0.0.0.0', () => srv.close(() => resolve(true)));
  });
}

beforeAll(async () => {
  requireRoot('the README install test');
  await requireDocker();
  await docker(['image', 'inspect', TEST_IMAGE]).catch(() => {
    throw new Error(`test image ${TEST_IMAGE} missing: run scripts/test-image.sh`);
  });
  const taken: string[] = [];
  if (await exists(['plugin', 'inspect', PLUGIN])) taken.push(`plugin ${PLUGIN}`);
  if (await exists(['network', 'inspect', NET])) taken.push(`network ${NET}`);
  if (await exists(['container', 'inspect', CONTAINER])) taken.push(`container ${CONTAINER}`);
  for (const p of [STATE, COMMAND]) if (existsSync(p)) taken.push(p);
  if (!(await portFree(PORT))) taken.push(`host port ${PORT}`);
  // A route covering the subnet (other than the default route), or inside it.
  const routes = [...(await sh('ip', ['route', 'show', 'match', SUBNET])).split('\n'), ...(await sh('ip', ['route', 'show', 'root', SUBNET])).split('\n')];
  if (routes.some((l) => l && !l.startsWith('default'))) taken.push(`a route overlapping ${SUBNET}`);
  if (taken.length) throw new Error(`the README blocks would touch what is not this test's: ${taken.join(', ')} — remove it or run elsewhere`);

  shimDir = await mkdtemp('/tmp/tsbt-readme-');
  cleanup.add(() => rm(shimDir, { recursive: true, force: true }), 'sudo stand-in');
  // The test run's rootfs cache (scripts/test.sh) reaches plugin-build.sh through sudo.
  await writeSudoStandIn(shimDir, ['TSBRIDGE_PLUGIN_CACHE']);

  // A build directory of the developer's own is kept aside (the uninstall block removes plugin/build).
  if (existsSync(BUILD)) {
    const aside = path.join(shimDir, 'plugin-build-aside');
    await rename(BUILD, aside);
    cleanup.add(async () => {
      await rm(BUILD, { recursive: true, force: true });
      await rename(aside, BUILD);
    }, 'plugin/build put back');
  }
  // The README's containers run `busybox`; here that is the test image under a second tag.
  if (!(await exists(['image', 'inspect', 'busybox']))) {
    await docker(['tag', TEST_IMAGE, 'busybox:latest']);
    cleanup.add(() => dockerOk(['rmi', 'busybox:latest']), 'busybox tag');
  }
  // Whatever the blocks made, if a step failed half-way (only names checked free above).
  cleanup.add(async () => {
    await dockerOk(['rm', '-f', CONTAINER]);
    if (await exists(['network', 'inspect', NET])) {
      if (await exists(['plugin', 'inspect', PLUGIN])) await dockerOk(['plugin', 'enable', PLUGIN]);
      await dockerOk(['network', 'rm', NET]);
    }
    if (await exists(['plugin', 'inspect', PLUGIN])) {
      await dockerOk(['plugin', 'disable', '-f', PLUGIN]);
      await dockerOk(['plugin', 'rm', '-f', PLUGIN]);
    }
    await rm(STATE, { recursive: true, force: true });
    await rm(COMMAND, { force: true });
  }, 'README leftovers');
  baselineForeign = await foreignFirewall();
}, 60_000);

afterAll(async () => {
  await cleanup.run();
});

const pluginId = () => docker(['plugin', 'inspect', '-f', '{{.Id}}', PLUGIN]);

/** `sudo tsbridge ports --json` as a user types it (through the sudo stand-in). */
async function portsJson(): Promise<{ networkId: string; hostPort: number; containerIp: string }[]> {
  return JSON.parse(await sh(path.join(shimDir, 'sudo'), ['tsbridge', 'ports', '--json'])) as never;
}

describe("the README's managed plugin, block by block", () => {
  test('install: plugin-build.sh from this checkout creates and enables the plugin and puts tsbridge on PATH', async () => {
    await runBlock('plugin-install', 600_000);
    const info = JSON.parse(await docker(['plugin', 'inspect', PLUGIN]))[0];
    expect(info.Enabled).toBe(true);
    expect(info.Settings.Mounts.find((m: { Destination: string }) => m.Destination === '/var/lib/tsbridge').Source).toBe(STATE);
    expect(existsSync(COMMAND)).toBe(true);
  });

  test('settings: disable, set, enable — before any network uses it', async () => {
    await runBlock('plugin-settings');
    const info = JSON.parse(await docker(['plugin', 'inspect', PLUGIN]))[0];
    expect(info.Enabled).toBe(true);
    expect(info.Settings.Env).toContain('TSBRIDGE_LOG_LEVEL=debug');
  });

  test('use: a network, a container with a published port, and `sudo tsbridge ports` lists it without flags', async () => {
    const out = await runBlock('plugin-use');
    const netId = await docker(['network', 'inspect', '-f', '{{.Id}}', NET]);
    const ip = await docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${NET}").IPAddress}}`, CONTAINER]);
    expect(ip).toMatch(/^10\.10\.0\.\d+$/);
    // The block's own `sudo tsbridge ports` printed the table with the port and the container's address.
    expect(out).toContain(`:${PORT}`);
    expect(out).toContain(`${ip}:80`);
    expect((await portsJson()).map((r) => [r.networkId, r.hostPort])).toContainEqual([netId, PORT]);
    const answer = await waitFor(async () => (await tcpRequest('127.0.0.1', PORT, HTTP_GET)).startsWith('HTTP/1.'), 10_000, {
      what: `127.0.0.1:${PORT}`,
    });
    expect(answer).toBe(true);
  });

  test('upgrade: plugin-build.sh --force with the network in use keeps the network, the container and the port', async () => {
    const oldId = await pluginId();
    await runBlock('plugin-upgrade', 600_000);
    expect(await pluginId()).not.toBe(oldId);
    expect(await docker(['inspect', '-f', '{{.State.Running}}', CONTAINER])).toBe('true');
    expect((await tcpRequest('127.0.0.1', PORT, HTTP_GET)).startsWith('HTTP/1.')).toBe(true);
    // The command follows the new plugin ID by itself.
    expect((await portsJson()).some((r) => r.hostPort === PORT)).toBe(true);
  });

  test('uninstall: containers, networks, then the plugin — and nothing is left', async () => {
    await runBlock('plugin-uninstall', 120_000);
    expect(await exists(['plugin', 'inspect', PLUGIN])).toBe(false);
    expect(await exists(['network', 'inspect', NET])).toBe(false);
    expect(await exists(['container', 'inspect', CONTAINER])).toBe(false);
    expect(existsSync(STATE)).toBe(false);
    expect(existsSync(COMMAND)).toBe(false);
    expect(existsSync(BUILD)).toBe(false);
    expect(await footprint()).toEqual({ links: [], nft: [], iptables: [] });
    expect(await foreignFirewall()).toBe(baselineForeign);
  });
});
