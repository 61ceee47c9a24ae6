/**
 * Issue 4, end to end: `docker run -p` on tsbridge networks with a real dockerd, real
 * containers and real packets — every path to a published port (another host, the host
 * itself through its own address / 127.0.0.1 / localhost, hairpin from the same network, from
 * the container itself, from another tsbridge network), TCP, UDP and SCTP, IPv4 and IPv6,
 * host-address binding, ranges, -P, conflicts, UDP flows across a replacement, what stop and
 * rm remove, `tsbridge ports`, and the firewall back to its baseline at the end.
 *
 * Needs: root, a running dockerd, the tsbridge-test image (scripts/test-image.sh), python3
 * (SCTP raw packets), busybox on the host (nc). Run under the e2e lock:
 *   npm run build && flock /run/tsbridge-e2e.lock npm run test:e2e -- test/e2e/ports.test.ts
 * Addresses: 10.216.1-4.0/24, fd5e:216:1::/64; host ports 24000-24999. The "host address" is
 * the host end of the outside-world veth (198.18.x.1), never eth0's.
 */
import { randomInt } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Cleanup } from '../lib/cleanup.js';
import { docker, dockerOk, removeContainers, removeNetworks, requireDocker, uniqueName, waitFor } from '../lib/docker.js';
import { createOutsideWorld, type Netns, type OutsideWorld } from '../lib/netns.js';
import { REPO_ROOT, startPlugin, type PluginHandle } from '../lib/plugin.js';
import { parsePeerReply, tcpRequest, udpRequest } from '../lib/probe.js';
import { sh, shOk } from '../lib/run.js';
import { havePythonRaw, sctpProbe } from '../lib/sctp.js';
import { footprint, foreignFirewall, TEST_IMAGE, tableOf, httpPeer, PEER_REQUEST, peerServerScript, stateOnDisk } from './helpers.js';

const DRIVER = 'tsbt-ports';
const SUB_A = '10.216.1.0/24';
const SUB_A6 = 'fd5e:216:1::/64';
const SUB_B = '10.216.2.0/24';
const GW_A = '10.216.1.1';
const GW_A6 = 'fd5e:216:1::1';
/** Host ports of this run: B … B+19. */
const B = 24000 + 20 * randomInt(45);

const cleanup = new Cleanup();
let plugin: PluginHandle;
let world: OutsideWorld;
let baseline: { foreign: string; footprint: Awaited<ReturnType<typeof footprint>> };
const netA = uniqueName('pa');
const netB = uniqueName('pb');
const srv = uniqueName('srv');
const peer = uniqueName('peer');
const far = uniqueName('far');

// ---------------------------------------------------------------- helpers

const HTTP = PEER_REQUEST;
const SERVE = peerServerScript(['httpd -p 8002 -h /www', 'udp-echo 7 >/dev/null &']);

/** HTTP through the CGI from inside a namespace (busybox nc); the client address the server saw, or null. */
async function tcpFromNs(ns: Netns, host: string, port: number): Promise<string | null> {
  const r = await ns.execOk('busybox', ['nc', '-w', '3', host, String(port)], { input: HTTP, timeoutMs: 10_000 });
  return httpPeer(r.stdout);
}

/** HTTP from the host itself. */
async function tcpFromHost(host: string, port: number, timeoutMs = 4000): Promise<string | null> {
  return httpPeer(await tcpRequest(host, port, HTTP, { timeoutMs }).catch(() => ''));
}

/** HTTP from inside a container. */
async function tcpFromCtr(ctr: string, host: string, port: number): Promise<string | null> {
  const r = await dockerOk(['exec', ctr, 'sh', '-c', `printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${host} ${port}`]);
  return httpPeer(r.stdout);
}

/** One datagram from inside a container (udp-echo client); the client address the echo saw, or null. */
async function udpFromCtr(ctr: string, host: string, port: number): Promise<string | null> {
  const r = await dockerOk(['exec', ctr, 'udp-echo', '-s', host, String(port), 'x']);
  return r.exitCode === 0 ? parsePeerReply(r.stdout.trim()).address : null;
}

