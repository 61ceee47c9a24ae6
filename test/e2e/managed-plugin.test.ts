/**
 * Issue 7, end to end: tsbridge installed the way Docker users install plugins. The rootfs is
 * assembled offline from this host (scripts/plugin-build.sh --offline: there is no registry
 * here), then docker plugin create / set / enable, a network with the plugin as network AND
 * IPAM driver, real containers, a published port, masqueraded egress, the state outliving the
 * plugin (rm + create again, which is what an upgrade does to the rootfs), and disable / rm
 * leaving nothing behind.
 *
 * Needs root, a running dockerd (scripts/docker-up.sh), the test image (scripts/test-image.sh),
 * dist/ built (npm run build) and iproute2, nftables, iptables, conntrack on the host.
 */
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Cleanup } from '../lib/cleanup.js';
import { docker, dockerOk, removeContainers, removeNetworks, requireDocker, uniqueName, waitFor } from '../lib/docker.js';
import { createOutsideWorld, startPeerRecorder, type OutsideWorld, type PeerRecorder } from '../lib/netns.js';
import { REPO_ROOT } from '../lib/plugin.js';
import { tcpRequest } from '../lib/probe.js';
import { requireRoot, sh } from '../lib/run.js';
import { footprint, foreignFirewall, runIn, stateOnDisk, TEST_IMAGE } from './helpers.js';

const PLUGIN = `${uniqueName('mp')}:latest`; // `-d NAME:latest`: a bare name does not resolve on 20.10
const SUBNET = '10.215.31.0/24';
const HOST_PORT = 23100 + (randomBytes(2).readUInt16BE() % 800);
const HTTP_GET = 'GET / HTTP/1.0\r\n\r\n';
const INDEX = 'hello from tsbridge-test';
const CAP_NET_ADMIN = 12;

const cleanup = new Cleanup();
let world: OutsideWorld;
let recorder: PeerRecorder;
let outDir: string;
let stateDir: string;
let binDir: string; // where plugin-build.sh puts the `tsbridge` command (TSBRIDGE_BIN_DIR)
let baselineForeign: string;
const timings: Record<string, number> = {};

async function timed<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const t0 = Date.now();
  try {
    return await fn();
  } finally {
    timings[label] = Date.now() - t0;
  }
}

/** Disables (forced) and removes the plugin if it exists. */
async function removePlugin(name: string): Promise<void> {
  if ((await dockerOk(['plugin', 'inspect', name])).exitCode !== 0) return;
  await dockerOk(['plugin', 'disable', '-f', name]);
  const r = await dockerOk(['plugin', 'rm', '-f', name]);
  if (r.exitCode !== 0 && (await dockerOk(['plugin', 'inspect', name])).exitCode === 0) {
    throw new Error(`docker plugin rm -f ${name}: ${r.stderr.trim()}`);
  }
}

/**
 * For cleanup after a failure half-way: networks can only be removed through an enabled plugin,
 * so bring it back (create it again from the build if it was removed) before removing them.
 */
async function ensurePluginUp(): Promise<void> {
  if ((await dockerOk(['plugin', 'inspect', PLUGIN])).exitCode !== 0) {
    const bundle = path.join(outDir, 'tsbridge');
    if (!existsSync(path.join(bundle, 'config.json'))) return;
    await dockerOk(['plugin', 'create', PLUGIN, bundle]);
    await dockerOk(['plugin', 'set', PLUGIN, `state.source=${stateDir}`]);
  }
  await dockerOk(['plugin', 'enable', PLUGIN]);
}

const pluginId = () => docker(['plugin', 'inspect', '-f', '{{.Id}}', PLUGIN]);

/** The plugin's process on the host: node running main.js inside the plugin's container. */
function pluginProcess(id: string): { pid: number; env: Map<string, string>; capEff: bigint } | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (!cmdline.includes('/opt/tsbridge/dist/src/main.js')) continue;
      // The engine runs the plugin as a container whose ID is the plugin's: it shows in the cgroup path.
      const ours = readFileSync(`/proc/${entry}/cgroup`, 'utf8').includes(id) || readlinkSync(`/proc/${entry}/root`).includes(id);
      if (!ours) continue;
      const env = new Map(
        readFileSync(`/proc/${entry}/environ`, 'utf8')
          .split('\0')
          .filter(Boolean)
          .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as [string, string]),
      );
      const capHex = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'))![1]!;
      return { pid: Number(entry), env, capEff: BigInt(`0x${capHex}`) };
    } catch {
      // the process went away while we looked
    }
  }
  return undefined;
}

