/**
 * The overlay end to end (issue 13): three Docker 28 hosts of the multi-host rig (test/lib/rig.ts),
 * one of them behind a router in another subnet, each with its own dockerd and tsbridge, etcd on
 * the underlay. One rig for the whole file; the tests run in order and build on each other.
 * Needs root, etcd-server, Docker 28 (scripts/engine.sh install 28), a build; under the e2e lock.
 */
import path from 'node:path';
import { execa } from 'execa';
import { EtcdStore } from '../../src/cluster/etcd.js';
import { Keys } from '../../src/cluster/keys.js';
import { TEST_IMAGE } from '../lib/docker.js';
import { createRig, type Rig, type RigHost } from '../lib/rig.js';
import { waitFor } from '../lib/docker.js';

const TTL = 10;
const OVERLAY = 'blue';
const SUBNET = '10.230.0.0/16';
const keys = new Keys();

let rig: Rig;
let etcd: EtcdStore;
let h1: RigHost;
let h2: RigHost;
let h3: RigHost;

beforeAll(async () => {
  rig = await createRig({ hosts: 3, routed: 1, plugin: { env: { TSBRIDGE_ETCD_LEASE_TTL: String(TTL), TSBRIDGE_ETCD_TIMEOUT_MS: '3000' } } });
  console.log(`rig up in ${rig.timings.total} ms: ${JSON.stringify(rig.timings)}`);
  [h1, h2, h3] = rig.hosts as [RigHost, RigHost, RigHost];
  etcd = new EtcdStore({ endpoints: [rig.etcdTestEndpoint], callTimeoutMs: 3000 });
});

afterAll(async () => {
  await etcd?.close();
  await rig?.destroy();
});

const createNet = (h: RigHost) =>
  h.docker(['network', 'create', '-d', 'tsbridge', '--ipam-driver', 'tsbridge', '-o', `io.tsbridge.overlay=${OVERLAY}`, '--ipam-opt', `io.tsbridge.overlay=${OVERLAY}`, '--subnet', SUBNET, OVERLAY]);

const ipOf = (h: RigHost, c: string) => h.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${OVERLAY}").IPAddress}}`, c]);

async function runDetached(h: RigHost, name: string, script: string, extra: string[] = []): Promise<string> {
  await h.docker(['run', '-d', '--name', name, '--network', OVERLAY, ...extra, TEST_IMAGE, 'sh', '-c', script]);
  return ipOf(h, name);
}

/** Runs a throwaway container on `h` and returns its output. */
const oneShot = (h: RigHost, script: string) => h.docker(['run', '--rm', '--network', OVERLAY, TEST_IMAGE, 'sh', '-c', script]);

async function etcdKeys(prefix: string): Promise<string[]> {
  return (await etcd.list(`${keys.root}${prefix}`)).kvs.map((kv) => kv.key.slice(keys.root.length));
}

async function vxlanOf(h: RigHost): Promise<string> {
  const id = await h.docker(['network', 'inspect', '-f', '{{.Id}}', OVERLAY]);
  return `tsx${id.slice(0, 12)}`;
}

/** The remote endpoints a host's VXLAN device holds: FDB entries with a destination VTEP. */
async function fdbDestinations(h: RigHost): Promise<string[]> {
  const out = await h.exec('bridge', ['-j', 'fdb', 'show', 'dev', await vxlanOf(h)]);
  return (JSON.parse(out) as { dst?: string }[]).filter((f) => f.dst).map((f) => f.dst!).sort();
}

/** The host's nftables ruleset (its VTEP allow-lists name the underlay addresses allowed). */
async function ruleset(h: RigHost): Promise<string> {
  return h.exec('nft', ['list', 'ruleset']);
}

