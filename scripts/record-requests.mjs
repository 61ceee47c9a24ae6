// Records every request a Docker engine sends to a network + IPAM plugin, into a JSON-lines file
// (one {"scenario", "call", "request"} object per line, as test/fixtures/docker/*.jsonl hold).
//
//   node scripts/record-requests.mjs OUT.jsonl [--engine 28]
//
// A small proxy listens on /run/docker/plugins/tsbt-rec.sock (the driver Docker sees, `tsbt-rec`),
// writes down each request and forwards it unchanged to tsbridge itself (dist/src/main.js on a
// private socket of the same name), whose answer goes back to Docker. Then it drives the docker
// CLI through the scenarios below. Needs root, a running engine, the test image and dist/ built:
// scripts/record-requests.sh does all that (and is the documented way to run this).
import http from 'node:http';
import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DRIVER = 'tsbt-rec';
const PROXY_SOCKET = `/run/docker/plugins/${DRIVER}.sock`;
const PRIVATE_DIR = '/run/tsbridge-record';
const PLUGIN_SOCKET = `${PRIVATE_DIR}/${DRIVER}.sock`;
const IMAGE = process.env.TSBRIDGE_TEST_IMAGE ?? 'tsbridge-test:latest';
const HANDSHAKE = new Set(['/Plugin.Activate', '/NetworkDriver.GetCapabilities', '/IpamDriver.GetCapabilities', '/IpamDriver.GetDefaultAddressSpaces']);

const args = process.argv.slice(2);
const out = args.find((a) => !a.startsWith('--'));
const engineArg = args.indexOf('--engine');
const engine = engineArg >= 0 ? args[engineArg + 1] : '';
if (!out) {
  console.error('usage: node scripts/record-requests.mjs OUT.jsonl [--engine 20.10|28]');
  process.exit(2);
}

const lines = [];
let scenario = 'first use: daemon activates the plugin';

/** Runs the docker CLI (asynchronously: the proxy in this process must keep answering dockerd). */
function docker(argv, { allowFail = false } = {}) {
  return new Promise((resolve, reject) => {
    execFile('docker', argv, { encoding: 'utf8', timeout: 120_000 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout.trim());
      const why = String(stderr || err.message).trim();
      if (allowFail) return resolve(`FAILED: ${why}`);
      reject(new Error(`docker ${argv.join(' ')}: ${why}`));
    });
  });
}

/** The proxy: record, forward, answer with the plugin's reply. */
function startProxy() {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let request = null;
      if (raw.trim() !== '') {
        try {
          request = JSON.parse(raw);
        } catch {
          request = { unparsable: raw };
        }
      }
      lines.push({ scenario: HANDSHAKE.has(req.url) && lines.every((l) => HANDSHAKE.has(l.call)) ? 'first use: daemon activates the plugin' : scenario, call: req.url, request });
      const fwd = http.request({ socketPath: PLUGIN_SOCKET, method: req.method, path: req.url, headers: req.headers }, (pr) => {
        res.writeHead(pr.statusCode ?? 500, pr.headers);
        pr.pipe(res);
      });
      fwd.on('error', (e) => {
        res.writeHead(500, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ Err: `recording proxy: ${e.message}`, Error: `recording proxy: ${e.message}` }));
      });
      fwd.end(raw);
    });
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(PROXY_SOCKET, () => resolve(server));
  });
}

