/**
 * packaging/install-service.sh as an install and as an upgrade (issue 16), into a scratch prefix
 * with a stand-in systemctl that records its calls (these machines run no systemd):
 * install → enable --now; the same files again → no restart; changed files → restart; the
 * `tsbridge` command it installs reads the service's state directory, with /etc/default/tsbridge
 * read the way systemd reads it; --uninstall removes unit, code and command.
 *
 * Needs root (the script refuses otherwise) and what scripts/install-deps.sh --runtime needs
 * (it runs it: the host tools, node_modules, a build).
 */
import { appendFile, chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../lib/plugin.js';
import { requireRoot, sh, shOk } from '../lib/run.js';

let dir: string;
let env: Record<string, string>;
const calls = () => readFile(path.join(dir, 'calls'), 'utf8').then((s) => s.trim().split('\n'), () => [] as string[]);
const resetCalls = () => writeFile(path.join(dir, 'calls'), '');

beforeAll(async () => {
  requireRoot('the install-service test');
  dir = await mkdtemp('/tmp/tsbt-service-');
  // The stand-in keeps "active" in a file: enable --now starts, is-active reports it.
  await writeFile(
    path.join(dir, 'systemctl'),
    `#!/bin/sh
echo "$*" >> '${dir}/calls'
case "$*" in
  "is-active --quiet tsbridge.service") [ -f '${dir}/active' ] ;;
  "is-active tsbridge.service") if [ -f '${dir}/active' ]; then echo active; else echo inactive; exit 3; fi ;;
  "enable --now tsbridge.service") touch '${dir}/active' ;;
  "disable --now tsbridge.service") rm -f '${dir}/active' ;;
esac
`,
  );
  await chmod(path.join(dir, 'systemctl'), 0o755);
  env = {
    TSBRIDGE_PREFIX: path.join(dir, 'opt'),
    TSBRIDGE_UNIT_DIR: path.join(dir, 'unit'),
    TSBRIDGE_BIN_DIR: path.join(dir, 'bin'),
    TSBRIDGE_SYSTEMCTL: path.join(dir, 'systemctl'),
  };
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const install = (args: string[] = []) => sh('bash', ['packaging/install-service.sh', ...args], { cwd: REPO_ROOT, env, timeoutMs: 300_000 });

describe('packaging/install-service.sh', () => {
  test('install: code, unit and the tsbridge command; the unit is enabled and started', async () => {
    await install();
    expect(existsSync(path.join(dir, 'opt', 'dist', 'src', 'main.js'))).toBe(true);
    expect(existsSync(path.join(dir, 'opt', 'node_modules', 'typescript'))).toBe(false); // production only
    const unit = await readFile(path.join(dir, 'unit', 'tsbridge.service'), 'utf8');
    expect(unit).toContain(`ExecStart=${await sh('sh', ['-c', 'command -v node'])} --max-semi-space-size=1 --heap-growing-percent=25 ${dir}/opt/dist/src/main.js`);
    expect(await calls()).toEqual(['daemon-reload', 'is-active --quiet tsbridge.service', 'enable --now tsbridge.service', 'is-active tsbridge.service']);
  });

  test('run again with the same files: nothing replaced, the running service is not restarted', async () => {
    await resetCalls();
    const out = await install();
    expect(out).toContain('are up to date');
    expect(await calls()).not.toContain('restart tsbridge.service');
  });

  test('run again after the installed code changed (an upgrade): files replaced and the unit restarted', async () => {
    await appendFile(path.join(dir, 'opt', 'dist', 'src', 'main.js'), '\n// old\n');
    await resetCalls();
    const out = await install();
    expect(out).toContain('restarted tsbridge.service');
    expect(await calls()).toContain('restart tsbridge.service');
    expect(await readFile(path.join(dir, 'opt', 'dist', 'src', 'main.js'), 'utf8')).not.toContain('// old');
  });

  test("the tsbridge command runs the installed CLI with the service's socket and state directory, as sudo runs it", async () => {
    const wrapper = await readFile(path.join(dir, 'bin', 'tsbridge'), 'utf8');
    expect(wrapper).toContain(`# tsbridge-cli-wrapper: service ${dir}/opt`);
    // The same wrapper with a node that prints what it was given instead of running the CLI.
    await writeFile(path.join(dir, 'show'), '#!/bin/sh\necho "$*"; env | grep ^TSBRIDGE_ | sort\n');
    await chmod(path.join(dir, 'show'), 0o755);
    await writeFile(path.join(dir, 'probe'), wrapper.replace(/^node=.*$/m, `node='${dir}/show'`));
    await chmod(path.join(dir, 'probe'), 0o755);
    const out = await sh('env', ['-i', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', path.join(dir, 'probe'), 'ports', '--json']);
    const [args, ...vars] = out.split('\n');
    expect(args).toBe(`${dir}/opt/dist/src/cli.js ports --json`);
    // The unit's values (a host /etc/default/tsbridge, read after them as systemd does, could override).
    if (!existsSync('/etc/default/tsbridge')) {
      expect(vars).toEqual(['TSBRIDGE_SOCKET=/run/docker/plugins/tsbridge.sock', 'TSBRIDGE_STATE_DIR=/var/lib/tsbridge']);
    } else {
      expect(vars.map((v) => v.split('=')[0])).toEqual(['TSBRIDGE_SOCKET', 'TSBRIDGE_STATE_DIR']);
    }
    // And the real thing runs: the installed CLI answers.
    expect(await sh(path.join(dir, 'bin', 'tsbridge'), ['--help'])).toContain('Usage: tsbridge');
  });

  test('--uninstall: unit stopped and removed, code and command gone', async () => {
    await resetCalls();
    await install(['--uninstall']);
    expect(await calls()).toEqual(['disable --now tsbridge.service', 'daemon-reload']);
    for (const p of ['opt', 'unit/tsbridge.service', 'bin/tsbridge']) expect(existsSync(path.join(dir, p))).toBe(false);
  });
});