/** The host side of a busybox nc HTTP request from the outside-world namespace. */
function httpFromOutside(host: string, port: number): Promise<string> {
  return world.ns.exec('busybox', ['nc', '-w', '3', host, String(port)], { input: HTTP_GET, timeoutMs: 10_000 });
}

beforeAll(async () => {
  requireRoot('the managed-plugin e2e test');
  await requireDocker();
  await docker(['image', 'inspect', TEST_IMAGE]).catch(() => {
    throw new Error(`test image ${TEST_IMAGE} missing: run scripts/test-image.sh`);
  });
  if (!existsSync(path.join(REPO_ROOT, 'dist', 'src', 'main.js'))) throw new Error('dist/src/main.js missing: run npm run build');
  outDir = await mkdtemp('/tmp/tsbt-mp-build-');
  cleanup.add(() => rm(outDir, { recursive: true, force: true }), 'build dir');
  stateDir = await mkdtemp('/tmp/tsbt-mp-state-');
  cleanup.add(() => rm(stateDir, { recursive: true, force: true }), 'state dir');
  binDir = await mkdtemp('/tmp/tsbt-mp-bin-');
  cleanup.add(() => rm(binDir, { recursive: true, force: true }), 'bin dir');
  cleanup.add(() => removePlugin(PLUGIN), `plugin ${PLUGIN}`);
  world = await createOutsideWorld({ prefix: 'mp' });
  cleanup.add(() => world.delete(), 'outside world');
  recorder = await startPeerRecorder(world.ns, 7070);
  cleanup.add(() => recorder.stop(), 'recorder');
  baselineForeign = await foreignFirewall();
});

afterAll(async () => {
  await cleanup.run();
  console.log(`managed plugin timings (ms): ${JSON.stringify(timings)}`);
});

