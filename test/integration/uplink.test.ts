/**
 * Containers on the LAN (the uplink kind) with the real `ip`, `nft` and `iptables`, inside
 * throwaway namespaces (helpers/lab.ts, helpers/lan.ts): H plays the host, R the LAN's router and
 * switch, X another LAN host, C… containers. H's uplink is a veth whose other end is a port of R's
 * switch; where the tests move addresses and the default route, they are H's own (a namespace),
 * never the machine's.
 *
 * Needs: root, iproute2, nftables, iptables, conntrack, busybox (ping) and node.
 */
import { Reconciler } from '../../src/driver/reconcile.js';
import { DriverService } from '../../src/driver/service.js';
import type { Network, NetworkSpec } from '../../src/domain/types.js';
import { NftFirewall } from '../../src/kernel/real/firewall.js';
import { IpLinks } from '../../src/kernel/real/links.js';
import type { RunResult, Runner } from '../../src/kernel/real/exec.js';
import type { Kernel } from '../../src/kernel/types.js';
import { uplinkKind } from '../../src/kinds/uplink/index.js';
import { TsbridgeError } from '../../src/errors.js';
import { parseCreateNetwork } from '../../src/protocol/network.js';
import { Cleanup } from '../lib/cleanup.js';
import { listNetns, startPeerRecorder } from '../lib/netns.js';
import { requireRoot, sh } from '../lib/run.js';
import { dockerId, Lab, ping, quietHostPorts, reaches, requireLabTools, seenAs, tcpFrom, udpFrom, type LabEndpoint, type LabNetwork } from './helpers/lab.js';
import { buildLan, interfaceState, type Lan } from './helpers/lan.js';
import { NetnsSysctl } from './helpers/netns-runner.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

beforeAll(async () => {
  requireRoot('test/integration/uplink.test.ts');
  await requireLabTools();
});

afterAll(async () => {
  await cleanup.run();
  const left = (await listNetns()).filter((n) => Lab.created.includes(n));
  expect(left).toEqual([]);
});

const T = 60_000;

/** The spec Docker's CreateNetwork gives for `-o io.tsbridge.uplink=… --subnet LAN --gateway ROUTER [--ipv6 …]`. */
function lanSpec(lan: Lan, generic: Record<string, string> = {}, id = dockerId()): NetworkSpec {
  return parseCreateNetwork({
    NetworkID: id,
    Options: { 'com.docker.network.enable_ipv6': true, 'com.docker.network.generic': { 'io.tsbridge.uplink': lan.uplink, ...generic } },
    IPv4Data: [{ Pool: lan.subnet4, Gateway: `${lan.gateway4}/24` }],
    IPv6Data: [{ Pool: lan.subnet6, Gateway: `${lan.gateway6}/64` }],
  });
}

/** The network as the lab's attach() wants it: containers get .100, .101 … of the LAN. */
function labNetwork(spec: NetworkSpec, lan: Lan): LabNetwork {
  return { spec, id: spec.id, bridge: String(spec.settings.bridge), net4: lan.net4, net6: lan.net6, gateway4: lan.gateway4, gateway6: lan.gateway6, next: 100 };
}

const MOVE = { 'io.tsbridge.uplink_move_addresses': 'true' };

/**
 * A runner over the lab's that, once, runs only the first `lines` lines of the `ip -batch` script
 * matching `match` — really, in H — and then fails as `ip` does: a move cut in two.
 */
class CutRunner implements Runner {
  armed = true;
  cuts = 0;
  constructor(private readonly inner: Runner, private readonly match: RegExp, private readonly lines: number) {}
  async run(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): Promise<RunResult> {
    if (this.armed && cmd === 'ip' && args.includes('-batch') && this.match.test(opts.input ?? '')) {
      this.armed = false;
      this.cuts++;
      const head = (opts.input ?? '').split('\n').slice(0, this.lines).join('\n') + '\n';
      await this.inner.run(cmd, args, { ...opts, input: head, allowFail: true });
      const r = { stdout: '', stderr: 'RTNETLINK answers: injected failure', exitCode: 1 };
      if (!opts.allowFail) throw new TsbridgeError('KERNEL', { op: `${cmd} ${args.join(' ')}`, detail: r.stderr });
      return r;
    }
    return this.inner.run(cmd, args, opts);
  }
}