async function udpFromHost(host: string, port: number): Promise<string | null> {
  return udpRequest(host, port, 'x', { timeoutMs: 2000 }).then((r) => parsePeerReply(r).address, () => null);
}

/* One datagram from a namespace, from a fixed source port when given; prints the reply or "". */
const UDP_CLIENT = `
const dgram = require('node:dgram'), net = require('node:net');
const [host, port, sport, ms] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const s = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4', reuseAddr: true });
const done = (t) => { process.stdout.write(t); process.exit(0); };
setTimeout(() => done(''), ms);
s.on('error', () => done(''));
s.on('message', (m) => done(m.toString()));
s.bind(sport, () => s.send('x', port, host));
`;

async function udpFromNs(ns: Netns, host: string, port: number, sport = 0, timeoutMs = 2000): Promise<string | null> {
  const r = await ns.execOk(process.execPath, ['-e', UDP_CLIENT, host, String(port), String(sport), String(timeoutMs)], { timeoutMs: timeoutMs + 10_000 });
  return r.stdout ? parsePeerReply(r.stdout).address : null;
}

/** Retries a probe a few times (the very first packets may wait for ARP / neighbour discovery). */
async function settled<T>(probe: () => Promise<T | null>, tries = 3): Promise<T | null> {
  for (let i = 0; i < tries - 1; i++) {
    const v = await probe();
    if (v !== null) return v;
  }
  return probe();
}

/** Every element of tsbridge's four port maps on the host, as nft prints them; [] without the table. */
async function mapElements(): Promise<string[]> {
  const out: string[] = [];
  for (const m of ['ports4', 'ports4_addr', 'ports6', 'ports6_addr']) {
    const r = await shOk('nft', ['list', 'map', 'inet', tableOf(DRIVER), m]);
    if (r.exitCode !== 0) continue;
    const body = /elements = \{([^}]*)\}/.exec(r.stdout)?.[1] ?? '';
    out.push(...body.split(',').map((e) => `${m} ${e.replace(/\s+/g, ' ').trim()}`).filter((e) => e !== `${m} `));
  }
  return out.sort();
}

interface StateDoc {
  endpoints: Record<string, { networkId: string; ports: { proto: string; hostIp: string; hostPort: number; containerPort: number }[] }>;
}

async function pluginState(): Promise<StateDoc> {
  return stateOnDisk<StateDoc>(plugin.stateDir);
}

/** `tsbridge ports --json` over the plugin's state directory. */
async function cliPorts(): Promise<{ endpointId: string; networkId: string; proto: string; hostIp: string; hostPort: number; family: number | null; containerIp: string; containerPort: number }[]> {
  return JSON.parse(await sh(process.execPath, [path.join(REPO_ROOT, 'dist', 'src', 'cli.js'), 'ports', '--json', '--state-dir', plugin.stateDir]));
}

async function endpointId(ctr: string, network: string): Promise<string> {
  return docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").EndpointID}}`, ctr]);
}

async function ipOf(ctr: string, network: string, field = 'IPAddress'): Promise<string> {
  return docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").${field}}}`, ctr]);
}

/** Starts the server container on `network` with these -p arguments and waits until httpd answers. */
async function startServer(name: string, network: string, publish: string[], c: Cleanup = cleanup): Promise<string> {
  c.add(() => removeContainers([name]), name);
  await docker(['run', '-d', '--network', network, '--name', name, ...publish, TEST_IMAGE, 'sh', '-c', SERVE]);
  const ip = await ipOf(name, network);
  await waitFor(async () => (await tcpFromHost(ip, 80, 1000)) !== null, 10_000, { what: `httpd in ${name}` });
  return ip;
}

/** What a failed `docker run` must not leave: tsbridge links, map elements, endpoints in the state. */
async function leftovers(): Promise<{ links: string[]; elements: string[]; endpoints: string[] }> {
  return { links: (await footprint()).links, elements: await mapElements(), endpoints: Object.keys((await pluginState()).endpoints).sort() };
}

// ---------------------------------------------------------------- setup

