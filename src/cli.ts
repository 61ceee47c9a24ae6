#!/usr/bin/env node
/**
 * The `tsbridge` command (commander): one subcommand per task, each with --help, a table for
 * people and --json for scripts. Exit codes: 0 ok, 1 a problem found or a failure, 2 bad usage.
 *
 *   tsbridge status   what the instance holds, and whether it is serving
 *   tsbridge ports    every published port
 *   tsbridge health   asks the plugin over its socket (for systemd and watchdogs)
 *   tsbridge gc       removes what Docker no longer has (asks Docker, tells the plugin)
 *   tsbridge doctor   compares the state with the kernel and Docker; --fix repairs through the plugin
 *
 * Which instance: --instance NAME, else TSBRIDGE_SOCKET / TSBRIDGE_STATE_DIR as the plugin reads
 * them (src/config.ts, resolveInstance). Each subcommand is registered by one function below;
 * a new one (doctor, gc) is one more.
 */
import { realpathSync } from 'node:fs';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { resolveInstance, type InstancePaths } from './config.js';
import { DockerClient, DockerUnreachable, dockerSocket, namesFor, noNames, type DockerApi, type DockerEngine, type Names } from './docker/client.js';
import { formatGc, runGc } from './cli/gc.js';
import { formatDoctor, runDoctor } from './cli/doctor.js';
import { formatHealth } from './cli/health.js';
import { PluginClient, PluginUnreachable, type PluginAdmin, type PluginApi } from './cli/plugin.js';
import { formatTable, portRows, withNames } from './cli/ports.js';
import { buildStatus, formatStatus, statusProblems, type PluginStatus } from './cli/status.js';
import { FileStore } from './state/store.js';
import type { State } from './state/types.js';

export const EXIT = { OK: 0, PROBLEM: 1, USAGE: 2 } as const;

export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
  env: NodeJS.ProcessEnv;
  /** Docker's API. Default: a client on Docker's socket (DOCKER_HOST); null: never ask Docker. */
  docker?: DockerApi | null;
  /** The plugin behind a socket. Default: PluginClient. */
  plugin?: (socket: string, timeoutMs: number) => PluginApi;
  /** Docker's networks for `gc`. Default: a client on Docker's socket (DOCKER_HOST). */
  dockerEngine?: DockerEngine;
  /** The plugin's admin calls for `gc`. Default: PluginClient. */
  admin?: (socket: string, timeoutMs: number) => PluginAdmin;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

class UsageError extends Error {}

interface Ctx {
  io: CliIo;
  /** The exit code the command ends with (a usage error in commander ends earlier, with 2). */
  code: number;
}

interface InstanceOpts {
  instance?: string;
  socket?: string;
  stateDir?: string;
  docker?: boolean;
}

/** --instance, --socket, --state-dir on every subcommand that looks at an instance. */
function instanceOptions(cmd: Command): Command {
  return cmd
    .option('--instance <name>', 'the instance (driver name) to look at; default: TSBRIDGE_SOCKET\'s, else "tsbridge"')
    .option('--socket <path>', 'the plugin socket (default: /run/docker/plugins/INSTANCE.sock, or TSBRIDGE_SOCKET)')
    .option('--state-dir <dir>', 'the state directory (default: TSBRIDGE_STATE_DIR, else /var/lib/tsbridge[-INSTANCE])');
}