const UDP_CLIENT = `
const dgram = require('node:dgram');
const [host, port, msg] = [process.argv[1], Number(process.argv[2]), process.argv[3]];
const s = dgram.createSocket('udp4');
const t = setTimeout(() => { console.log('timeout'); process.exit(1); }, 3000);
s.on('message', (m) => { console.log(m.toString()); clearTimeout(t); s.close(); });
s.send(msg, port, host);
`;

describe('one subnet across three hosts', () => {
  let web: string;
  let echo: string;

  test('the network is made on every host; they agree on one VNI and subnet in etcd', async () => {
    for (const h of rig.hosts) await createNet(h);
    const members = await etcdKeys(`overlays/${OVERLAY}/members/`);
    expect(members).toHaveLength(3);
    const cfg = JSON.parse((await etcd.get(keys.config(OVERLAY)))!.value) as { vni: number; subnet: string };
    expect(cfg.subnet).toBe(SUBNET);
    expect(await etcdKeys('vnis/')).toEqual([`vnis/${cfg.vni}`]);
    // tsbridge status on a host shows the overlay, its three hosts (one of them itself).
    const status = await waitFor(async () => {
      // (in the host's mount namespace, where its plugin's socket is; nsenter starts in its root)
      const r = await execa('nsenter', ['--target', String(h1.initPid), '--mount', '--net', process.execPath, path.resolve('dist/src/cli.js'), 'status', '--no-docker'], {
        reject: false,
        env: { TSBRIDGE_STATE_DIR: `${h1.dir}/state` },
      });
      if (/OVERLAY HOSTS \(3\)/.test(r.stdout)) return r.stdout;
      throw new Error(`exit ${r.exitCode}: ${r.stdout}\n${r.stderr}`);
    }, 15_000, { what: 'tsbridge status showing three hosts' });
    expect(status).toMatch(new RegExp(`^${OVERLAY}\\s+${cfg.vni}\\s+${SUBNET.replace(/[./]/g, '\\$&')}\\s+10\\.230\\.0\\.1\\s+3\\s+0$`, 'm'));
    expect(status).toContain('(this host)');
    // A host asking for another subnet is refused, clearly.
    const bad = await h1.dockerOk(['network', 'create', '-d', 'tsbridge', '--ipam-driver', 'tsbridge', '-o', `io.tsbridge.overlay=${OVERLAY}`, '--ipam-opt', `io.tsbridge.overlay=${OVERLAY}`, '--subnet', '10.231.0.0/16', 'other']);
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr).toContain(`overlay ${OVERLAY} already exists with subnet ${SUBNET}, not 10.231.0.0/16`);
  });

  test('containers on different hosts reach each other: ping, TCP and UDP — across the routed underlay too', async () => {
    web = await runDetached(h2, 'web', 'httpd -p 80 -h /www; exec sleep 100000');
    echo = await runDetached(h2, 'echo', 'exec /bin/udp-echo 7000');
    const client = await runDetached(h1, 'client', 'exec sleep 100000');
    const client3 = await runDetached(h3, 'client3', 'exec sleep 100000');
    expect(new Set([web, echo, client, client3]).size).toBe(4);
    const reach = (h: RigHost, from: string, to: string, script: string) =>
      waitFor(async () => {
        const r = await h.dockerOk(['exec', from, 'sh', '-c', script]);
        if (r.exitCode !== 0) throw new Error(`${from} on ${h.name} → ${to}: exit ${r.exitCode} ${r.stdout} ${r.stderr}`);
        return r.stdout;
      }, 20_000, { what: `${from} on ${h.name} reaching ${to}` });
    for (const [h, from] of [[h1, 'client'], [h3, 'client3']] as const) {
      await reach(h, from, web, `ping -c 1 -W 1 ${web}`);
      expect(await reach(h, from, web, `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${web} 80`)).toContain('hello from tsbridge-test');
      const udp = await h.execInContainerNetns(from, process.execPath, ['-e', UDP_CLIENT, echo, '7000', `over-vxlan-from-${h.name}`]);
      expect(udp.stdout).toContain(`over-vxlan-from-${h.name}`);
    }
    // Both directions through the router: h3's container reaches h1's and the other way round.
    await reach(h3, 'client3', client, `ping -c 1 -W 1 ${client}`);
    await reach(h1, 'client', client3, `ping -c 1 -W 1 ${client3}`);
  });

  test('anti-spoofing still applies: a container sending from an address not its own reaches no other host', async () => {
    const spoofed = '10.230.200.200';
    const own = await runDetached(h1, 'spoofer', 'exec sleep 100000', ['--cap-add', 'NET_ADMIN']);
    await h1.docker(['exec', 'spoofer', 'ip', 'addr', 'add', `${spoofed}/16`, 'dev', 'eth0']);
    // Count, in web's own namespace on h2, what arrives from each source.
    const nft = (args: string[], input?: string) => h2.execInContainerNetns('web', 'nft', args, input === undefined ? {} : { input });
    await nft(['-f', '-'], `table inet spoofcheck {\n chain in {\n  type filter hook input priority 0; policy accept;\n  ip saddr ${spoofed} counter\n  ip saddr ${own} counter\n }\n}\n`);
    const counts = async () => [...(await nft(['list', 'table', 'inet', 'spoofcheck'])).stdout.matchAll(/packets (\d+)/g)].map((m) => Number(m[1]));
    expect((await h1.dockerOk(['exec', 'spoofer', 'ping', '-c', '2', '-W', '1', '-I', spoofed, web])).exitCode).not.toBe(0);
    expect((await counts())[0]).toBe(0);
    await waitFor(async () => (await h1.dockerOk(['exec', 'spoofer', 'ping', '-c', '1', '-W', '1', web])).exitCode === 0, 15_000, { what: 'spoofer reaching web from its own address' });
    expect((await counts())[1]).toBeGreaterThan(0);
    await h1.docker(['rm', '-f', 'spoofer']);
  });

  test('a new container is reachable from the other hosts once their watch has programmed it', async () => {
    const t0 = Date.now();
    const fresh = await runDetached(h3, 'fresh', 'exec sleep 100000');
    const started = Date.now() - t0;
    const t1 = Date.now();
    await waitFor(async () => (await h2.dockerOk(['exec', 'web', 'ping', '-c', '1', '-W', '1', fresh])).exitCode === 0, 15_000, { what: `web on h2 reaching a new container on h3 (${fresh})` });
    console.log(`a new container on h3 (docker run -d: ${started} ms) answered a container on h2 ${Date.now() - t1} ms after docker run returned`);
    await h3.docker(['rm', '-f', 'fresh']);
  });

  test('ARP for the gateway and for remote containers is answered locally: nothing is flooded between hosts', async () => {
    // The VXLAN devices have no default (flooding) FDB entry, only one per remote endpoint.
    for (const h of rig.hosts) {
      const out = await h.exec('bridge', ['-j', 'fdb', 'show', 'dev', await vxlanOf(h)]);
      expect((JSON.parse(out) as { mac: string; dst?: string }[]).filter((f) => f.dst && f.mac === '00:00:00:00:00:00')).toEqual([]);
    }
    // Every host's bridge holds the same gateway address and MAC.
    const macs = new Set<string>();
    for (const h of rig.hosts) {
      const id = await h.docker(['network', 'inspect', '-f', '{{.Id}}', OVERLAY]);
      const link = JSON.parse(await h.exec('ip', ['-j', 'addr', 'show', 'dev', `tsb-${id.slice(0, 11)}`])) as { address: string; addr_info: { local: string }[] }[];
      macs.add(link[0]!.address);
      expect(link[0]!.addr_info.map((a) => a.local)).toContain('10.230.0.1');
    }
    expect(macs.size).toBe(1);
  });

  test('egress is masqueraded on the container\'s own host; a published port answers on the host that runs the container', async () => {
    // A listener on the underlay namespace records who connects.
    const recorder = execa('ip', ['netns', 'exec', rig.underlay, process.execPath, '-e', `require('node:net').createServer((s) => s.end(s.remoteAddress.replace('::ffff:', '') + '\\n')).listen(7071, () => console.log('ready'))`], { reject: false, buffer: false });
    try {
      await new Promise<void>((resolve) => recorder.stdout!.once('data', () => resolve()));
      for (const h of [h1, h3]) {
        const seen = await oneShot(h, `nc -w 3 ${rig.underlayAddr} 7071 </dev/null`);
        expect(seen.trim()).toBe(h.addr);
      }
    } finally {
      recorder.kill('SIGKILL');
      await recorder;
    }
    await h2.docker(['run', '-d', '--name', 'published', '--network', OVERLAY, '-p', '18080:80', TEST_IMAGE, 'sh', '-c', 'httpd -p 80 -h /www; exec sleep 100000']);
    const get = (addr: string) => rig.underlayExec('sh', ['-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 ${addr} 18080`]);
    expect((await waitFor(async () => ((await get(h2.addr)).stdout.includes('hello') ? 'ok' : undefined), 10_000)).length).toBeGreaterThan(0);
    expect((await get(h1.addr)).stdout).not.toContain('hello');
  });

  test('fifty docker run in parallel over three hosts get fifty distinct addresses', async () => {
    const names = Array.from({ length: 50 }, (_, i) => `par${i}`);
    const t0 = Date.now();
    await Promise.all(names.map((n, i) => rig.hosts[i % 3]!.docker(['run', '-d', '--name', n, '--network', OVERLAY, TEST_IMAGE, 'sleep', '100000'], { timeoutMs: 180_000 })));
    const ips = await Promise.all(names.map((n, i) => ipOf(rig.hosts[i % 3]!, n)));
    console.log(`50 parallel docker run over 3 hosts: ${Date.now() - t0} ms`);
    expect(new Set(ips).size).toBe(50);
    const held = await etcdKeys(`overlays/${OVERLAY}/addresses/`);
    for (const ip of ips) expect(held).toContain(`overlays/${OVERLAY}/addresses/${ip}`);
    await Promise.all(names.map((n, i) => rig.hosts[i % 3]!.docker(['rm', '-f', n], { timeoutMs: 120_000 })));
  });

  test('a plugin that dies and comes back after its lease expired registers again and puts back what its state has', async () => {
    await h2.plugin!.kill9();
    // Its lease runs out: the others drop its endpoints (web, echo, published).
    await waitFor(async () => !(await fdbDestinations(h1)).includes(h2.addr), 45_000, { what: 'h1 dropping h2 after its lease expired' });
    expect((await h1.dockerOk(['exec', 'client', 'ping', '-c', '1', '-W', '1', web])).exitCode).not.toBe(0);
    await h2.startPlugin({ TSBRIDGE_ETCD_LEASE_TTL: String(TTL), TSBRIDGE_ETCD_TIMEOUT_MS: '3000' });
    await waitFor(async () => (await fdbDestinations(h1)).includes(h2.addr), 20_000, { what: 'h1 programming h2 again' });
    await waitFor(async () => (await h1.dockerOk(['exec', 'client', 'ping', '-c', '1', '-W', '1', web])).exitCode === 0, 15_000, { what: 'client on h1 reaching web on h2 again' });
    const held = (await etcdKeys(`overlays/${OVERLAY}/addresses/`)).map((k) => k.split('/').pop());
    expect(held).toEqual(expect.arrayContaining([web, echo]));
  });

  test('a host that dies: once its lease expires the others drop its FDB, neighbour and allow-list entries', async () => {
    await waitFor(async () => (await fdbDestinations(h1)).includes(h3.addr), 10_000, { what: 'h1 programming h3 (client3)' });
    expect(await ruleset(h1)).toContain(h3.addr);
    await h3.kill();
    const t0 = Date.now();
    await waitFor(async () => !(await fdbDestinations(h1)).includes(h3.addr) && !(await fdbDestinations(h2)).includes(h3.addr), 45_000, { what: 'h3 gone from the others' });
    console.log(`h3's entries gone ${Date.now() - t0} ms after it died (lease TTL ${TTL} s)`);
    expect(await ruleset(h1)).not.toContain(h3.addr);
    expect(await ruleset(h2)).not.toContain(h3.addr);
    const neigh = await h1.exec('ip', ['-j', 'neigh', 'show', 'dev', await vxlanOf(h1)]);
    expect((JSON.parse(neigh) as { lladdr?: string }[]).length).toBe((await fdbDestinations(h1)).length);
    // its addresses are back in the pool: none of h3's keys are left
    const hosts = await etcdKeys('hosts/');
    expect(hosts).toHaveLength(2);
    // h1 and h2 still reach each other
    expect((await h1.dockerOk(['exec', 'client', 'ping', '-c', '1', '-W', '2', web])).exitCode).toBe(0);
  });

  test('etcd stopped: existing containers keep talking, a new one fails clearly', async () => {
    await rig.etcd.stop();
    try {
      await duringOutage();
    } finally {
      await rig.etcd.start();
    }
  });

  async function duringOutage(): Promise<void> {
    const refused = await h1.dockerOk(['run', '-d', '--name', 'during', '--network', OVERLAY, TEST_IMAGE, 'sleep', '100000']);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toContain('etcd is unreachable');
    await h1.dockerOk(['rm', '-f', 'during']);
    // The container that existed before still reaches web on h2.
    const ping = await h1.execInContainerNetns('client', 'busybox', ['ping', '-c', '1', '-W', '2', web]);
    expect(ping.exitCode).toBe(0);
  }

  test('… and once etcd is back, a new container starts, with no duplicate address', async () => {
    const after = await waitFor(async () => {
      const r = await h1.dockerOk(['run', '-d', '--name', 'after', '--network', OVERLAY, TEST_IMAGE, 'sleep', '100000']);
      if (r.exitCode === 0) return 'ok';
      await h1.dockerOk(['rm', '-f', 'after']);
      return undefined;
    }, 30_000, { what: 'a container starting once etcd is back' });
    expect(after).toBe('ok');
    const ips = await Promise.all([ipOf(h1, 'client'), ipOf(h1, 'after'), ipOf(h2, 'web'), ipOf(h2, 'echo'), ipOf(h2, 'published')]);
    expect(new Set(ips).size).toBe(ips.length);
    const held = (await etcdKeys(`overlays/${OVERLAY}/addresses/`)).map((k) => k.split('/').pop());
    expect(new Set(held).size).toBe(held.length);
    for (const ip of ips) expect(held).toContain(ip);
  });

  test('removal on one host leaves the overlay on the other; when the last leaves, nothing is left on any host or in etcd', async () => {
    await h1.docker(['rm', '-f', 'client', 'after']);
    await h1.docker(['network', 'rm', OVERLAY]);
    expect(await etcdKeys(`overlays/${OVERLAY}/config`)).toHaveLength(1);
    expect(await oneShot(h2, `ping -c 1 -W 2 ${web} >/dev/null && echo ok`)).toContain('ok');
    await h2.docker(['rm', '-f', 'web', 'echo', 'published']);
    await h2.docker(['network', 'rm', OVERLAY]);
    expect(await etcdKeys('overlays/')).toEqual([]);
    expect(await etcdKeys('vnis/')).toEqual([]);
    for (const h of [h1, h2]) {
      const links = (JSON.parse(await h.exec('ip', ['-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname);
      expect(links.filter((l) => /^(tsb-|tsx|tsv|tsc)/.test(l))).toEqual([]);
      expect(await h.exec('nft', ['list', 'tables'])).not.toContain('tsbridge');
    }
  });
});
