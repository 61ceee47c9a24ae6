/**
 * The README's command blocks, as a user copies them. A block is marked by an HTML comment on the
 * line before its opening fence (the comment does not show on a rendered page):
 *
 *   <!-- readme-test: plugin-install -->
 *   ```sh
 *   sudo bash scripts/plugin-build.sh
 *   ```
 *
 * A block inside a list item may be indented; the indentation is removed. Tests run the text as it
 * stands, so what the README says is what was tested.
 */
import { readFileSync } from 'node:fs';
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { REPO_ROOT } from './plugin.js';

export const README = path.join(REPO_ROOT, 'README.md');

/** Every marked block of `markdown`, by name. Throws on a marker without a block or a name used twice. */
export function markedBlocks(markdown: string): Map<string, string> {
  const lines = markdown.split('\n');
  const blocks = new Map<string, string>();
  for (let i = 0; i < lines.length; i++) {
    const m = /^\s*<!--\s*readme-test:\s*([A-Za-z0-9_.-]+)\s*-->\s*$/.exec(lines[i]!);
    if (!m) continue;
    const name = m[1]!;
    if (blocks.has(name)) throw new Error(`README block "${name}" is marked twice`);
    let j = i + 1;
    while (j < lines.length && lines[j]!.trim() === '') j++;
    const open = /^(\s*)(```+)[\w-]*\s*$/.exec(lines[j] ?? '');
    if (!open) throw new Error(`README marker "${name}" (line ${i + 1}) is not followed by a fenced code block`);
    const [, indent, fence] = open;
    const body: string[] = [];
    for (j++; j < lines.length; j++) {
      const line = lines[j]!;
      if (line.trim() === fence) break;
      if (line.trim() !== '' && !line.startsWith(indent!)) throw new Error(`README block "${name}": line ${j + 1} is less indented than its fence`);
      body.push(line.slice(indent!.length));
    }
    if (j >= lines.length) throw new Error(`README block "${name}" has no closing fence`);
    blocks.set(name, body.join('\n') + '\n');
  }
  return blocks;
}

/** The README block marked `name` (throws naming the markers there are when it is missing). */
export function readmeBlock(name: string, file = README): string {
  const blocks = markedBlocks(readFileSync(file, 'utf8'));
  const block = blocks.get(name);
  if (block === undefined) throw new Error(`no README block marked "${name}" in ${file} (marked: ${[...blocks.keys()].join(', ') || 'none'})`);
  return block;
}

/** PATH for every command Debian 12's sudo runs (secure_path in its default /etc/sudoers). */
export const SUDO_SECURE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Writes DIR/sudo: a stand-in for Debian 12's sudo with its default /etc/sudoers, for a machine
 * that has none (a root shell on a fresh Debian). Checked against sudo 1.9.13p3 on Debian 12:
 * the command is looked up on secure_path and runs with PATH=secure_path; the environment is
 * reset (TSBRIDGE_* dropped) except with -E, which keeps it but still replaces PATH.
 *
 * `envKeep` names variables kept anyway, as an `env_keep += "…"` line in /etc/sudoers would: the
 * README install test keeps the test run's TSBRIDGE_PLUGIN_CACHE (scripts/plugin-build.sh), which
 * no user has set (when the caller has not set it either, it arrives empty, which means unset).
 */
export async function writeSudoStandIn(dir: string, envKeep: readonly string[] = []): Promise<string> {
  for (const v of envKeep) if (!/^[A-Z_][A-Z0-9_]*$/.test(v)) throw new Error(`writeSudoStandIn: not a variable name: ${v}`);
  const kept = envKeep.map((v) => ` ${v}="\${${v}-}"`).join('');
  const file = path.join(dir, 'sudo');
  await writeFile(
    file,
    `#!/bin/sh
# Stand-in for Debian 12's sudo (env_reset, secure_path), written by test/lib/readme.ts.
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    -E|--preserve-env) keep=1; shift ;;
    -n) shift ;;
    --) shift; break ;;
    -*) echo "sudo stand-in: option $1 not supported" >&2; exit 1 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: sudo [-E] command ..." >&2; exit 1; }
secure='${SUDO_SECURE_PATH}'
cmd=$(PATH=$secure command -v "$1") || { echo "sudo: $1: command not found" >&2; exit 1; }
shift
user=$(id -un)
if [ "$keep" = 1 ]; then
  exec env PATH="$secure" SUDO_USER="$user" "$cmd" "$@"
fi
exec env -i PATH="$secure" HOME=/root SHELL=/bin/bash LOGNAME=root USER=root TERM="\${TERM:-dumb}" \\
  SUDO_USER="$user" SUDO_UID="$(id -u)" SUDO_GID="$(id -g)"${kept} "$cmd" "$@"
`,
  );
  await chmod(file, 0o755);
  return file;
}
