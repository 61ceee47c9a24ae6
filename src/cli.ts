#!/usr/bin/env node
/**
 * The `tsbridge` command. One subcommand so far:
 *
 *   tsbridge ports [--json] [--full] [--network ID] [--state-dir DIR]
 *
 * lists every port published through tsbridge, from $TSBRIDGE_STATE_DIR/state.json
 * (default /var/lib/tsbridge), read-only. See docs/ports.md.
 */
import { existsSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatTable, portRows } from './cli/ports.js';
import { FileStore } from './state/store.js';

const USAGE = `usage: tsbridge ports [--json] [--full] [--network ID-or-prefix] [--state-dir DIR]

Lists every port published through tsbridge, one line per address family
forwarded: network, bridge, endpoint, protocol, host address:port, container
address:port.
Reads $TSBRIDGE_STATE_DIR/state.json (default /var/lib/tsbridge) and nothing else.
  --json        one JSON array, full IDs (for scripts)
  --full        full 64-digit IDs in the table
  --network ID  only that network (an ID prefix is enough)
  --state-dir   another state directory (the plugin's TSBRIDGE_STATE_DIR)
Container names: docker network inspect NETWORK shows each container's EndpointID.
`;

export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
  env: NodeJS.ProcessEnv;
}

/** Runs the command line `argv` (without node and the script); returns the exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    io.out(USAGE);
    return cmd === undefined ? 2 : 0;
  }
  if (cmd !== 'ports') {
    io.err(`tsbridge: unknown command "${cmd}"\n${USAGE}`);
    return 2;
  }
  let json = false;
  let full = false;
  let network = '';
  let stateDir = io.env.TSBRIDGE_STATE_DIR || '/var/lib/tsbridge';
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    const value = () => {
      const v = rest[++i];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} needs a value`);
      return v;
    };
    try {
      if (a === '--json') json = true;
      else if (a === '--full') full = true;
      else if (a === '--network') network = value();
      else if (a.startsWith('--network=')) network = a.slice('--network='.length);
      else if (a === '--state-dir') stateDir = value();
      else if (a.startsWith('--state-dir=')) stateDir = a.slice('--state-dir='.length);
      else if (a === '-h' || a === '--help') {
        io.out(USAGE);
        return 0;
      } else throw new UsageError(`unknown option ${a}`);
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
      io.err(`tsbridge ports: ${e.message}\n${USAGE}`);
      return 2;
    }
  }
  let rows;
  const store = new FileStore(path.resolve(stateDir));
  try {
    if (!existsSync(store.file)) io.err(`tsbridge ports: no state file at ${store.file} (is TSBRIDGE_STATE_DIR the plugin's?)\n`);
    rows = portRows(await store.load());
  } catch (e) {
    io.err(`tsbridge ports: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  if (network) rows = rows.filter((r) => r.networkId.startsWith(network));
  if (json) io.out(JSON.stringify(rows, null, 2) + '\n');
  else if (rows.length === 0) io.out('no published ports\n');
  else io.out(formatTable(rows, { full }));
  return 0;
}

class UsageError extends Error {}

/** True when this file is the program (run directly or through npm's bin symlink), not imported. */
function isEntry(): boolean {
  try {
    return !!process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}


if (isEntry()) {
  runCli(process.argv.slice(2), { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s), env: process.env }).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`tsbridge: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