/** The real kernel layer in H over another runner. */
function kernelOver(lab: Lab, runner: Runner): Kernel {
  return { links: new IpLinks(runner, lab.sysfs), firewall: new NftFirewall(runner, lab.log), sysctl: new NetnsSysctl(runner) };
}

/** A LAN, a network on it (made through the driver), H's uplink as it was before. */
async function setup(opts: { held: boolean; generic?: Record<string, string>; docker?: boolean }) {
  const lab = await Lab.create(cleanup);
  if (opts.docker !== false) {
    // Docker's FORWARD DROP: bridged frames pass it (br_netfilter), only the forward shim lets them through
    await lab.dockerLikeFirewall('iptables');
    await lab.dockerLikeFirewall('ip6tables');
  }
  const lan = await buildLan(lab, { held: opts.held });
  const before = await interfaceState(lab, lan.uplink);
  const spec = lanSpec(lan, opts.generic ?? (opts.held ? MOVE : {}));
  await lab.driver.createNetwork(spec);
  return { lab, lan, before, net: labNetwork(spec, lan) };
}

async function tcpAndUdp(from: LabEndpoint['ns'], to: LabEndpoint['ns'], addr: string): Promise<void> {
  const rec = await startPeerRecorder(to, 7070);
  try {
    expect(await tcpFrom(from, addr, 7070)).toEqual({ reply: expect.stringMatching(/:\d+\n$/) });
    expect(await udpFrom(from, addr, 7070, 'hi')).toEqual({ reply: expect.stringMatching(/ hi$/) });
  } finally {
    await rec.stop();
  }
}

