/**
 * Every way a user starts the plugin gives node the same options of its own (issue 14: V8's
 * young-generation semi-spaces capped at 1 MiB and its old generation grown by 25 % after each
 * full collection keep the process under 100 MiB RSS at 1,000 endpoints, docs/benchmarks.md;
 * these flags only work on node's command line). The launchers are files of several languages (a systemd
 * unit, JSON, a Dockerfile, shell, package.json): this keeps them in step.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

const NODE_FLAGS = ['--max-semi-space-size=1', '--heap-growing-percent=25'];

test('npm run bench starts the plugin with the same flags (bench/lib.ts)', () => {
  expect(/LAUNCHER_NODE_FLAGS = (\[.*\]);/.exec(read('bench/lib.ts'))?.[1]).toBe(JSON.stringify(NODE_FLAGS).replace(/"/g, "'").replace(/,/g, ', '));
});

const read = (f: string) => readFileSync(path.resolve(f), 'utf8'); // jest runs in the repository's root

/** The words of node's command line between the node binary and the script, as each launcher has it. */
const launchers: Record<string, () => string[]> = {
  'packaging/tsbridge.service (ExecStart)': () => /^ExecStart=(\S+) (.*)$/m.exec(read('packaging/tsbridge.service'))![2]!.split(' '),
  'config.json (the managed plugin\'s entrypoint)': () => (JSON.parse(read('config.json')) as { entrypoint: string[] }).entrypoint.slice(1),
  'Dockerfile (ENTRYPOINT)': () => (JSON.parse(/^ENTRYPOINT (.*)$/m.exec(read('Dockerfile'))![1]!) as string[]).slice(1),
  'scripts/start.sh (exec)': () => /^exec node (.*)$/m.exec(read('scripts/start.sh'))![1]!.split(' '),
  'package.json (npm start)': () => (JSON.parse(read('package.json')) as { scripts: { start: string } }).scripts.start.split(' ').slice(1),
  'packaging/install-service.sh (starting it by hand, printed)': () => /\$NODE (.*)\$PREFIX\/dist\/src\/main\.js"/.exec(read('packaging/install-service.sh'))![1]!.trim().split(' '),
};

test.each(Object.keys(launchers))('%s passes node the flags, before the script', (name) => {
  const words = launchers[name]!();
  // install-service.sh's line is matched up to the script: all its words are node's.
  const script = words.findIndex((w) => w.endsWith('dist/src/main.js'));
  const flags = script < 0 ? words : words.slice(0, script);
  for (const f of NODE_FLAGS) expect(flags).toContain(f);
});

test('the Dockerfile\'s ENTRYPOINT is config.json\'s entrypoint (docker plugin create reads only the latter)', () => {
  expect(launchers['config.json (the managed plugin\'s entrypoint)']!()).toEqual(launchers['Dockerfile (ENTRYPOINT)']!());
});