describe('tsbridge as a managed plugin', () => {
  const net = uniqueName('mpn');
  const web = uniqueName('web');
  const client = uniqueName('cli');
  const c = new Cleanup();
  afterAll(async () => {
    await c.run();
  });

  test('the offline build assembles a rootfs and docker plugin create takes it', async () => {
    await timed('build+create', () =>
      sh('bash', ['scripts/plugin-build.sh', '--offline', '--prebuilt', '--out', outDir, '--name', PLUGIN, '--state-dir', stateDir, '--no-enable'], {
        cwd: REPO_ROOT,
        timeoutMs: 300_000,
        env: { TSBRIDGE_BIN_DIR: binDir },
      }),
    );
    expect(existsSync(path.join(outDir, 'tsbridge', 'config.json'))).toBe(true);
    expect(existsSync(path.join(outDir, 'tsbridge', 'rootfs', 'usr', 'local', 'bin', 'node'))).toBe(true);
    const inspect = JSON.parse(await docker(['plugin', 'inspect', PLUGIN]))[0];
    expect(inspect.Enabled).toBe(false);
    expect(inspect.Config.Interface.Types).toEqual(
      expect.arrayContaining(['docker.networkdriver/1.0', 'docker.ipamdriver/1.0']),
    );
    expect(inspect.Config.Network.Type).toBe('host');
    const state = inspect.Settings.Mounts.find((m: { Destination: string }) => m.Destination === '/var/lib/tsbridge');
    expect(state.Source).toBe(stateDir);
  });

  test('docker plugin set works while disabled, is refused while enabled, and is used after enable', async () => {
    await timed('enable', () => docker(['plugin', 'enable', PLUGIN]));
    const refused = await dockerOk(['plugin', 'set', PLUGIN, 'TSBRIDGE_LOG_LEVEL=debug']);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/active plugin|disable plugin before setting/i);

    await docker(['plugin', 'disable', PLUGIN]);
    await docker(['plugin', 'set', PLUGIN, 'TSBRIDGE_LOG_LEVEL=debug']);
    await docker(['plugin', 'enable', PLUGIN]);

    const id = await pluginId();
    const proc = await waitFor(() => pluginProcess(id), 10_000, { what: 'the plugin process' });
    expect(proc.env.get('TSBRIDGE_LOG_LEVEL')).toBe('debug');
    expect(proc.env.get('TSBRIDGE_SOCKET')).toBe('/run/docker/plugins/tsbridge.sock');
    expect(proc.capEff & (1n << BigInt(CAP_NET_ADMIN))).not.toBe(0n);
    // The engine's private directory for the plugin holds its socket.
    expect(existsSync(`/run/docker/plugins/${id}/tsbridge.sock`)).toBe(true);
  });

  test('a network with the plugin as network and IPAM driver; containers reach each other by name', async () => {
    // Without the plugin, docker rm -f of a container on its network waits a minute for it.
    c.add(async () => {
      if ((await dockerOk(['network', 'inspect', net])).exitCode !== 0) return;
      await ensurePluginUp();
      await removeContainers([web, client]);
      await removeNetworks([net]);
    }, `${net} and its containers`);
    await timed('network create', () =>
      docker(['network', 'create', '-d', PLUGIN, '--ipam-driver', PLUGIN, '--subnet', SUBNET, net]),
    );
    const info = JSON.parse(await docker(['network', 'inspect', net]))[0];
    expect(info.Driver).toBe(PLUGIN);
    expect(info.IPAM.Driver).toBe(PLUGIN);
    // The state is in the host directory given with `docker plugin set state.source=...`.
    const state = await stateOnDisk(stateDir);
    expect(Object.keys(state.networks)).toContain(info.Id);
    // Written through the read-write mount of the host's /proc/sys (the plugin's own is read-only).
    expect(readFileSync(`/proc/sys/net/ipv4/conf/tsb-${info.Id.slice(0, 11)}/route_localnet`, 'utf8').trim()).toBe('1');

    await timed('run web', () =>
      docker(['run', '-d', '--network', net, '--name', web, '-p', `${HOST_PORT}:80`, TEST_IMAGE, 'httpd', '-f', '-p', '80', '-h', '/www']),
    );
    await docker(['run', '-d', '--network', net, '--name', client, TEST_IMAGE, 'sleep', '600']);
    const ip = await docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, web]);
    expect(ip).toMatch(/^10\.215\.31\.\d+$/);
    const out = await docker(['exec', client, 'sh', '-c', `ping -c1 -W2 ${web} && printf '${HTTP_GET.replace(/\r\n/g, '\\r\\n')}' | nc -w 3 ${web} 80`]);
    expect(out).toContain(`64 bytes from ${ip}`);
    expect(out).toContain(INDEX);
  });

  test('the published port answers on 127.0.0.1 and on a non-loopback host address', async () => {
    const local = await waitFor(async () => (await tcpRequest('127.0.0.1', HOST_PORT, HTTP_GET)).includes(INDEX), 10_000, {
      what: `127.0.0.1:${HOST_PORT}`,
    });
    expect(local).toBe(true);
    // The host end of the outside-world link is one of the host's own, non-loopback addresses.
    expect(await tcpRequest(world.hostAddr, HOST_PORT, HTTP_GET)).toContain(INDEX);
    // And from another machine (the outside-world namespace) through that address.
    expect(await httpFromOutside(world.hostAddr, HOST_PORT)).toContain(INDEX);
  });

  test('the `tsbridge` command plugin-build.sh installed finds the plugin\'s state without flags, as sudo runs it', async () => {
    // sudo on Debian 12 keeps no TSBRIDGE_* variable and sets PATH to its secure_path.
    const out = await sh('env', ['-i', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', path.join(binDir, 'tsbridge'), 'ports', '--json']);
    const rows = JSON.parse(out) as { networkId: string; hostPort: number }[];
    const netId = await docker(['network', 'inspect', '-f', '{{.Id}}', net]);
    expect(rows.map((r) => [r.networkId, r.hostPort])).toContainEqual([netId, HOST_PORT]);
  });

  test('inside the plugin, only the host\'s /proc/sys/net is writable: /proc/sys/kernel and the rest are not', async () => {
    const proc = pluginProcess(await pluginId());
    expect(proc).toBeDefined();
    // Opened for writing, never written: in the plugin's own mount namespace and root, with its node.
    const probe = `
      const fs = require('node:fs'), path = require('node:path');
      const tryOpen = (p) => { try { fs.closeSync(fs.openSync(p, fs.constants.O_WRONLY)); return 'writable'; } catch (e) { return e.code; } };
      const out = { writable: [], refused: {}, hostSys: fs.readdirSync('/host/proc/sys') };
      const walk = (d) => { for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile()) { const r = tryOpen(p); if (r === 'writable') out.writable.push(p); else out.refused[r] = (out.refused[r] || 0) + 1; }
      } };
      walk('/proc/sys');
      out.corePattern = tryOpen('/proc/sys/kernel/core_pattern');
      out.hostCorePattern = tryOpen('/host/proc/sys/kernel/core_pattern');
      out.ipForward = tryOpen('/host/proc/sys/net/ipv4/ip_forward');
      console.log(JSON.stringify(out));`;
    const seen = JSON.parse(
      await sh('nsenter', ['--target', String(proc!.pid), '--mount', '--root', '--wd', '--', '/usr/local/bin/node', '-e', probe]),
    ) as { writable: string[]; refused: Record<string, number>; hostSys: string[]; corePattern: string; hostCorePattern: string; ipForward: string };
    expect(seen.writable).toEqual([]);
    expect(seen.refused.EROFS).toBeGreaterThan(100);
    expect(seen.corePattern).toBe('EROFS');
    expect(seen.hostSys).toEqual(['net']);
    expect(seen.hostCorePattern).toBe('ENOENT');
    // The probe can see a writable file: the one mount tsbridge needs.
    expect(seen.ipForward).toBe('writable');
  });

  test('egress to the outside world is masqueraded to the host address', async () => {
    const out = await runIn(net, `echo hi | nc -w 3 ${world.nsAddr} ${recorder.port}`);
    const peer = await recorder.waitForPeer((p) => p.proto === 'tcp');
    expect(peer.address).toBe(world.hostAddr);
    expect(out).toContain(world.hostAddr);
  });

  test('disabled, traffic still flows; the state outlives the plugin: rm -f and create again (what an upgrade does) keeps the network', async () => {
    const oldId = await pluginId();
    const refused = await dockerOk(['plugin', 'disable', PLUGIN]);
    expect(refused.stderr).toMatch(/in use/);
    await docker(['plugin', 'disable', '-f', PLUGIN]);
    // No plugin process: the kernel alone still carries the running containers' traffic.
    expect(await docker(['exec', client, 'ping', '-c1', '-W2', web])).toContain('1 packets received');
    expect(await tcpRequest('127.0.0.1', HOST_PORT, HTTP_GET)).toContain(INDEX);
    await docker(['plugin', 'rm', '-f', PLUGIN]);
    await timed('re-create+enable', async () => {
      await docker(['plugin', 'create', PLUGIN, path.join(outDir, 'tsbridge')]);
      await docker(['plugin', 'set', PLUGIN, `state.source=${stateDir}`, 'TSBRIDGE_LOG_LEVEL=debug']);
      await docker(['plugin', 'enable', PLUGIN]);
    });
    expect(await pluginId()).not.toBe(oldId);
    // Containers kept running; a new one joins the same network and still finds them by name.
    const out = await runIn(net, `printf '${HTTP_GET.replace(/\r\n/g, '\\r\\n')}' | nc -w 3 ${web} 80; echo hi | nc -w 3 ${world.nsAddr} ${recorder.port}`);
    expect(out).toContain(INDEX);
    expect(out).toContain(world.hostAddr);
    expect(await tcpRequest('127.0.0.1', HOST_PORT, HTTP_GET)).toContain(INDEX);
  });

  test('network rm, plugin disable and plugin rm leave nothing behind', async () => {
    expect(JSON.parse(await docker(['plugin', 'inspect', PLUGIN]))[0].Enabled).toBe(true);
    await removeContainers([web, client]);
    await timed('network rm', () => docker(['network', 'rm', net]));
    expect(await footprint()).toEqual({ links: [], nft: [], iptables: [] });
    const id = await pluginId();
    await timed('disable', () => docker(['plugin', 'disable', PLUGIN]));
    await docker(['plugin', 'rm', PLUGIN]);
    expect((await dockerOk(['plugin', 'inspect', PLUGIN])).exitCode).not.toBe(0);
    expect(pluginProcess(id)).toBeUndefined();
    expect(existsSync(`/run/docker/plugins/${id}`)).toBe(false);
    expect(await footprint()).toEqual({ links: [], nft: [], iptables: [] });
    expect(await foreignFirewall()).toBe(baselineForeign);
  });
});