beforeAll(async () => {
  await requireDocker();
  baseline = { foreign: await foreignFirewall(), footprint: await footprint() };
  plugin = await startPlugin({ name: DRIVER });
  cleanup.add(() => plugin.dispose(), 'plugin');
  world = await createOutsideWorld({ prefix: 'ports' });
  cleanup.add(() => world.delete(), 'outside world');
  cleanup.add(() => removeNetworks([netA, netB]), 'networks');
  await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--ipv6', '--subnet', SUB_A, '--subnet', SUB_A6, netA]);
  await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', SUB_B, netB]);
  await startServer(srv, netA, [
    '-p', `${B}:80`,
    '-p', `${B}:7/udp`,
    '-p', `127.0.0.1:${B + 1}:80`,
    '-p', `127.0.0.1:${B + 1}:7/udp`,
    '-p', `${B + 2}:9/sctp`,
    '-p', `${B + 3}-${B + 5}:8001-8003`,
    '-p', `[::]:${B + 6}:80`,
    '-p', `[${world.hostAddr6}]:${B + 10}:80`,
    '-p', `0.0.0.0:${B + 11}:80`,
  ]);
  cleanup.add(() => removeContainers([peer, far]), 'clients');
  await docker(['run', '-d', '--network', netA, '--name', peer, TEST_IMAGE, 'sleep', '100000']);
  await docker(['run', '-d', '--network', netB, '--name', far, TEST_IMAGE, 'sleep', '100000']);
}, 120_000);

afterAll(async () => {
  await cleanup.run();
});

// ---------------------------------------------------------------- reachability

describe('every path to a published port', () => {
  test('from another host (the outside-world namespace): TCP and UDP, the container sees the client address', async () => {
    expect(await settled(() => tcpFromNs(world.ns, world.hostAddr, B))).toBe(world.nsAddr);
    expect(await settled(() => udpFromNs(world.ns, world.hostAddr, B))).toBe(world.nsAddr);
  });

  test('from another host over IPv6 to the host\'s IPv6 address: the client address too', async () => {
    expect(await settled(() => tcpFromNs(world.ns, world.hostAddr6, B))).toBe(world.nsAddr6);
    expect(await settled(() => udpFromNs(world.ns, world.hostAddr6, B))).toBe(world.nsAddr6);
    // [::]:B+6 is IPv6 only
    expect(await settled(() => tcpFromNs(world.ns, world.hostAddr6, B + 6))).toBe(world.nsAddr6);
    expect(await tcpFromNs(world.ns, world.hostAddr, B + 6)).toBeNull();
  });

  test('host-address binding: one IPv6 address, all IPv4 addresses', async () => {
    expect(await settled(() => tcpFromNs(world.ns, world.hostAddr6, B + 10))).toBe(world.nsAddr6);
    expect(await tcpFromNs(world.ns, world.hostAddr, B + 10)).toBeNull();
    expect(await tcpFromHost('127.0.0.1', B + 10, 1500)).toBeNull();
    expect(await settled(() => tcpFromNs(world.ns, world.hostAddr, B + 11))).toBe(world.nsAddr);
    expect(await tcpFromNs(world.ns, world.hostAddr6, B + 11)).toBeNull();
  });

  test('from the host through its own address (source kept) and through 127.0.0.1 / localhost (masqueraded to the gateway)', async () => {
    expect(await settled(() => tcpFromHost(world.hostAddr, B))).toBe(world.hostAddr);
    expect(await settled(() => udpFromHost(world.hostAddr, B))).toBe(world.hostAddr);
    expect(await settled(() => tcpFromHost('127.0.0.1', B))).toBe(GW_A);
    expect(await settled(() => udpFromHost('127.0.0.1', B))).toBe(GW_A);
    expect(await settled(() => tcpFromHost('localhost', B))).toBe(GW_A);
    // IPv6 loopback is not DNATed (IPv6 has no route_localnet): refused at once, so clients fall back to 127.0.0.1.
    await expect(tcpRequest('::1', B, HTTP, { timeoutMs: 1500 })).rejects.toThrow(/ECONNREFUSED/);
  });

  test('hairpin: another container of the same network through the host address', async () => {
    expect(await settled(() => tcpFromCtr(peer, world.hostAddr, B))).toBe(GW_A);
    expect(await settled(() => udpFromCtr(peer, world.hostAddr, B))).toBe(GW_A);
    expect(await settled(() => tcpFromCtr(peer, world.hostAddr6, B))).toBe(GW_A6);
  });

  test('hairpin to itself: the container through the host address', async () => {
    expect(await settled(() => tcpFromCtr(srv, world.hostAddr, B))).toBe(GW_A);
    expect(await settled(() => udpFromCtr(srv, world.hostAddr, B))).toBe(GW_A);
  });

  test('from a container on another tsbridge network through the host address', async () => {
    expect(await settled(() => tcpFromCtr(far, world.hostAddr, B))).toBe(GW_A);
    expect(await settled(() => udpFromCtr(far, world.hostAddr, B))).toBe(GW_A);
  });

  test('a range: each host port of -p B+3-B+5:8001-8003 leads to its container port', async () => {
    const ip = await ipOf(srv, netA);
    const elements = await mapElements();
    for (let i = 0; i < 3; i++) expect(elements).toContain(`ports4 tcp . ${B + 3 + i} : ${ip} . ${8001 + i}`);
    expect(await settled(() => tcpFromNs(world.ns, world.hostAddr, B + 4))).toBe(world.nsAddr); // httpd on 8002
  });

  test('SCTP: the map element exists and an INIT from another host arrives in the container, DNATed', async () => {
    const ip = await ipOf(srv, netA);
    expect(await mapElements()).toContain(`ports4 sctp . ${B + 2} : ${ip} . 9`);
    // This kernel has no SCTP sockets (CONFIG_IP_SCTP off) but conntrack and NAT handle SCTP:
    // raw packets show the translation.
    expect(await havePythonRaw()).toBe(true);
    const pid = await docker(['inspect', '-f', '{{.State.Pid}}', srv]);
    const got = await sctpProbe(['ip', 'netns', 'exec', world.ns.name], ['nsenter', '-t', pid, '-n'], world.hostAddr, B + 2);
    expect(got).toMatchObject({ src: world.nsAddr, dst: ip, dport: 9, chunk: 1 });
  });
});

