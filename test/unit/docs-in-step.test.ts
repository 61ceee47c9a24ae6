/**
 * The docs say what the code does: the error catalogue, every environment variable the code and
 * scripts read, every flag of every script and of the `tsbridge` command, and the README's
 * install blocks in an order that works. Each test fails naming what is missing.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { ERRORS } from '../../src/errors.js';
import { markedBlocks } from '../lib/readme.js';

const ROOT = path.resolve('.');
const read = (rel: string) => readFileSync(path.join(ROOT, rel), 'utf8');

/** Files under `rel` (recursively), relative to the repository. */
function filesUnder(rel: string): string[] {
  const abs = path.join(ROOT, rel);
  if (!existsSync(abs)) return [];
  if (statSync(abs).isFile()) return [rel];
  return readdirSync(abs, { withFileTypes: true }).flatMap((e) =>
    e.name === 'build' || e.name === 'node_modules' ? [] : filesUnder(path.join(rel, e.name)),
  );
}

/** README.md and every docs/*.md, together. */
const DOCS = ['README.md', ...readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)]
  .map(read)
  .join('\n');

test('docs/errors.md lists exactly the codes of the catalogue, with their messages', () => {
  const doc = read('docs/errors.md');
  const rows = [...doc.matchAll(/^\| `(\w+)` \| (.*) \|$/gm)].map((m) => [m[1], m[2]]);
  expect(rows).toEqual(Object.entries(ERRORS).map(([code, e]) => [code, e.message]));
});

describe('environment variables', () => {
  // Where code and scripts read the environment (issue 16: src, scripts, bench, test/lib, packaging, plugin).
  const SOURCES = ['src', 'scripts', 'bench', 'test/lib', 'packaging', 'plugin', 'config.json', 'Dockerfile'];
  // Names that look like variables but are not read from the environment.
  const NOT_VARIABLES: Record<string, string> = {
    TSBRIDGE_OPTION_PREFIX: "a TypeScript constant (tsbridge's option prefix)",
  };
  const found = new Map<string, string>(); // name → first file
  for (const file of SOURCES.flatMap(filesUnder)) {
    if (!/\.(ts|mjs|js|sh|json|service)$|Dockerfile$/.test(file)) continue;
    for (const m of read(file).matchAll(/\bTSBRIDGE_[A-Z0-9_]*[A-Z0-9]\b/g)) if (!found.has(m[0])) found.set(m[0], file);
  }

  test('the scan finds the variables it must (it really reads the code)', () => {
    for (const v of ['TSBRIDGE_SOCKET', 'TSBRIDGE_STATE_DIR', 'TSBRIDGE_TIER_TIMEOUT', 'TSBRIDGE_TEST_IMAGE', 'TSBRIDGE_DOCKER_TIMEOUT', 'TSBRIDGE_RUN_DIR']) {
      expect([...found.keys()]).toContain(v);
    }
  });

  test('every variable read anywhere is documented in the README or docs/', () => {
    const missing = [...found]
      .filter(([name]) => !(name in NOT_VARIABLES) && !DOCS.includes(`\`${name}\``))
      .map(([name, file]) => `${name} (read in ${file})`);
    expect(missing).toEqual([]);
  });
});

