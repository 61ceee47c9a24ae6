/**
 * Issue 10: the README's quick start, run as a newcomer runs it — the `sh` blocks of its
 * "Quick start" section, extracted from README.md verbatim, on whichever engine the tier runs
 * against (scripts/test.sh runs this tier on Docker 20.10 and on 28). So the quick start can
 * never drift from what works again (it once failed at `--name a`: Docker refuses one-character
 * names).
 *
 * The plugin is started as the README says (`scripts/start.sh`, in the background; `sudo` is
 * dropped since the tests run as root), with one difference: its state goes to a throwaway
 * directory, so a real installation's /var/lib/tsbridge is never touched. The image the README
 * uses (`busybox`) does not exist offline: the test image is tagged under that name for the test
 * and the tag removed afterwards (unless such an image was already there).
 *
 * Needs root, a running dockerd (scripts/docker-up.sh), the test image (scripts/test-image.sh),
 * and no other tsbridge answering on /run/docker/plugins/tsbridge.sock.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Cleanup } from '../lib/cleanup.js';
import { docker, dockerOk, removeContainers, removeNetworks, requireDocker, waitFor } from '../lib/docker.js';
import { PLUGIN_DIR, pluginCall, REPO_ROOT } from '../lib/plugin.js';
import { requireRoot, shOk } from '../lib/run.js';
import { footprint, TEST_IMAGE } from './helpers.js';

/** The fenced `sh` blocks of the README section with this heading, as written. */
export function shBlocks(markdown: string, heading: string): string[] {
  const start = markdown.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`README.md has no "## ${heading}" section`);
  const end = markdown.indexOf('\n## ', start + 1);
  const section = markdown.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

const README = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
const BLOCKS = shBlocks(README, 'Quick start');
const SOCKET = path.join(PLUGIN_DIR, 'tsbridge.sock');
/** The README's lines that start the plugin (a foreground process), and everything else. */
const START_LINES = BLOCKS.flatMap((b) => b.split('\n')).filter((l) => /scripts\/start\.sh/.test(l));
const COMMANDS = BLOCKS.filter((b) => !/scripts\/start\.sh/.test(b));

const cleanup = new Cleanup();
let plugin: ChildProcess | undefined;
let pluginLog = '';

afterAll(async () => {
  await cleanup.run();
});

/** Stops the plugin started through scripts/start.sh (npm and node below it: the whole group). */
async function stopPlugin(): Promise<void> {
  const p = plugin;
  if (!p?.pid || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  process.kill(-p.pid, 'SIGTERM');
  const timer = setTimeout(() => p.pid && process.kill(-p.pid, 'SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

test('the quick start has a block starting the plugin and a block of docker commands', () => {
  expect(START_LINES).toHaveLength(1);
  expect(COMMANDS.length).toBeGreaterThanOrEqual(1);
  expect(COMMANDS.join('\n')).toMatch(/docker network create -d tsbridge/);
});

test("the README's quick start runs as written and leaves nothing of tsbridge behind", async () => {
  requireRoot("the README's quick start");
  await requireDocker();
  const live = await pluginCall(SOCKET, 'Plugin.Activate', undefined, 2000).then(() => true, () => false);
  if (live) throw new Error(`${SOCKET} is served by another tsbridge: the quick start needs the driver name tsbridge; stop that one first`);

  // The image name the README uses.
  expect(COMMANDS.join('\n')).toContain(' busybox ');
  if ((await dockerOk(['image', 'inspect', 'busybox'])).exitCode !== 0) {
    await docker(['tag', TEST_IMAGE, 'busybox:latest']);
    cleanup.add(() => docker(['rmi', 'busybox:latest']), 'busybox tag');
  }

  // What the commands create, removed whatever happens (names from the README).
  const stateDir = await mkdtemp(path.join(tmpdir(), 'tsbridge-readme-'));
  cleanup.add(() => rm(stateDir, { recursive: true, force: true }), 'state dir');
  // scripts/start.sh installs the `tsbridge` command (packaging/install-cli.sh): here, not on the host's PATH.
  const binDir = await mkdtemp(path.join(tmpdir(), 'tsbridge-readme-bin-'));
  cleanup.add(() => rm(binDir, { recursive: true, force: true }), 'bin dir');
  cleanup.add(() => stopPlugin(), 'plugin');
  cleanup.add(async () => {
    const text = COMMANDS.join('\n');
    await removeContainers([...text.matchAll(/--name (\S+)/g)].map((m) => m[1]!));
    await removeNetworks([...new Set([...text.matchAll(/docker network create [^\n#]*?(\S+)\s*(?:#.*)?$/gm)].map((m) => m[1]!))]);
  }, 'quick-start containers and networks');

  // "In one terminal": the plugin, in the foreground there; in the background here.
  const start = START_LINES[0]!.replace(/#.*$/, '').trim().replace(/^sudo\s+/, '');
  plugin = spawn('bash', ['-c', start], {
    cwd: REPO_ROOT,
    env: { ...process.env, TSBRIDGE_STATE_DIR: stateDir, TSBRIDGE_BIN_DIR: binDir },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  plugin.stdout!.on('data', (d: Buffer) => (pluginLog += d.toString()));
  plugin.stderr!.on('data', (d: Buffer) => (pluginLog += d.toString()));
  await waitFor(
    async () => {
      if (plugin!.exitCode !== null) throw new Error(`"${start}" exited with ${plugin!.exitCode}:\n${pluginLog}`);
      return (await pluginCall(SOCKET, 'Plugin.Activate', undefined, 2000)).status === 200;
    },
    180_000,
    { what: `"${start}" to serve ${SOCKET}`, intervalMs: 500 },
  );

  // "In another": each block as written.
  for (const block of COMMANDS) {
    const r = await shOk('bash', ['-euo', 'pipefail', '-x', '-c', block], { timeoutMs: 240_000, cwd: REPO_ROOT });
    expect({ block, exitCode: r.exitCode, stderr: r.exitCode === 0 ? '' : `${r.stderr}\n--- plugin ---\n${pluginLog}` }).toEqual({ block, exitCode: 0, stderr: '' });
    // Both pings of the quick start got their answer.
    expect(r.stdout.match(/1 packets received/g) ?? []).toHaveLength((block.match(/ping -c1/g) ?? []).length);
  }

  // "nothing tsbridge made is left: no bridge, veth, rule or address"
  expect(await footprint()).toEqual({ links: [], nft: [], iptables: [] });
  await stopPlugin();
  expect(plugin.exitCode === 0 || plugin.signalCode === 'SIGTERM').toBe(true);
}, 600_000);