function paths(o: InstanceOpts, env: NodeJS.ProcessEnv): InstancePaths {
  try {
    return resolveInstance({ instance: o.instance, socket: o.socket, stateDir: o.stateDir }, env);
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

function dockerFor(ctx: Ctx, askDocker: boolean): { api: DockerApi | null; why: string | null } {
  if (!askDocker) return { api: null, why: null };
  if (ctx.io.docker !== undefined) return { api: ctx.io.docker, why: null };
  const where = dockerSocket(ctx.io.env);
  return 'error' in where ? { api: null, why: where.error } : { api: new DockerClient(where.socket), why: null };
}

async function names(ctx: Ctx, askDocker: boolean, networkIds: string[]): Promise<Names & { asked: boolean }> {
  const d = dockerFor(ctx, askDocker);
  if (!d.api) return { ...noNames(d.why), asked: d.why !== null };
  return { ...(await namesFor(d.api, networkIds)), asked: true };
}

/** The state document, or why it could not be read. A missing file is an empty state and a hint. */
async function readState(stateDir: string): Promise<{ state: State | null; error: string | null; missing: string | null }> {
  const store = new FileStore(path.resolve(stateDir));
  const missing = existsSync(store.file) ? null : `no state file at ${store.file} (is this the plugin's state directory? --instance, TSBRIDGE_STATE_DIR)`;
  try {
    return { state: await store.load(), error: null, missing };
  } catch (e) {
    return { state: null, error: e instanceof Error ? e.message : String(e), missing };
  }
}

function registerPorts(program: Command, ctx: Ctx): void {
  instanceOptions(
    program
      .command('ports')
      .description(
        'List every port published through tsbridge, one line per address family forwarded: network, bridge, endpoint, container name (from Docker), protocol, host address:port, container address:port. Reads the state file; asks Docker for names.',
      )
      .option('--json', 'one JSON array, full IDs (for scripts)')
      .option('--full', 'full 64-digit IDs in the table')
      .option('--network <id>', 'only that network (an ID prefix is enough)')
      .option('--no-docker', 'do not ask Docker for container names'),
  ).action(async (o: InstanceOpts & { json?: boolean; full?: boolean; network?: string }) => {
    const where = paths(o, ctx.io.env);
    const { state, error, missing } = await readState(where.stateDir);
    if (missing) ctx.io.err(`tsbridge ports: ${missing}\n`);
    if (!state) {
      ctx.io.err(`tsbridge ports: ${error}\n`);
      ctx.code = EXIT.PROBLEM;
      return;
    }
    let rows = portRows(state);
    if (o.network) rows = rows.filter((r) => r.networkId.startsWith(o.network!));
    const n = await names(ctx, o.docker !== false, [...new Set(rows.map((r) => r.networkId))]);
    if (n.unavailable && n.asked) ctx.io.err(`tsbridge ports: no container names: ${n.unavailable}; showing endpoint IDs\n`);
    const named = withNames(rows, n);
    if (o.json) ctx.io.out(JSON.stringify(named, null, 2) + '\n');
    else if (rows.length === 0) ctx.io.out('no published ports\n');
    else ctx.io.out(formatTable(named, { full: o.full, names: n.asked && !n.unavailable }));
  });
}

async function pluginStatus(ctx: Ctx, socket: string, timeoutMs: number): Promise<PluginStatus> {
  const client = ctx.io.plugin ? ctx.io.plugin(socket, timeoutMs) : new PluginClient(socket, timeoutMs);
  try {
    return await client.health();
  } catch (e) {
    if (e instanceof PluginUnreachable) return { serving: false, error: e.message };
    throw e;
  }
}

function timeoutOption(): Option {
  return new Option('--timeout <ms>', 'how long to wait for the plugin\'s answer').default(5000).argParser(positiveInt('--timeout'));
}

function positiveInt(flag: string): (v: string) => number {
  return (v) => {
    if (!/^\d+$/.test(v) || Number(v) === 0) throw new UsageError(`${flag} must be a positive whole number (got "${v}")`);
    return Number(v);
  };
}

function registerStatus(program: Command, ctx: Ctx): void {
  instanceOptions(
    program
      .command('status')
      .description(
        'Show one instance: whether its plugin is serving and healthy, its iptables variant and last sweep; its networks (ID, name from Docker, kind, bridge, subnets, gateways, options), endpoints (container name, addresses, MAC, host veth, published ports) and pools; with etcd configured, this host in the cluster and its overlays (VNI, subnet, hosts, endpoints, as the plugin sees them through its etcd watch). Exit 1 when the plugin is not serving or not healthy, or the state cannot be read.',
      )
      .option('--json', 'one JSON object, full IDs (for scripts)')
      .option('--full', 'full 64-digit IDs in the tables')
      .option('--no-docker', 'do not ask Docker for names')
      .addOption(timeoutOption()),
  ).action(async (o: InstanceOpts & { json?: boolean; full?: boolean; timeout: number }) => {
    const where = paths(o, ctx.io.env);
    const [{ state, error, missing }, plugin] = await Promise.all([readState(where.stateDir), pluginStatus(ctx, where.socket, o.timeout)]);
    const n = state ? await names(ctx, o.docker !== false, Object.keys(state.networks)) : { ...noNames(null), asked: false };
    const st = buildStatus({ ...where, state, stateError: error, plugin, names: n.asked ? n : noNames(null) });
    if (missing && !o.json) ctx.io.err(`tsbridge status: ${missing}\n`);
    ctx.io.out(o.json ? JSON.stringify(st, null, 2) + '\n' : formatStatus(st, { full: o.full, now: ctx.io.now?.() }));
    if (statusProblems(st).length) ctx.code = EXIT.PROBLEM;
  });
}

function registerHealth(program: Command, ctx: Ctx): void {
  instanceOptions(
    program
      .command('health')
      .description(
        "Ask the plugin over its socket whether it is serving and healthy (its last sweep and start-up reconciliation). Exit 0 when healthy, 1 otherwise: usable as systemd's ExecStartPost (with --wait) or as a watchdog check.",
      )
      .option('--json', "the plugin's report as JSON (or {\"serving\": false, \"error\": …})")
      .option('-q, --quiet', 'print nothing; the exit code says it')
      .addOption(new Option('--wait <seconds>', 'keep asking until healthy, for up to this long (a plugin that is starting)').default(0).argParser((v) => {
        if (!/^\d+$/.test(v)) throw new UsageError(`--wait must be a whole number of seconds (got "${v}")`);
        return Number(v);
      }))
      .addOption(timeoutOption()),
  ).action(async (o: InstanceOpts & { json?: boolean; quiet?: boolean; wait: number; timeout: number }) => {
    const where = paths(o, ctx.io.env);
    const now = ctx.io.now ?? Date.now;
    const sleep = ctx.io.sleep ?? ((ms: number) => new Promise((r) => setTimeout(r, ms)));
    const deadline = now() + o.wait * 1000;
    let p = await pluginStatus(ctx, where.socket, o.timeout);
    while (!(p.serving && p.healthy) && now() < deadline) {
      await sleep(200);
      p = await pluginStatus(ctx, where.socket, o.timeout);
    }
    const ok = p.serving && p.healthy;
    if (!o.quiet) {
      if (o.json) ctx.io.out(JSON.stringify(p, null, 2) + '\n');
      else if (p.serving) (ok ? ctx.io.out : ctx.io.err)(formatHealth(p, now()));
      else ctx.io.err(`tsbridge (instance ${where.instance}): not serving: ${p.error}\n`);
    }
    ctx.code = ok ? EXIT.OK : EXIT.PROBLEM;
  });
}

function registerGc(program: Command, ctx: Ctx): void {
  instanceOptions(
    program
      .command('gc')
      .description(
        "Remove what Docker no longer has: networks removed (docker network rm) while the plugin was down, endpoints, pools and addresses nothing of Docker's holds — their bridges, veths, rules and records, so the subnet and host ports are free again. Asks Docker's API (DOCKER_HOST or /var/run/docker.sock), tells the plugin over its socket; the plugin removes what two looks at Docker, a moment apart, both lack, and leaves alone what is younger than its grace period (TSBRIDGE_GC_GRACE). Exit 1 when Docker or the plugin cannot be asked.",
      )
      .option('--dry-run', 'show what would be removed; change nothing')
      .option('--json', 'the result as JSON')
      .option('--full', 'full 64-digit IDs')
      .addOption(new Option('--timeout <ms>', "how long to wait for the plugin's answer (removing many networks takes a while)").default(60_000).argParser(positiveInt('--timeout'))),
  ).action(async (o: InstanceOpts & { dryRun?: boolean; json?: boolean; full?: boolean; timeout: number }) => {
    const where = paths(o, ctx.io.env);
    let engine = ctx.io.dockerEngine;
    if (!engine) {
      const d = dockerSocket(ctx.io.env);
      if ('error' in d) {
        ctx.io.err(`tsbridge gc: ${d.error}\n`);
        ctx.code = EXIT.PROBLEM;
        return;
      }
      engine = new DockerClient(d.socket, 10_000);
    }
    const admin = ctx.io.admin ? ctx.io.admin(where.socket, o.timeout) : new PluginClient(where.socket, o.timeout);
    const sleep = ctx.io.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    try {
      const r = await runGc(engine, admin, { dryRun: !!o.dryRun, sleep });
      ctx.io.out(o.json ? JSON.stringify(r, null, 2) + '\n' : formatGc(r, { full: o.full }));
    } catch (e) {
      if (!(e instanceof DockerUnreachable || e instanceof PluginUnreachable)) throw e;
      ctx.io.err(`tsbridge gc: ${e instanceof DockerUnreachable ? 'cannot ask Docker' : 'cannot ask the plugin'}: ${e.message}\n`);
      ctx.code = EXIT.PROBLEM;
    }
  });
}

function registerDoctor(program: Command, ctx: Ctx): void {
  instanceOptions(
    program
      .command('doctor')
      .description(
        "Compare what the plugin's state says with what the kernel has (bridges, veths and their masters, addresses, MTU, routes, sysctls, nftables tables and elements, the iptables shim and its jump) and with what Docker has; print each difference with its cause and the fix. --fix repairs through the plugin (start-up reconciliation now, then convergence with Docker as tsbridge gc does), never by editing state.json. Exit 1 when problems are found (with --fix: when some are left), or the plugin cannot be asked.",
      )
      .option('--fix', 'repair through the plugin, then look again')
      .option('--json', 'the result as JSON')
      .option('--no-docker', 'do not ask Docker (what Docker no longer has is not checked)')
      .addOption(new Option('--timeout <ms>', "how long to wait for each of the plugin's answers").default(60_000).argParser(positiveInt('--timeout'))),
  ).action(async (o: InstanceOpts & { fix?: boolean; json?: boolean; timeout: number }) => {
    const where = paths(o, ctx.io.env);
    let engine: DockerEngine | null = null;
    if (o.docker !== false) {
      engine = ctx.io.dockerEngine ?? null;
      if (!engine) {
        const d = dockerSocket(ctx.io.env);
        if (!('error' in d)) engine = new DockerClient(d.socket, 10_000);
      }
    }
    const admin = (ctx.io.admin ? ctx.io.admin(where.socket, o.timeout) : new PluginClient(where.socket, o.timeout)) as Required<PluginAdmin>;
    const sleep = ctx.io.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    try {
      const r = await runDoctor(engine, admin, { fix: !!o.fix, sleep });
      ctx.io.out(o.json ? JSON.stringify(r, null, 2) + '\n' : formatDoctor(r));
      if (r.findings.length) ctx.code = EXIT.PROBLEM;
    } catch (e) {
      if (!(e instanceof PluginUnreachable)) throw e;
      ctx.io.err(`tsbridge doctor: cannot ask the plugin: ${e.message}\n`);
      ctx.code = EXIT.PROBLEM;
    }
  });
}

export function buildProgram(ctx: Ctx): Command {
  const program = new Command('tsbridge')
    .description('Look at a running tsbridge (a Docker network and IPAM driver) and at what it holds.')
    .addHelpText(
      'after',
      '\nWhich instance: --instance NAME, else TSBRIDGE_SOCKET and TSBRIDGE_STATE_DIR (as the plugin reads them), else "tsbridge".\nExit codes: 0 ok, 1 a problem found or a failure, 2 bad usage.\n',
    )
    .exitOverride()
    .showHelpAfterError('(tsbridge COMMAND --help shows how to use a command)')
    .configureOutput({ writeOut: (s) => ctx.io.out(s), writeErr: (s) => ctx.io.err(s) });
  registerStatus(program, ctx);
  registerPorts(program, ctx);
  registerHealth(program, ctx);
  registerGc(program, ctx);
  registerDoctor(program, ctx);
  for (const c of program.commands) c.exitOverride().configureOutput({ writeOut: (s) => ctx.io.out(s), writeErr: (s) => ctx.io.err(s) }).showHelpAfterError();
  return program;
}

/** Runs the command line `argv` (without node and the script); returns the exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const ctx: Ctx = { io, code: EXIT.OK };
  const program = buildProgram(ctx);
  if (argv.length === 0) {
    program.outputHelp({ error: true });
    return EXIT.USAGE;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? EXIT.OK : EXIT.USAGE;
    if (e instanceof UsageError) {
      io.err(`tsbridge: ${e.message}\n`);
      return EXIT.USAGE;
    }
    throw e;
  }
  return ctx.code;
}

/** True when this file is the program (run directly or through npm's bin symlink), not imported. */
function isEntry(): boolean {
  try {
    return !!process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntry()) {
  // A reader that stops early (`tsbridge ports | head`) is not an error of ours.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? EXIT.OK);
    throw e;
  });
  // Never process.exit() once output is written: the exit code is set and the process ends when
  // stdout has drained — a pipe takes 64 KiB at a time, and exiting earlier would cut it there.
  runCli(process.argv.slice(2), { out: (s) => void process.stdout.write(s), err: (s) => void process.stderr.write(s), env: process.env }).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.stderr.write(`tsbridge: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = EXIT.PROBLEM;
    },
  );
}