describe('a port bound to 127.0.0.1', () => {
  test('is reached from the host through 127.0.0.1, not through the host address', async () => {
    expect(await settled(() => tcpFromHost('127.0.0.1', B + 1))).toBe(GW_A);
    expect(await settled(() => udpFromHost('127.0.0.1', B + 1))).toBe(GW_A);
    expect(await tcpFromHost(world.hostAddr, B + 1, 1500)).toBeNull();
  });

  test('is not reachable from another host, even one that routes 127.0.0.1 through this host', async () => {
    expect(await tcpFromNs(world.ns, world.hostAddr, B + 1)).toBeNull();
    // The outside namespace gives up its own loopback route and sends 127.0.0.1 to the host.
    await world.ns.exec('ip', ['route', 'del', 'local', '127.0.0.0/8', 'dev', 'lo', 'table', 'local']);
    await world.ns.execOk('ip', ['route', 'del', 'local', '127.0.0.1', 'dev', 'lo', 'table', 'local']);
    await world.ns.exec('ip', ['route', 'add', '127.0.0.1/32', 'via', world.hostAddr]);
    const hits = async () => Number((await sh('conntrack', ['-L', '-s', world.nsAddr, '-d', '127.0.0.1'], {}).catch(() => '')).split('\n').filter((l) => l.includes('dport=')).length);
    expect(await tcpFromNs(world.ns, '127.0.0.1', B + 1)).toBeNull();
    expect(await udpFromNs(world.ns, '127.0.0.1', B + 1)).toBeNull();
    // dropped before NAT: not even a conntrack entry was made (without the drop, the SYN reached the container)
    expect(await hits()).toBe(0);
  });
});

// ---------------------------------------------------------------- -P, tsbridge ports

