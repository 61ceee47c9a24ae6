/**
 * The install scripts check every prerequisite before they change anything (issue 16). Run with
 * stand-ins on PATH — an old node, a dpkg that knows no package, an apt-get and npm that record
 * being called, a uname of another architecture — nothing here installs, builds or needs Docker.
 * Also the README helper: marked blocks and the sudo stand-in the README test runs them with.
 */
import { chmod, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { markedBlocks, SUDO_SECURE_PATH, writeSudoStandIn } from '../lib/readme.js';
import { shOk } from '../lib/run.js';

let fake: string;
const calls = () => path.join(fake, 'calls');

async function stub(name: string, body: string): Promise<void> {
  const file = path.join(fake, name);
  await writeFile(file, `#!/bin/sh\n${body}\n`);
  await chmod(file, 0o755);
}

/** A stand-in that records its call (so a test can say it never ran) and succeeds. */
const recorder = (name: string) => stub(name, `echo "${name} $*" >> '${path.join(fake, 'calls')}'`);

beforeEach(async () => {
  fake = await mkdtemp(path.join(tmpdir(), 'tsbt-install-'));
  await chmod(fake, 0o755);
  await stub('node', 'echo v18.20.4');
  await stub('dpkg-query', 'exit 1'); // every package missing
  await recorder('apt-get');
  await recorder('npm');
});

afterEach(async () => {
  await rm(fake, { recursive: true, force: true });
});

/** Runs a repository script with the stand-ins first on PATH (as nobody when `asUser`, if we are root). */
function run(script: string, args: string[], opts: { asUser?: boolean; env?: Record<string, string> } = {}) {
  const asNobody = opts.asUser && process.getuid?.() === 0;
  const cmd = asNobody ? 'setpriv' : 'bash';
  const argv = asNobody ? ['--reuid=65534', '--regid=65534', '--clear-groups', 'bash', script, ...args] : [script, ...args];
  return shOk(cmd, argv, { env: { PATH: `${fake}:${process.env.PATH}`, ...opts.env }, timeoutMs: 60_000 });
}

const recorded = async () => (existsSync(calls()) ? (await readFile(calls(), 'utf8')).trim() : '');

describe('scripts/install-deps.sh', () => {
  test('with node 18 it stops before apt-get or npm runs, and says how to get Node 20', async () => {
    const r = await run('scripts/install-deps.sh', ['--runtime']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('nothing was changed');
    expect(r.stderr).toMatch(/node v18\.20\.4 .* is too old: tsbridge needs 20 or later/);
    expect(r.stderr).toContain("Debian 12's own nodejs is 18.x");
    expect(r.stderr).toContain('nvm install 20');
    expect(await recorded()).toBe('');
  });

  test('not root with packages missing: every problem is listed at once, nothing runs', async () => {
    const r = await run('scripts/install-deps.sh', ['--runtime'], { asUser: true });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/root: packages are missing \(iptables nftables iproute2 conntrack\)/);
    expect(r.stderr).toContain('too old');
    expect(await recorded()).toBe('');
  });

  test('through sudo, the message says how to keep an nvm node on PATH', async () => {
    const r = await run('scripts/install-deps.sh', ['--runtime'], { env: { SUDO_USER: 'someone' } });
    expect(r.stderr).toContain('sudo env PATH="$PATH" bash scripts/install-deps.sh');
  });

  test('a Docker engine already installed is never replaced: docker.io is left out of what is missing', async () => {
    await stub('dockerd', 'exit 0');
    const r = await run('scripts/install-deps.sh', [], { asUser: true });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`this host has its own Docker engine (${fake}/dockerd (not from any package)): Debian's docker.io is not installed over it`);
    expect(r.stderr).toMatch(/packages are missing \(iptables nftables iproute2 busybox-static conntrack gcc libc6-dev docker-compose python3 etcd-server iperf3 openssl\)/);
    expect(await recorded()).toBe('');
  });

  test('an unknown option is refused; the interface is "" or --runtime', async () => {
    const r = await run('scripts/install-deps.sh', ['--frobnicate']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('unknown option --frobnicate');
    expect(await recorded()).toBe('');
  });
});

describe('scripts/plugin-build.sh', () => {
  test('another architecture is refused up front for the offline build, naming what it supports', async () => {
    await stub('uname', 'if [ "$1" = -m ]; then echo aarch64; else exec /usr/bin/uname "$@"; fi');
    await stub('node', 'echo v20.11.0');
    const out = path.join(fake, 'out');
    const r = await run('scripts/plugin-build.sh', ['--rootfs-only', '--out', out]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('architecture: the offline build');
    expect(r.stderr).toContain('supports x86_64 only, this host is aarch64');
    expect(existsSync(out)).toBe(false);
    expect(await recorded()).toBe('');
  });

  test('with node 18 nothing is built: no npm, no apt-get, no build directory', async () => {
    const out = path.join(fake, 'out');
    const r = await run('scripts/plugin-build.sh', ['--rootfs-only', '--out', out]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('too old');
    expect(existsSync(out)).toBe(false);
    expect(await recorded()).toBe('');
  });
});

describe('packaging/install-service.sh', () => {
  test('with node 18 it installs nothing', async () => {
    const prefix = path.join(fake, 'opt');
    const r = await run('packaging/install-service.sh', [], {
      env: { TSBRIDGE_PREFIX: prefix, TSBRIDGE_UNIT_DIR: path.join(fake, 'unit'), TSBRIDGE_BIN_DIR: path.join(fake, 'bin') },
    });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('too old');
    expect((await readdir(fake)).sort()).toEqual(['apt-get', 'dpkg-query', 'node', 'npm']);
  });
});

describe('test/lib/readme.ts', () => {
  test('marked blocks: indentation inside a list item is removed; a marker without a block is an error', () => {
    const md = ['text', '<!-- readme-test: a -->', '```sh', 'echo a', '```', '- item', '  <!-- readme-test: b -->', '  ```sh', '  echo b', '    more', '  ```'].join('\n');
    expect(Object.fromEntries(markedBlocks(md))).toEqual({ a: 'echo a\n', b: 'echo b\n  more\n' });
    expect(() => markedBlocks('<!-- readme-test: c -->\nno fence')).toThrow(/not followed by a fenced code block/);
    expect(() => markedBlocks('<!-- readme-test: d -->\n```\nx\n')).toThrow(/no closing fence/);
  });

  test("the sudo stand-in behaves like Debian 12's sudo: variables dropped, PATH replaced; -E keeps variables only", async () => {
    await writeSudoStandIn(fake);
    const env = { PATH: `${fake}:/usr/bin:/bin`, TSBRIDGE_X: '1' };
    const plain = await shOk(path.join(fake, 'sudo'), ['env'], { env });
    expect(plain.stdout).toContain(`PATH=${SUDO_SECURE_PATH}`);
    expect(plain.stdout).not.toContain('TSBRIDGE_X');
    const keep = await shOk(path.join(fake, 'sudo'), ['-E', 'env'], { env });
    expect(keep.stdout).toContain('TSBRIDGE_X=1');
    expect(keep.stdout).toContain(`PATH=${SUDO_SECURE_PATH}`);
    // A command only on the caller's PATH (an nvm node) is not found — unless passed through env.
    await recorder('tsbt-nvm-node');
    const lost = await shOk(path.join(fake, 'sudo'), ['-E', 'tsbt-nvm-node', 'x'], { env });
    expect(lost.stderr).toContain('tsbt-nvm-node: command not found');
    const kept = await shOk(path.join(fake, 'sudo'), ['env', `PATH=${env.PATH}`, 'tsbt-nvm-node', 'x'], { env });
    expect(kept.exitCode).toBe(0);
    expect(await recorded()).toBe('tsbt-nvm-node x');
  });
});