async function waitForSocket(socket, ms) {
  const deadline = Date.now() + ms;
  while (!existsSync(socket)) {
    if (Date.now() > deadline) throw new Error(`${socket} did not appear within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Each scenario: a label (what a reader sees in the file) and the docker commands. */
function scenarios() {
  const name = (s) => `tsbt-rec-${s}`;
  const [rec1, rec2, rec3, rec4, rec5, rec6, rec7, c1, c2, c3] = ['rec1', 'rec2', 'rec3', 'rec4', 'rec5', 'rec6', 'rec7', 'c1', 'c2', 'c3'].map(name);
  const list = [
    {
      label: 'network create --ipam-driver (plugin) --subnet 10.99.0.0/24 --ip-range 10.99.0.128/25 --aux-address r=10.99.0.5 -o com.docker.network.driver.mtu=1400 -o com.docker.network.bridge.enable_icc=false rec1; network create --internal rec2; docker run -d --network rec1 -p 8080:80 -p 127.0.0.1:5353:53/udp -p 7000-7001:7000-7001 -p 9000 --expose 6000; network connect --driver-opt foo=bar rec2; network disconnect rec2; rm -f; network rm rec1 rec2',
      run: async () => {
        await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.99.0.0/24', '--ip-range', '10.99.0.128/25', '--aux-address', 'r=10.99.0.5', '-o', 'com.docker.network.driver.mtu=1400', '-o', 'com.docker.network.bridge.enable_icc=false', rec1]);
        await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.98.0.0/24', '--internal', rec2]);
        await docker(['run', '-d', '--name', c1, '--network', rec1, '-p', '8080:80', '-p', '127.0.0.1:5353:53/udp', '-p', '7000-7001:7000-7001', '-p', '9000', '--expose', '6000', IMAGE, 'sleep', '600']);
        await docker(['network', 'connect', '--driver-opt', 'foo=bar', rec2, c1]);
        await docker(['network', 'disconnect', rec2, c1]);
        await docker(['rm', '-f', c1]);
        await docker(['network', 'rm', rec1, rec2]);
      },
    },
    {
      label: "dual-stack network with Docker's default IPAM: docker network create -d (plugin) --ipv6 --subnet 10.97.0.0/24 --subnet fd00:97::/64 rec3; docker run --rm --network rec3 true; network rm rec3",
      run: async () => {
        await docker(['network', 'create', '-d', DRIVER, '--ipv6', '--subnet', '10.97.0.0/24', '--subnet', 'fd00:97::/64', rec3]);
        await docker(['run', '--rm', '--network', rec3, IMAGE, 'true']);
        await docker(['network', 'rm', rec3]);
      },
    },
  ];
  if (engine === '20.10') return list;
  return [
    ...list,
    {
      label: 'IPv6-only network (28+), tsbridge IPAM: docker network create -d (plugin) --ipam-driver (plugin) --ipv4=false --ipv6 --subnet fd00:96::/64 rec4; docker run --rm --network rec4 true; network rm rec4',
      run: async () => {
        const made = await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--ipv4=false', '--ipv6', '--subnet', 'fd00:96::/64', rec4], { allowFail: true });
        if (made.startsWith('FAILED')) return `refused: ${made}`;
        await docker(['run', '--rm', '--network', rec4, IMAGE, 'true'], { allowFail: true });
        await docker(['network', 'rm', rec4]);
        return undefined;
      },
    },
    {
      label: "IPv6-only network (28+), Docker's default IPAM: docker network create -d (plugin) --ipv4=false --ipv6 --subnet fd00:95::/64 rec5; docker run --rm --network rec5 true; network rm rec5",
      run: async () => {
        const made = await docker(['network', 'create', '-d', DRIVER, '--ipv4=false', '--ipv6', '--subnet', 'fd00:95::/64', rec5], { allowFail: true });
        if (made.startsWith('FAILED')) return `refused: ${made}`;
        await docker(['run', '--rm', '--network', rec5, IMAGE, 'true'], { allowFail: true });
        await docker(['network', 'rm', rec5]);
        return undefined;
      },
    },
    {
      label: 'dual-stack with tsbridge IPAM, an endpoint ifname, a sysctl, published ports, restart: docker network create -d (plugin) --ipam-driver (plugin) --ipv6 --subnet 10.94.0.0/24 --subnet fd00:94::/64 rec6; docker run -d --network name=rec6,driver-opt=com.docker.network.endpoint.ifname=foo0 --sysctl net.ipv4.ip_unprivileged_port_start=80 -p 8081:80 -p [::]:8082:80/tcp; docker restart; rm -f; network rm rec6',
      run: async () => {
        await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--ipv6', '--subnet', '10.94.0.0/24', '--subnet', 'fd00:94::/64', rec6]);
        await docker(['run', '-d', '--name', c2, '--network', `name=${rec6},driver-opt=com.docker.network.endpoint.ifname=foo0`, '--sysctl', 'net.ipv4.ip_unprivileged_port_start=80', '-p', '8081:80', '-p', '[::]:8082:80/tcp', IMAGE, 'sleep', '600']);
        await docker(['restart', '-t', '1', c2]);
        await docker(['rm', '-f', c2]);
        await docker(['network', 'rm', rec6]);
      },
    },
    {
      label: 'internal network, a per-network sysctl, connect and disconnect: docker network create -d (plugin) --ipam-driver (plugin) --internal --subnet 10.93.0.0/24 rec7; docker run -d --network name=rec7,driver-opt=com.docker.network.endpoint.sysctls=net.ipv4.conf.IFNAME.log_martians=1; network disconnect rec7; network connect rec7; rm -f; network rm rec7',
      run: async () => {
        await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--internal', '--subnet', '10.93.0.0/24', rec7]);
        await docker(['run', '-d', '--name', c3, '--network', `name=${rec7},driver-opt=com.docker.network.endpoint.sysctls=net.ipv4.conf.IFNAME.log_martians=1`, IMAGE, 'sleep', '600']);
        await docker(['network', 'disconnect', rec7, c3]);
        await docker(['network', 'connect', rec7, c3]);
        await docker(['rm', '-f', c3]);
        await docker(['network', 'rm', rec7]);
      },
    },
  ];
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error('needs root (it runs a plugin and talks to dockerd)');
  if (existsSync(PROXY_SOCKET)) throw new Error(`${PROXY_SOCKET} exists: another recording (or a leftover) holds the driver name ${DRIVER}`);
  mkdirSync(PRIVATE_DIR, { recursive: true });
  mkdirSync(path.dirname(PROXY_SOCKET), { recursive: true });
  const stateDir = mkdtempSync(path.join(tmpdir(), 'tsbridge-record-'));
  const plugin = spawn(process.execPath, [path.join(REPO, 'dist', 'src', 'main.js')], {
    env: { ...process.env, TSBRIDGE_SOCKET: PLUGIN_SOCKET, TSBRIDGE_STATE_DIR: stateDir, TSBRIDGE_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  let server;
  try {
    await waitForSocket(PLUGIN_SOCKET, 15_000);
    server = await startProxy();
    const version = await docker(['version', '--format', '{{.Server.Version}}']);
    console.log(`record-requests: recording Docker ${version} into ${out}`);
    for (const s of scenarios()) {
      scenario = s.label;
      const note = await s.run();
      console.log(`record-requests: ${s.label.split(':')[0]}${note ? ` (${note})` : ''}`);
    }
  } finally {
    for (const n of ['c1', 'c2', 'c3']) await docker(['rm', '-f', `tsbt-rec-${n}`], { allowFail: true });
    for (const n of ['rec1', 'rec2', 'rec3', 'rec4', 'rec5', 'rec6', 'rec7']) await docker(['network', 'rm', `tsbt-rec-${n}`], { allowFail: true });
    server?.close();
    rmSync(PROXY_SOCKET, { force: true });
    plugin.kill('SIGTERM');
    await new Promise((r) => (plugin.exitCode !== null ? r() : plugin.once('exit', r)));
    rmSync(stateDir, { recursive: true, force: true });
  }
  writeFileSync(out, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  console.log(`record-requests: ${lines.length} requests written to ${out}`);
}

main().catch((e) => {
  console.error(`record-requests: ${e.message}`);
  process.exit(1);
});