describe('HostPort 0 and `tsbridge ports`', () => {
  const auto = uniqueName('auto');
  const c = new Cleanup();
  afterAll(() => c.run());

  test('-P gets a free port from the kernel\'s local port range, which works; tsbridge ports lists every mapping', async () => {
    await startServer(auto, netA, ['--expose', '80', '--expose', '7/udp', '-P'], c);
    const ep = await endpointId(auto, netA);
    const rows = await cliPorts();
    const mine = rows.filter((r) => r.endpointId === ep && r.family === 4);
    expect(mine.map((r) => r.proto).sort()).toEqual(['tcp', 'udp']);
    const [lo, hi] = (await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')).trim().split(/\s+/).map(Number);
    for (const r of mine) {
      expect(r.hostPort).toBeGreaterThanOrEqual(lo!);
      expect(r.hostPort).toBeLessThanOrEqual(hi!);
      expect(r.containerIp).toBe(await ipOf(auto, netA));
    }
    const tcpPort = mine.find((r) => r.proto === 'tcp')!.hostPort;
    expect(await settled(() => tcpFromNs(world.ns, world.hostAddr, tcpPort))).toBe(world.nsAddr);

    // the server's ports, with its endpoint ID — which `docker network inspect` maps to its name
    const srvEp = await endpointId(srv, netA);
    const inspect = JSON.parse(await docker(['network', 'inspect', netA])) as { Containers: Record<string, { Name: string; EndpointID: string }> }[];
    const byEndpoint = new Map(Object.values(inspect[0]!.Containers).map((x) => [x.EndpointID, x.Name]));
    expect(byEndpoint.get(srvEp)).toBe(srv);
    const srvRows = rows.filter((r) => r.endpointId === srvEp).map((r) => `${r.proto} ${r.hostIp || '*'}:${r.hostPort} v${r.family} -> ${r.containerPort}`);
    expect(srvRows).toEqual(expect.arrayContaining([
      `tcp *:${B} v4 -> 80`, `tcp *:${B} v6 -> 80`, `udp *:${B} v4 -> 7`,
      `tcp 127.0.0.1:${B + 1} v4 -> 80`, `sctp *:${B + 2} v4 -> 9`, `tcp *:${B + 4} v4 -> 8002`, `tcp :::${B + 6} v6 -> 80`,
    ]));
    // the table names the container itself (the command asks Docker)
    const table = await sh(process.execPath, [path.join(REPO_ROOT, 'dist', 'src', 'cli.js'), 'ports', '--state-dir', plugin.stateDir]);
    expect(table.split('\n')[0]).toMatch(/^NETWORK\s+BRIDGE\s+ENDPOINT\s+NAME\s+PROTO\s+HOST\s+CONTAINER$/);
    expect(table).toMatch(new RegExp(`^\\S+\\s+\\S+\\s+${srvEp.slice(0, 12)}\\s+${srv}\\s+tcp\\s+0\\.0\\.0\\.0:${B} `, 'm'));
    expect(table).toContain(`[::]:${B + 6} `);
  });
});

// ---------------------------------------------------------------- conflicts

describe('conflicts are refused with a clear error and leave nothing behind', () => {
  const failed = uniqueName('clash');
  const c = new Cleanup();
  afterAll(() => c.run());
  afterEach(() => removeContainers([failed]));

  test('a host port already published by tsbridge (on another network)', async () => {
    const before = await leftovers();
    c.add(() => removeContainers([failed]), failed);
    const r = await dockerOk(['run', '-d', '--network', netB, '--name', failed, '-p', `${B}:80`, TEST_IMAGE, 'sleep', '100']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`host port 0\\.0\\.0\\.0:${B}/tcp is already allocated \\(published by endpoint [0-9a-f]{12}\\)`));
    await waitFor(async () => JSON.stringify(await leftovers()) === JSON.stringify(before), 10_000, { what: 'the failed container\'s leftovers to go' });
    // ... and the port still leads to its owner
    expect(await settled(() => tcpFromNs(world.ns, world.hostAddr, B))).toBe(world.nsAddr);
  });

  test('a host port a host process listens on', async () => {
    const server = net.createServer((s) => s.end());
    await new Promise<void>((res) => server.listen(B + 7, '0.0.0.0', res));
    try {
      const before = await leftovers();
      const r = await dockerOk(['run', '-d', '--network', netA, '--name', failed, '-p', `${B + 7}:80`, TEST_IMAGE, 'sleep', '100']);
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toContain(`host port 0.0.0.0:${B + 7}/tcp is already allocated (a host process listens on it)`);
      await waitFor(async () => JSON.stringify(await leftovers()) === JSON.stringify(before), 10_000, { what: 'the failed container\'s leftovers to go' });
    } finally {
      await new Promise((res) => server.close(res));
    }
  });

  test('IPv6 loopback, which kernel NAT cannot serve', async () => {
    const before = await leftovers();
    const r = await dockerOk(['run', '-d', '--network', netA, '--name', failed, '-p', `[::1]:${B + 8}:80`, TEST_IMAGE, 'sleep', '100']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/invalid address "::1": IPv6 loopback cannot be published by kernel NAT/);
    await waitFor(async () => JSON.stringify(await leftovers()) === JSON.stringify(before), 10_000, { what: 'the failed container\'s leftovers to go' });
  });
});