describe('flags', () => {
  const SCRIPT_DIRS = ['scripts', 'packaging', 'plugin'];
  const scripts = SCRIPT_DIRS.flatMap(filesUnder).filter((f) => f.endsWith('.sh') && !f.startsWith('scripts/lib/'));
  const reference = read('docs/scripts.md');

  /** The docs/scripts.md section whose heading names `what` in backticks, up to the next heading of its level or above. */
  function section(what: string): string | undefined {
    const lines = reference.split('\n');
    const start = lines.findIndex((l) => /^#{2,4} /.test(l) && l.includes(`\`${what}\``));
    if (start < 0) return undefined;
    const level = /^#+/.exec(lines[start]!)![0].length;
    const end = lines.findIndex((l, i) => i > start && /^#+ /.test(l) && /^#+/.exec(l)![0].length <= level);
    return lines.slice(start, end < 0 ? undefined : end).join('\n');
  }

  const HELP = new Set(['-h', '--help']);

  /** Options a shell script parses: `case` arms (`--x)`, `--x|-y)`) and `= --x` tests. */
  function shellFlags(file: string): string[] {
    const code = read(file)
      .split('\n')
      .filter((l) => !/^\s*#/.test(l))
      .join('\n');
    const flags = new Set<string>();
    for (const m of code.matchAll(/^\s*((?:-{1,2}[a-z][a-z0-9-]*\|?)+)\)/gm)) for (const f of m[1]!.split('|')) if (f) flags.add(f);
    for (const m of code.matchAll(/=\s*"?(--[a-z][a-z0-9-]*)"?\s*\]/g)) flags.add(m[1]!);
    return [...flags].filter((f) => !HELP.has(f)).sort();
  }

  /**
   * Options a TypeScript command compares its arguments with: `=== '--x'`, `startsWith('--x=')`,
   * `arg('--x')`, `argv.includes('--x')`, `argv.indexOf('--x')`.
   */
  function tsFlags(files: string[]): string[] {
    const flags = new Set<string>();
    const re = /(?:===\s*|startsWith\(\s*|\barg\(\s*|\bflag\(\s*|includes\(\s*|indexOf\(\s*)['"`](--[a-z][a-z0-9-]*)=?['"`]/g;
    for (const f of files) for (const m of read(f).matchAll(re)) flags.add(m[1]!);
    return [...flags].filter((f) => !HELP.has(f)).sort();
  }

  const mentions = (text: string, flag: string) => new RegExp(`(^|[^\\w-])${flag.replace(/-/g, '\\-')}(?![\\w-])`).test(text);

  test('the flag scan finds what it must', () => {
    expect(shellFlags('scripts/plugin-build.sh')).toEqual(expect.arrayContaining(['--out', '--prebuilt', '--dockerfile', '--push']));
    expect(shellFlags('scripts/install-deps.sh')).toEqual(['--runtime']);
    expect(tsFlags(['bench/run.ts'])).toEqual(['--endpoints', '--parallel', '--port-runs', '--runs', '--scale-runs', '--seconds', '--skip-scale', '--transfer-runs']);
  });

  test.each(scripts)('%s: has a section in docs/scripts.md naming each of its flags', (file) => {
    const text = section(file);
    if (text === undefined) throw new Error(`docs/scripts.md has no section for \`${file}\``);
    // plugin-build.sh's flags are documented in docs/install.md, which its section points to.
    const where = file === 'scripts/plugin-build.sh' ? `${text}\n${read('docs/install.md')}` : text;
    expect(shellFlags(file).filter((f) => !mentions(where, f))).toEqual([]);
  });

  // The tsbridge command's options are checked against docs/operations.md from its commander
  // definition (test/unit/docs-ops.test.ts).

  test('npm run bench: docs/scripts.md names each flag of each bench script', () => {
    const text = ['npm run bench', 'npm run bench:calls', 'npm run bench:ports', 'npm run bench:kinds', 'npm run bench:overlay'].map((s) => section(s) ?? '').join('\n');
    expect(tsFlags(filesUnder('bench').filter((f) => f.endsWith('.ts'))).filter((f) => !mentions(text, f))).toEqual([]);
  });
});

describe("the README's install blocks", () => {
  const blocks = markedBlocks(read('README.md'));

  test('the managed-plugin blocks the e2e test runs are all there', () => {
    expect([...blocks.keys()]).toEqual(expect.arrayContaining(['plugin-install', 'plugin-settings', 'plugin-use', 'plugin-upgrade', 'plugin-uninstall']));
  });

  test('uninstall removes the networks before it disables the plugin (a plugin in use cannot be disabled)', () => {
    const lines = blocks.get('plugin-uninstall')!.split('\n');
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    expect(at(/docker network rm/)).toBeGreaterThanOrEqual(0);
    expect(at(/docker network rm/)).toBeLessThan(at(/docker plugin disable/));
    expect(at(/docker plugin disable/)).toBeLessThan(at(/docker plugin rm/));
  });

  test('settings are changed before the use block creates a network', () => {
    expect(blocks.get('plugin-settings')).not.toMatch(/network create/);
    expect(blocks.get('plugin-use')).toMatch(/network create/);
  });
});
