/**
 * Issue 10: the engine under test and its firewall layout. scripts/test.sh runs the e2e tier once
 * per engine (TSBRIDGE_ENGINE=20.10, then 28); this suite proves the tier really ran against that
 * engine, that tsbridge sits where it must in that engine's firewall layout (Docker 28: a
 * DOCKER-FORWARD chain after DOCKER-USER), and that IPv6 egress and published ports work under
 * the IPv6 FORWARD DROP policy Docker 28 sets when it turns IPv6 forwarding on itself. The other
 * suites (isolation, ports, network, …) prove the rest on each engine.
 *
 * Needs root, a running dockerd (scripts/docker-up.sh), the test image (scripts/test-image.sh).
 */
import { Cleanup } from '../lib/cleanup.js';
import { docker, removeContainers, removeNetworks, requireDocker, uniqueName, waitFor } from '../lib/docker.js';
import { createOutsideWorld, startPeerRecorder, type OutsideWorld, type PeerRecorder } from '../lib/netns.js';
import { startPlugin, type PluginHandle } from '../lib/plugin.js';
import { tcpRequest } from '../lib/probe.js';
import { sh } from '../lib/run.js';
import { ownerFor } from '../../src/kernel/owner.js';
import { httpPeer, PEER_REQUEST, peerServerScript, runIn, TEST_IMAGE } from './helpers.js';

const DRIVER = 'tsbt-engine';
const cleanup = new Cleanup();
let plugin: PluginHandle;
let world: OutsideWorld;
let recorder: PeerRecorder;
let version: string;

beforeAll(async () => {
  await requireDocker();
  version = await docker(['version', '--format', '{{.Server.Version}}']);
  plugin = await startPlugin({ name: DRIVER });
  cleanup.add(() => plugin.dispose(), 'plugin');
  world = await createOutsideWorld({ prefix: 'eng' });
  cleanup.add(() => world.delete(), 'outside world');
  recorder = await startPeerRecorder(world.ns, 7071);
  cleanup.add(() => recorder.stop(), 'recorder');
});

afterAll(async () => {
  await cleanup.run();
});

const major = () => Number(version.split('.')[0]);

test('the engine answering is the one this tier is named after', () => {
  const engine = process.env.TSBRIDGE_ENGINE;
  console.log(`e2e against Docker ${version} (TSBRIDGE_ENGINE=${engine ?? 'unset'})`);
  if (engine === '20.10') expect(version).toMatch(/^20\.10\./);
  else if (engine === '28') expect(version).toMatch(/^28\./);
  else expect(version).toMatch(/^\d+\.\d+/);
});

describe("tsbridge in the engine's firewall layout", () => {
  const net = uniqueName('fw');
  const c = new Cleanup();
  afterAll(() => c.run());

  test("FORWARD jumps to DOCKER-USER first; tsbridge's chain hangs off DOCKER-USER (and Docker 28's DOCKER-FORWARD follows)", async () => {
    c.add(() => removeNetworks([net]), net);
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.212.60.0/24', net]);
    const forward = (await sh('iptables', ['-S', 'FORWARD'])).split('\n').filter((l) => l.startsWith('-A '));
    expect(forward[0]).toBe('-A FORWARD -j DOCKER-USER');
    const user = (await sh('iptables', ['-S', 'DOCKER-USER'])).split('\n');
    expect(user).toContain(`-A DOCKER-USER -j ${ownerFor(DRIVER).forwardChain}`);
    if (major() >= 28) {
      expect(forward).toContain('-A FORWARD -j DOCKER-FORWARD');
      expect(forward.indexOf('-A FORWARD -j DOCKER-FORWARD')).toBeGreaterThan(0);
    } else {
      expect(forward).not.toContain('-A FORWARD -j DOCKER-FORWARD');
    }
  });
});

describe('IPv6 under an ip6tables FORWARD DROP policy (Docker 28 sets it when it turns IPv6 forwarding on itself)', () => {
  const net = uniqueName('v6');
  const srv = uniqueName('v6s');
  const port = 24600 + Math.floor(Math.random() * 300);
  const c = new Cleanup();
  let policyBefore = '';
  afterAll(() => c.run());

  test('a dual-stack container reaches the outside over IPv6, masqueraded, and its port published on an IPv6 host address answers', async () => {
    // Only where the IPv6 filter table exists (Docker 28 makes it): setting a policy would create
    // it otherwise, and without it nothing filters forwarded IPv6 at all.
    const hasFilter6 = (await sh('ip6tables-save', [])).split('\n').includes('*filter');
    if (hasFilter6) {
      policyBefore = (await sh('ip6tables', ['-S', 'FORWARD'])).split('\n')[0]!.split(' ')[2]!;
      c.add(() => sh('ip6tables', ['-P', 'FORWARD', policyBefore]), 'ip6tables FORWARD policy');
      await sh('ip6tables', ['-P', 'FORWARD', 'DROP']);
    } else {
      console.log('no IPv6 filter table on this host: nothing filters forwarded IPv6; testing without a DROP policy');
    }
    c.add(() => removeNetworks([net]), net);
    await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--ipv6', '--subnet', '10.212.61.0/24', '--subnet', 'fd5e:212:61::/64', net]);
    // Egress over IPv6, masqueraded to the host's address on the outside world's link.
    const out = await runIn(net, `echo hi | nc -w 3 ${world.nsAddr6} ${recorder.port}`);
    const peer = await recorder.waitForPeer((p) => p.proto === 'tcp' && p.address.includes(':'));
    expect(peer.address).toBe(world.hostAddr6);
    expect(out).toContain(world.hostAddr6);
    // A published port from the outside world, over IPv6.
    c.add(() => removeContainers([srv]), srv);
    await docker(['run', '-d', '--network', net, '--name', srv, '-p', `${port}:80`, TEST_IMAGE, 'sh', '-c', peerServerScript()]);
    const reply = await waitFor(
      async () => {
        const r = await world.ns.execOk('busybox', ['nc', '-w', '3', world.hostAddr6, String(port)], { input: PEER_REQUEST, timeoutMs: 10_000 });
        return httpPeer(r.stdout) ?? undefined;
      },
      15_000,
      { what: `[${world.hostAddr6}]:${port} from the outside world` },
    );
    expect(reply).toBe(world.nsAddr6);
    if (hasFilter6) expect((await sh('ip6tables', ['-S', 'FORWARD'])).split('\n')[0]).toBe('-P FORWARD DROP');
  });

  test('IPv4 from the host to that published port still answers', async () => {
    expect(httpPeer(await tcpRequest('127.0.0.1', port, PEER_REQUEST))).not.toBeNull();
  });
});