// ---------------------------------------------------------------- UDP flows, unpublishing

describe('UDP flows and unpublishing', () => {
  const u1 = uniqueName('u1');
  const u2 = uniqueName('u2');
  const c = new Cleanup();
  afterAll(() => c.run());

  test('a UDP flow that started before the port was published, then outlived its container, reaches the new one', async () => {
    const port = B + 9;
    const sport = 24990 + randomInt(9);
    // Nothing publishes the port yet: the host answers port unreachable, conntrack keeps the flow.
    expect(await udpFromNs(world.ns, world.hostAddr, port, sport)).toBeNull();
    await startServer(u1, netA, ['-p', `${port}:7/udp`], c);
    expect(await settled(() => udpFromNs(world.ns, world.hostAddr, port, sport))).toBe(world.nsAddr);
    // Replaced by another container (another address) on the same host port; same 5-tuple.
    await removeContainers([u1]);
    await startServer(u2, netA, ['-p', `${port}:7/udp`], c);
    expect(await ipOf(u2, netA)).not.toBe('');
    expect(await settled(() => udpFromNs(world.ns, world.hostAddr, port, sport))).toBe(world.nsAddr);
  });

  test('docker stop removes exactly that container\'s map elements; the others keep working', async () => {
    const all = await mapElements();
    const ip2 = await ipOf(u2, netA);
    const ip2v6 = await ipOf(u2, netA, 'GlobalIPv6Address');
    const own = all.filter((e) => e.includes(`: ${ip2} .`) || e.includes(`: ${ip2v6} .`));
    expect(own).toEqual([`ports4 udp . ${B + 9} : ${ip2} . 7`, `ports6 udp . ${B + 9} : ${ip2v6} . 7`]);
    await docker(['stop', '-t', '1', u2]);
    expect(await mapElements()).toEqual(all.filter((e) => !own.includes(e)));
    expect(await settled(() => tcpFromNs(world.ns, world.hostAddr, B))).toBe(world.nsAddr);
    expect(await udpFromNs(world.ns, world.hostAddr, B + 9)).toBeNull();
    // started again, its port is back
    await docker(['start', u2]);
    await waitFor(async () => (await udpFromNs(world.ns, world.hostAddr, B + 9, 0, 1000)) === world.nsAddr, 10_000, { what: 'the restarted container\'s UDP port' });
  });

  test('docker network disconnect removes its ports too', async () => {
    const ep = await endpointId(u2, netA);
    expect((await pluginState()).endpoints[ep]?.ports).toHaveLength(1);
    await docker(['network', 'disconnect', netA, u2]);
    expect((await mapElements()).some((e) => e.includes(` ${B + 9} `))).toBe(false);
    expect((await pluginState()).endpoints[ep]).toBeUndefined();
  });
});

// ---------------------------------------------------------------- teardown

describe('after everything is removed', () => {
  test('no tsbridge link, table or chain; the rest of the firewall is byte for byte what it was', async () => {
    await removeContainers([srv, peer, far]);
    await removeNetworks([netA, netB]);
    await waitFor(async () => JSON.stringify(await footprint()) === JSON.stringify(baseline.footprint), 10_000, { what: 'the footprint to return to baseline' });
    expect(await footprint()).toEqual(baseline.footprint);
    expect(await foreignFirewall()).toBe(baseline.foreign);
    expect(await cliPorts()).toEqual([]);
  });
});