describe('a bare uplink', () => {
  test('containers on the LAN: they and the LAN hosts reach each other directly (IPv4 and IPv6, ping, TCP, UDP), through a Docker-like FORWARD DROP', async () => {
    const { lab, lan, net } = await setup({ held: false });
    const a = await lab.attach(net);
    const b = await lab.attach(net);
    expect(a.join.gateway).toBe(lan.gateway4);
    expect(a.join.gatewayIpv6).toBe(lan.gateway6);
    for (const addr of [lan.gateway4, lan.hostAddr, lan.gateway6, lan.hostAddr6, b.ipv4, b.ipv6!]) expect({ addr, ok: await reaches(a.ns, addr) }).toEqual({ addr, ok: true });
    expect(await reaches(lan.host, a.ipv4)).toBe(true);
    expect(await reaches(lan.router, a.ipv6!)).toBe(true);
    // the LAN host sees the container's own address: no NAT
    const rec = await startPeerRecorder(lan.host, 7070);
    try {
      expect(seenAs(await tcpFrom(a.ns, lan.hostAddr, 7070))).toBe(a.ipv4);
      expect(seenAs(await udpFrom(a.ns, lan.hostAddr6, 7070))).toBe(a.ipv6);
    } finally {
      await rec.stop();
    }
    await tcpAndUdp(lan.host, a.ns, a.ipv4);
    await tcpAndUdp(lan.router, a.ns, a.ipv6!);
    await tcpAndUdp(b.ns, a.ns, a.ipv4);
    // H holds no address on the LAN and routes nothing there; its other links are as they were
    expect(await lab.addresses(net.bridge)).toEqual([]);
    expect(await lab.ipH(['-4', 'route', 'show', 'dev', net.bridge])).toBe('');
    expect(await reaches(lab.host, lab.outAddr)).toBe(true);
    expect(await ping(lab.host, '127.0.0.1')).toBe(true);
    // the bridge: the uplink's MAC, the uplink its port; its own IPv6 off
    const br = await lab.linkDetails(net.bridge);
    expect(br.address).toBe((await lab.linkDetails(lan.uplink)).address);
    expect((await lab.linkDetails(lan.uplink)).master).toBe(net.bridge);
    expect(await lab.sysctl.get(`net.ipv6.conf.${net.bridge}.disable_ipv6`)).toBe('1');
  }, T);

  test('anti-spoofing: a container that takes another address or MAC gets nothing through; frames from the LAN are not checked', async () => {
    const { lab, lan, net } = await setup({ held: false });
    const a = await lab.attach(net);
    expect(await reaches(a.ns, lan.gateway4)).toBe(true);
    const C = (args: string[]) => sh('ip', ['-n', a.ns.name, ...args]);
    await C(['addr', 'flush', 'dev', a.ifname]);
    await C(['addr', 'add', `${lan.net4}.150/24`, 'dev', a.ifname]);
    await C(['route', 'replace', 'default', 'via', lan.gateway4]);
    expect(await ping(a.ns, lan.gateway4)).toBe(false);
    expect(await ping(a.ns, lan.hostAddr)).toBe(false);
    await C(['addr', 'flush', 'dev', a.ifname]);
    await C(['addr', 'add', `${a.ipv4}/24`, 'dev', a.ifname]);
    await C(['route', 'replace', 'default', 'via', lan.gateway4]);
    expect(await reaches(a.ns, lan.gateway4)).toBe(true);
    await C(['link', 'set', 'dev', a.ifname, 'address', '02:42:de:ad:be:ef']);
    await sh('ip', ['-n', lan.router.name, 'neigh', 'flush', 'all']);
    expect(await ping(a.ns, lan.gateway4)).toBe(false);
    // the LAN's own hosts use any address they like: not the bridge's business
    await sh('ip', ['-n', lan.host.name, 'addr', 'add', `${lan.net4}.21/24`, 'dev', 'eth0']);
    const b = await lab.attach(net);
    expect(await reaches(b.ns, `${lan.net4}.21`)).toBe(true);
  }, T);

  test('removal gives the uplink back as it was and leaves nothing; the LAN is untouched', async () => {
    const { lab, lan, net, before } = await setup({ held: false });
    const a = await lab.attach(net);
    await lab.driver.leave(net.id, a.id);
    await lab.driver.deleteEndpoint(net.id, a.id);
    await lab.driver.settle();
    await lab.driver.deleteNetwork(net.id);
    expect(await interfaceState(lab, lan.uplink)).toEqual(before);
    expect(await lab.tsbridgeLinks()).toEqual([]);
    expect((await lab.nftTables()).filter((t) => t.includes('tsbridge'))).toEqual([]);
    expect((await lab.iptablesRules()).filter((l) => l.includes('TSBRIDGE'))).toEqual([]);
  }, T);

  test('an uplink that is down comes back down; one holding addresses is refused without the option, H unchanged', async () => {
    const lab = await Lab.create(cleanup);
    const lan = await buildLan(lab, { held: true });
    const before = await interfaceState(lab, lan.uplink);
    const e = await lab.driver.createNetwork(lanSpec(lan)).catch((x: Error) => x);
    const message = (e as Error).message;
    expect(message).toMatch(new RegExp(`^invalid option io.tsbridge.uplink=${lan.uplink}: it holds address ${lan.net4}.10/24, address ${lan.net4}.11/24, address ${lan.net6}::10/64, route `));
    for (const r of [`route default via ${lan.gateway4}`, `route default via ${lan.gateway6} metric 1024`, `route 10.217.0.0/16 via ${lan.hostAddr} table 100`]) expect(message).toContain(r);
    expect(message).toContain('give -o io.tsbridge.uplink_move_addresses=true');
    expect(await interfaceState(lab, lan.uplink)).toEqual(before);
    expect(await lab.tsbridgeLinks()).toEqual([]);

    const lan2 = await buildLan(lab);
    await lab.ipH(['link', 'set', lan2.uplink, 'down']);
    const down = await interfaceState(lab, lan2.uplink);
    const spec = lanSpec(lan2);
    await lab.driver.createNetwork(spec);
    expect((await lab.linkDetails(lan2.uplink)).flags).toContain('UP');
    await lab.driver.deleteNetwork(spec.id);
    expect(await interfaceState(lab, lan2.uplink)).toEqual(down);
  }, T);
});

