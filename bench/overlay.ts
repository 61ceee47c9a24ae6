/**
 * The overlay's cost: TCP throughput and latency between two containers of one overlay network on
 * the same host (the bridge path) and on two hosts (VXLAN over the underlay), measured in the same
 * run, interleaved. Runs on the multi-host rig (test/lib/rig.ts: two Docker 28 hosts in
 * namespaces on this machine, etcd on the underlay), so "two hosts" share this machine's CPUs:
 * what it measures is the datapath's cost (encapsulation, the extra hops), not a network.
 *
 * Throughput: iperf3 (the host's binary, run inside the containers' network namespaces).
 * Latency: TCP request/response round trips of one byte (a node client and server in the
 * containers' namespaces, TCP_NODELAY), and ICMP echo.
 *
 * Needs root, iperf3, etcd-server, Docker 28 (scripts/engine.sh install 28) and a build; run it
 * under the e2e lock:  flock -o /run/tsbridge-e2e.lock npm run bench:overlay -- [--runs N] [--seconds S] [--rr N]
 */
import { execa, type ResultPromise } from 'execa';
import { createRig, type Rig, type RigHost } from '../test/lib/rig.js';
import { TEST_IMAGE } from '../test/lib/docker.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

const RUNS = arg('--runs', 5);
const SECONDS = arg('--seconds', 5);
const RR = arg('--rr', 2000);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const ECHO_SERVER = `
const net = require('node:net');
net.createServer((s) => { s.setNoDelay(true); s.on('data', (d) => s.write(d)); s.on('error', () => {}); }).listen(Number(process.argv[1]), () => console.log('ready'));
`;

const RR_CLIENT = `
const net = require('node:net');
const [host, port, n] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const s = net.connect({ host, port }, () => {
  s.setNoDelay(true);
  const times = [];
  let t = process.hrtime.bigint();
  let left = n;
  s.on('data', () => {
    const now = process.hrtime.bigint();
    times.push(Number(now - t) / 1000);
    if (--left === 0) {
      s.end();
      times.sort((a, b) => a - b);
      console.log(JSON.stringify({ p50: times[times.length >> 1], p99: times[Math.floor(times.length * 0.99)] }));
      return;
    }
    t = process.hrtime.bigint();
    s.write('x');
  });
  s.write('x');
});
`;

async function main(): Promise<void> {
  const t0 = Date.now();
  const rig: Rig = await createRig({ hosts: 2, routed: 0 });
  const spawned: ResultPromise[] = [];
  try {
    console.log(`rig up in ${rig.timings.total} ms (${JSON.stringify(rig.timings)})`);
    const [h1, h2] = rig.hosts as [RigHost, RigHost];
    const net = 'bench';
    for (const h of [h1, h2]) {
      await h.docker(['network', 'create', '-d', 'tsbridge', '--ipam-driver', 'tsbridge', '-o', `io.tsbridge.overlay=${net}`, '--ipam-opt', `io.tsbridge.overlay=${net}`, '--subnet', '10.251.0.0/24', net]);
    }
    await h1.docker(['run', '-d', '--name', 'server', '--network', net, TEST_IMAGE, 'sleep', '100000']);
    await h1.docker(['run', '-d', '--name', 'local', '--network', net, TEST_IMAGE, 'sleep', '100000']);
    await h2.docker(['run', '-d', '--name', 'remote', '--network', net, TEST_IMAGE, 'sleep', '100000']);
    const serverIp = await h1.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, 'server']);
    const pid = (h: RigHost, c: string) => h.containerPid(c);
    const serverPid = await pid(h1, 'server');
    const clients = { 'same host': await pid(h1, 'local'), 'two hosts': await pid(h2, 'remote') };
    const underlayMtu = (await h1.exec('cat', ['/sys/class/net/eth0/mtu'])).trim();
    const overlayMtu = (await h1.docker(['exec', 'server', 'cat', '/sys/class/net/eth0/mtu'])).trim();
    console.log(`MTU: underlay (host eth0) ${underlayMtu}, container eth0 on the overlay ${overlayMtu}`);

    const inNs = (p: number, cmd: string, args: string[]) => execa('nsenter', [`--net=/proc/${p}/ns/net`, cmd, ...args]);
    const iperfServer = execa('nsenter', [`--net=/proc/${serverPid}/ns/net`, 'iperf3', '-s', '-p', '5201'], { reject: false, buffer: false });
    const echoServer = execa('nsenter', [`--net=/proc/${serverPid}/ns/net`, process.execPath, '-e', ECHO_SERVER, '7000'], { reject: false, buffer: false });
    spawned.push(iperfServer, echoServer);
    await new Promise((r) => setTimeout(r, 500));

    const results: Record<string, { gbps: number[]; p50: number[]; p99: number[]; icmp: number[] }> = {};
    for (const name of Object.keys(clients)) results[name] = { gbps: [], p50: [], p99: [], icmp: [] };
    for (let run = 0; run < RUNS; run++) {
      for (const [name, p] of Object.entries(clients)) {
        const ip = await inNs(p, 'iperf3', ['-c', serverIp, '-p', '5201', '-t', String(SECONDS), '-J']);
        const j = JSON.parse(ip.stdout) as { end: { sum_received: { bits_per_second: number } } };
        results[name]!.gbps.push(j.end.sum_received.bits_per_second / 1e9);
        const rr = await inNs(p, process.execPath, ['-e', RR_CLIENT, serverIp, '7000', String(RR)]);
        const l = JSON.parse(rr.stdout) as { p50: number; p99: number };
        results[name]!.p50.push(l.p50);
        results[name]!.p99.push(l.p99);
        const ping = await inNs(p, 'busybox', ['ping', '-c', '20', '-i', '0.05', '-q', serverIp]).catch(() => ({ stdout: '' }));
        const m = /= [\d.]+\/([\d.]+)\//.exec(ping.stdout);
        if (m) results[name]!.icmp.push(Number(m[1]) * 1000);
      }
    }
    const same = results['same host']!;
    const cross = results['two hosts']!;
    const row = (what: string, a: number[], b: number[], unit: string, digits: number) => {
      const ma = median(a);
      const mb = median(b);
      const over = ((mb - ma) / ma) * 100;
      const range = (xs: number[]) => `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;
      console.log(`| ${what} | ${ma.toFixed(digits)} ${unit} (${range(a)}) | ${mb.toFixed(digits)} ${unit} (${range(b)}) | ${over >= 0 ? '+' : ''}${over.toFixed(0)}% |`);
    };
    console.log(`\n${RUNS} runs, interleaved; iperf3 ${SECONDS} s per run; ${RR} round trips per run; medians (min–max over the runs)\n`);
    console.log('| what | same host | two hosts (VXLAN) | overlay cost |');
    console.log('|---|---|---|---|');
    row('TCP throughput (iperf3)', same.gbps, cross.gbps, 'Gbit/s', 2);
    row('TCP round trip, 1 byte, p50', same.p50, cross.p50, 'µs', 0);
    row('TCP round trip, 1 byte, p99', same.p99, cross.p99, 'µs', 0);
    if (same.icmp.length && cross.icmp.length) row('ICMP echo, average', same.icmp, cross.icmp, 'µs', 0);
    console.log(`\ntotal ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  } finally {
    for (const p of spawned) p.kill('SIGKILL');
    await Promise.allSettled(spawned);
    await rig.destroy();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exitCode = 1;
});
