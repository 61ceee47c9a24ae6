/**
 * tsbridge against Docker's built-in bridge, measured in the same run,
 * interleaved so drift on the machine hits both alike. Prints medians and the
 * ratio. Needs root, a running dockerd and the test image (scripts/bench.sh
 * sets those up). Usage: node dist/bench/run.js [--runs N] [--port-runs N]
 */
import { execa } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const IMAGE = process.env.TSBRIDGE_TEST_IMAGE ?? 'tsbridge-test:latest';
const DRIVER = 'tsbridge-bench';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function docker(args: string[]): Promise<string> {
  return (await execa('docker', args)).stdout.trim();
}

async function timeRun(args: string[]): Promise<number> {
  const t = process.hrtime.bigint();
  await execa('docker', args);
  return Number(process.hrtime.bigint() - t) / 1e6;
}

async function compare(title: string, runs: number, tsArgs: string[], brArgs: string[]): Promise<void> {
  const ts: number[] = [];
  const br: number[] = [];
  await timeRun(tsArgs); // warm both paths once
  await timeRun(brArgs);
  for (let i = 0; i < runs; i++) {
    ts.push(await timeRun(tsArgs));
    br.push(await timeRun(brArgs));
  }
  const mt = median(ts);
  const mb = median(br);
  console.log(`\n${title} (${runs} runs each, interleaved)`);
  console.log(`  ${'driver'.padEnd(16)}${'median ms'.padStart(11)}${'min'.padStart(9)}${'max'.padStart(9)}`);
  console.log(`  ${'tsbridge'.padEnd(16)}${mt.toFixed(0).padStart(11)}${Math.min(...ts).toFixed(0).padStart(9)}${Math.max(...ts).toFixed(0).padStart(9)}`);
  console.log(`  ${'built-in bridge'.padEnd(16)}${mb.toFixed(0).padStart(11)}${Math.min(...br).toFixed(0).padStart(9)}${Math.max(...br).toFixed(0).padStart(9)}`);
  console.log(`  ratio built-in / tsbridge: ${(mb / mt).toFixed(2)}x`);
}

async function main(): Promise<void> {
  const runs = arg('--runs', 15);
  const portRuns = arg('--port-runs', 3);
  const stateDir = await mkdtemp(path.join(tmpdir(), 'tsbridge-bench-'));
  const plugin = execa(process.execPath, [path.join(ROOT, 'dist', 'src', 'main.js')], {
    env: { TSBRIDGE_SOCKET: `/run/docker/plugins/${DRIVER}.sock`, TSBRIDGE_STATE_DIR: stateDir, TSBRIDGE_LOG_LEVEL: 'warn' },
    stdio: 'inherit',
    reject: false,
  });
  const nets: string[] = [];
  try {
    for (let i = 0; i < 50; i++) {
      if ((await execa('test', ['-S', `/run/docker/plugins/${DRIVER}.sock`], { reject: false })).exitCode === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const tsNet = `bench-ts-${process.pid}`;
    const brNet = `bench-br-${process.pid}`;
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.214.1.0/24', tsNet]);
    nets.push(tsNet);
    await docker(['network', 'create', '-d', 'bridge', '--subnet', '10.214.2.0/24', brNet]);
    nets.push(brNet);
    console.log(`docker ${await docker(['version', '--format', '{{.Server.Version}}'])}, image ${IMAGE}`);
    await compare('docker run --rm (no ports)', runs, ['run', '--rm', '--network', tsNet, IMAGE, 'true'], ['run', '--rm', '--network', brNet, IMAGE, 'true']);
    const ports = ['-p', '21000-21099:21000-21099'];
    await compare('docker run --rm -p 21000-21099:21000-21099 (100 ports)', portRuns,
      ['run', '--rm', '--network', tsNet, ...ports, IMAGE, 'true'], ['run', '--rm', '--network', brNet, ...ports, IMAGE, 'true']);
  } finally {
    for (const n of nets) await execa('docker', ['network', 'rm', n], { reject: false });
    plugin.kill('SIGTERM');
    await plugin;
    await rm(stateDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