describe("moving H's addresses and default route", () => {
  test('they move to the bridge: H keeps its connectivity (LAN, default route, other links, loopback); containers and H reach each other; removal moves them back', async () => {
    const { lab, lan, net, before } = await setup({ held: true });
    // on the bridge now, the uplink holds none of them
    expect(await lab.addresses(net.bridge)).toEqual(expect.arrayContaining([`${lan.ownAddr}/24`, `${lan.net4}.11/24`, `${lan.ownAddr6}/64`]));
    expect((await lab.addresses(lan.uplink)).filter((a) => !a.startsWith('fe80:'))).toEqual([]);
    expect(await lab.ipH(['route', 'show', 'default'])).toContain(`via ${lan.gateway4} dev ${net.bridge}`);
    expect(await lab.ipH(['-6', 'route', 'show', 'default'])).toContain(`via ${lan.gateway6} dev ${net.bridge}`);
    expect(await lab.ipH(['route', 'show', 'table', '100'])).toContain(`10.217.0.0/16 via ${lan.hostAddr} dev ${net.bridge}`);
    expect(await lab.ipH(['route', 'show', '10.216.0.0/16'])).toContain(`dev ${net.bridge} proto static metric 50`);
    expect(await lab.sysctl.get(`net.ipv6.conf.${net.bridge}.accept_ra`)).toBe('0');
    // H's connectivity
    for (const addr of [lan.gateway4, lan.hostAddr, lan.gateway6, lan.hostAddr6, lab.outAddr, '127.0.0.1']) {
      expect({ addr, ok: await reaches(lab.host, addr) }).toEqual({ addr, ok: true });
    }
    await tcpAndUdp(lab.host, lan.host, lan.hostAddr);
    // the LAN still reaches H at its address, by the same MAC
    expect(await reaches(lan.host, lan.ownAddr)).toBe(true);
    const neigh = await sh('ip', ['-n', lan.host.name, 'neigh', 'show', lan.ownAddr]);
    expect(neigh).toContain((await lab.linkDetails(lan.uplink)).address);
    // containers, H and the LAN
    const a = await lab.attach(net);
    for (const addr of [lan.gateway4, lan.hostAddr, lan.ownAddr, lan.ownAddr6]) expect({ addr, ok: await reaches(a.ns, addr) }).toEqual({ addr, ok: true });
    expect(await reaches(lab.host, a.ipv4)).toBe(true);
    await tcpAndUdp(lan.host, a.ns, a.ipv4);

    await lab.driver.deleteNetwork(net.id);
    expect(await interfaceState(lab, lan.uplink)).toEqual(before);
    expect(await lab.tsbridgeLinks()).toEqual([]);
    for (const addr of [lan.gateway4, lan.hostAddr6, lab.outAddr]) expect({ addr, ok: await reaches(lab.host, addr) }).toEqual({ addr, ok: true });
  }, T);

  describe('a failure in the middle of the move gives H back as it was', () => {
    test.each([
      ['after the addresses reached the bridge, before the uplink is its port', /master/, 3],
      ['after the uplink became a port and the default route moved, before the other routes', /master/, 7],
      ['while the uplink lets go of its addresses', /addr del/, 1],
      ['at the firewall, after everything moved', null, 0],
    ])('%s', async (_what, match, lines) => {
      const lab = await Lab.create(cleanup);
      await lab.dockerLikeFirewall('iptables');
      const lan = await buildLan(lab, { held: true });
      const before = await interfaceState(lab, lan.uplink);
      const runner = new CutRunner(lab.runner, match ?? /^$/, lines);
      const kernel = kernelOver(lab, runner);
      if (!match) {
        kernel.firewall.apply = async () => {
          throw new TsbridgeError('KERNEL', { op: 'nft -f -', detail: 'injected failure' });
        };
      }
      const driver = new DriverService(lab.db, kernel, quietHostPorts, lab.log);
      expect(await driver.createNetwork(lanSpec(lan, MOVE)).then(() => 'made', (x: Error) => x.message)).toMatch(/failed: /);
      if (match) expect(runner.cuts).toBe(1);
      expect(await interfaceState(lab, lan.uplink)).toEqual(before);
      expect(await lab.tsbridgeLinks()).toEqual([]);
      expect(lab.db.state.networks).toEqual({});
      for (const addr of [lan.gateway4, lan.gateway6, lan.hostAddr]) expect({ addr, ok: await reaches(lab.host, addr) }).toEqual({ addr, ok: true });
    }, T);
  });

  test('a crash in the middle of the move (state says creating): start-up gives H back as it was', async () => {
    const lab = await Lab.create(cleanup);
    const lan = await buildLan(lab, { held: true });
    const before = await interfaceState(lab, lan.uplink);
    const spec = lanSpec(lan, MOVE);
    // what CreateNetwork saves before it touches anything …
    const net: Network = { ...spec, phase: 'creating' };
    net.adopted = (await uplinkKind.lifecycle!.beforeCreate!(net, { kernel: lab.kernel, log: lab.log }))!.adopted!;
    await lab.db.tx(async (s) => {
      s.networks[net.id] = net;
      await lab.db.save();
    });
    // … then the process dies in the middle of the move: the bridge holds the addresses and the
    // default route, the uplink is its port and still holds its addresses (no `addr del` yet)
    const plan = uplinkKind.network(net);
    await lab.kernel.links.ensureBridge(plan.bridge!);
    const cut = new CutRunner(lab.runner, /master/, 5);
    await new IpLinks(cut, lab.sysfs).adoptUplink(plan.uplinks![0]!).catch(() => undefined);
    expect(cut.cuts).toBe(1);
    expect(await interfaceState(lab, lan.uplink)).not.toEqual(before);
    const report = await lab.reconciler().startup();
    expect(report.networksDropped).toBe(1);
    expect(await interfaceState(lab, lan.uplink)).toEqual(before);
    expect(await lab.tsbridgeLinks()).toEqual([]);
    expect(lab.store.saved?.networks).toEqual({});
    expect(await reaches(lab.host, lan.gateway4)).toBe(true);
  }, T);

  test('reboot (plugin down, bridge gone, uplink left bare): start-up rebuilds the bridge, takes the uplink and moves the recorded addresses and routes again; containers work again', async () => {
    const { lab, lan, net } = await setup({ held: true });
    const a = await lab.attach(net);
    expect(await reaches(a.ns, lan.hostAddr)).toBe(true);
    const moved = await interfaceState(lab, net.bridge);
    await lab.ipH(['link', 'del', net.bridge]); // the host's addresses and routes go with it
    expect(await ping(lab.host, lan.gateway4)).toBe(false);
    const report = await new Reconciler(lab.db, lab.kernel, lab.log).startup();
    expect(report.networksRestored).toBe(1);
    expect(await interfaceState(lab, net.bridge)).toEqual(moved);
    expect((await lab.linkDetails(lan.uplink)).master).toBe(net.bridge);
    expect(await reaches(lab.host, lan.gateway4)).toBe(true);
    expect(await reaches(a.ns, lan.hostAddr)).toBe(true);
    await lab.driver.deleteNetwork(net.id);
  }, T);

  test('reboot with the uplink configured by the host again at boot: its addresses move to the rebuilt bridge once more', async () => {
    const { lab, lan, net, before } = await setup({ held: true });
    const moved = await interfaceState(lab, net.bridge);
    // the bridge gone, the uplink as the host's network configuration brings it up at boot
    await lab.ipH(['link', 'del', net.bridge]);
    await lab.ipH(['addr', 'add', `${lan.ownAddr}/24`, 'brd', '+', 'dev', lan.uplink]);
    await lab.ipH(['addr', 'add', `${lan.net4}.11/24`, 'dev', lan.uplink]);
    await lab.ipH(['-6', 'addr', 'add', `${lan.ownAddr6}/64`, 'dev', lan.uplink, 'nodad']);
    await lab.ipH(['route', 'add', 'default', 'via', lan.gateway4, 'dev', lan.uplink]);
    await lab.ipH(['-6', 'route', 'add', 'default', 'via', lan.gateway6, 'dev', lan.uplink]);
    await lab.ipH(['route', 'add', '10.216.0.0/16', 'via', lan.hostAddr, 'dev', lan.uplink, 'metric', '50', 'proto', 'static']);
    await lab.ipH(['route', 'add', '10.217.0.0/16', 'via', lan.hostAddr, 'dev', lan.uplink, 'table', '100']);
    expect(await interfaceState(lab, lan.uplink)).toEqual(before);
    await lab.reconciler().startup();
    expect(await interfaceState(lab, net.bridge)).toEqual(moved);
    expect((await lab.addresses(lan.uplink)).filter((x) => !x.startsWith('fe80:'))).toEqual([]);
    await lab.driver.deleteNetwork(net.id);
    expect(await interfaceState(lab, lan.uplink)).toEqual(before);
  }, T);
});
