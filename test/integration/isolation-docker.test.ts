/**
 * tsbridge next to Docker's own bridge networking, in network namespaces (helpers/lab.ts): H holds
 * what dockerd 20.10 builds for one bridge network (helpers/isolation.ts: FORWARD DROP,
 * DOCKER-USER, the isolation chains, a published port), in the nft or the legacy iptables variant.
 *
 * Proved with real packets, in both variants: the variant is detected; tsbridge's traffic passes
 * Docker's DROP policy; a tsbridge container and a Docker container cannot reach each other
 * either way, but each reaches the other's published ports through a host address; the firewall
 * outside tsbridge's tables and chain is byte for byte what it was — while networks exist except
 * for the one jump, and exactly once the last network is gone.
 *
 * Needs: root, iproute2, nftables, iptables (both variants), conntrack, busybox and node.
 */
import { NftFirewall } from '../../src/kernel/real/firewall.js';
import { detectIptables } from '../../src/kernel/real/iptables-variant.js';
import { ownerFor } from '../../src/kernel/owner.js';
import { Cleanup } from '../lib/cleanup.js';
import { listNetns, startPeerRecorder } from '../lib/netns.js';
import { parsePeerReply } from '../lib/probe.js';
import { requireRoot } from '../lib/run.js';
import { dockerLike, firewallOf, withoutOwn } from './helpers/isolation.js';
import { Lab, haveBinary, ping, reaches, requireLabTools, tcpFrom } from './helpers/lab.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

beforeAll(async () => {
  requireRoot('test/integration/isolation-docker.test.ts');
  await requireLabTools();
  for (const b of ['iptables-nft', 'iptables-legacy', 'ip6tables-legacy']) {
    if (!(await haveBinary(b))) throw new Error(`${b} is missing: both iptables variants are needed (apt-get install iptables)`);
  }
});

afterAll(async () => {
  await cleanup.run();
  expect((await listNetns()).filter((n) => Lab.created.includes(n))).toEqual([]);
});

const T = 60_000;
const OWNER = ownerFor('tsbridge'); // the lab's instance
const port = () => 20000 + Math.floor(Math.random() * 10000);

function seenAs(r: { reply?: string; error?: string }): string {
  if (r.reply === undefined) throw new Error(`no answer: ${r.error}`);
  return parsePeerReply(r.reply).address;
}

/** The lab's driver, with the forward shim on the commands detection picked. */
async function detectInto(lab: Lab): Promise<Awaited<ReturnType<typeof detectIptables>>> {
  const choice = await detectIptables(lab.runner, 'auto');
  lab.kernel.firewall = new NftFirewall(lab.runner, lab.log, { v4: choice.v4, v6: choice.v6 });
  return choice;
}

describe.each(['nft', 'legacy'] as const)("next to Docker's bridge networking in iptables-%s", (variant) => {
  test('detected; traffic flows past FORWARD DROP; isolated from Docker both ways; published ports across; the rest of the firewall untouched', async () => {
    const lab = await Lab.create(cleanup);
    const dockerPort = port();
    const dk = await dockerLike(lab, cleanup, variant, { publish: dockerPort });
    const base = await firewallOf(lab.host);

    const choice = await detectInto(lab);
    expect(choice).toMatchObject({ variant, v4: `iptables-${variant}`, v6: `ip6tables-${variant}` });
    expect(choice.why).toContain(`Docker's chains are in iptables-${variant}`);

    const net = await lab.network();
    const [c1, c2] = [await lab.attach(net), await lab.attach(net)];
    const world = await startPeerRecorder(lab.outside, 7070);
    await startPeerRecorder(dk.ns, 80);
    await startPeerRecorder(c1.ns, 80);
    const P = port();
    await lab.publish(c1, P);

    // tsbridge's traffic passes Docker's DROP policy; Docker's own still works (the neighbour is real)
    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);
    expect(seenAs(await tcpFrom(c1.ns, lab.outAddr, world.port))).toBe(lab.hostAddr);
    expect(seenAs(await tcpFrom(dk.ns, lab.outAddr, world.port))).toBe(lab.hostAddr);
    expect(seenAs(await tcpFrom(lab.outside, lab.hostAddr, P))).toBe(lab.outAddr);
    expect(seenAs(await tcpFrom(lab.outside, lab.hostAddr, dockerPort))).toBe(lab.outAddr);

    // isolated both ways, ICMP and TCP
    expect(await ping(c1.ns, dk.addr)).toBe(false);
    expect((await tcpFrom(c1.ns, dk.addr, 80, 1500)).reply).toBeUndefined();
    expect(await ping(dk.ns, c1.ipv4)).toBe(false);
    expect((await tcpFrom(dk.ns, c1.ipv4, 80, 1500)).reply).toBeUndefined();

    // each side's published ports, through a host address, as between Docker's or tsbridge's own networks
    expect(seenAs(await tcpFrom(c1.ns, lab.hostAddr, dockerPort))).toBe(dk.gateway); // masqueraded out of tsbridge's network
    expect(seenAs(await tcpFrom(dk.ns, lab.hostAddr, P))).toBe(net.gateway4); // masqueraded by Docker's rule

    // While the network exists: everything but tsbridge's tables, its chain and its one jump is as
    // it was. One jump: H has no IPv6 filter table (nothing filters IPv6 forwarding), and tsbridge
    // does not create one.
    const during = withoutOwn(await firewallOf(lab.host), OWNER);
    expect(during.rest).toEqual(base);
    const chain = OWNER.forwardChain;
    const expected = [`iptables-${variant}-save: -A DOCKER-USER -j ${chain}`];
    if (variant === 'nft') expected.push(`nft: counter packets 0 bytes 0 jump ${chain}`); // iptables-nft's rule seen by nft
    expect(during.jumps.sort()).toEqual(expected.sort());

    // control: it is the jump to Docker's isolation chain that keeps tsbridge's container out
    const v4 = choice.v4;
    await lab.host.exec(v4, ['-w', '5', '-D', chain, '-i', net.bridge, '-j', 'DOCKER-ISOLATION-STAGE-2']);
    expect(await reaches(c1.ns, dk.addr)).toBe(true);
    await lab.reconciler().sweep(); // the periodic refresh puts the rule back
    expect(await ping(c1.ns, dk.addr)).toBe(false);

    for (const c of [c1, c2]) {
      await lab.driver.revokeExternalConnectivity(net.id, c.id);
      await lab.driver.leave(net.id, c.id);
      await lab.driver.deleteEndpoint(net.id, c.id);
    }
    await lab.driver.deleteNetwork(net.id);
    await lab.driver.settle();
    // nothing of tsbridge is left, and nothing else changed: compared without any filtering
    expect(await firewallOf(lab.host)).toEqual(base);
  }, T);
});

describe('boot order', () => {
  test("dockerd makes its chains after tsbridge started: the next endpoint (or sweep) hooks the shim into them", async () => {
    const lab = await Lab.create(cleanup);
    lab.kernel.firewall = new NftFirewall(lab.runner, lab.log, { v4: 'iptables-nft', v6: 'ip6tables-nft' });
    const net = await lab.network();
    const [c1, c2] = [await lab.attach(net), await lab.attach(net)];
    const chain = OWNER.forwardChain;
    // no filter table yet: nothing filters forwarding, and tsbridge does not create one
    expect(await lab.host.exec('iptables-nft-save', [])).toBe('');
    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);

    const dk = await dockerLike(lab, cleanup, 'nft'); // "dockerd starts": FORWARD DROP, its chains
    expect(await ping(c1.ns, c2.ipv4)).toBe(false); // the window, until tsbridge looks again

    const c3 = await lab.attach(net); // dockerd (re)starting a container on the network
    const rules = await lab.iptablesRules('iptables-nft');
    expect(rules.filter((r) => r.endsWith(`-j ${chain}`))).toEqual([`-A DOCKER-USER -j ${chain}`]);
    expect(rules.filter((r) => r.startsWith('-A DOCKER-USER'))).toEqual([`-A DOCKER-USER -j ${chain}`, '-A DOCKER-USER -j RETURN']);
    expect(rules).toEqual(expect.arrayContaining([`-A ${chain} -i ${net.bridge} -j DOCKER-ISOLATION-STAGE-2`]));
    expect(await reaches(c1.ns, c2.ipv4)).toBe(true);
    expect(await reaches(c3.ns, c1.ipv4)).toBe(true);
    expect(await ping(c1.ns, dk.addr)).toBe(false);

    // Docker's chains seen: endpoints stop re-checking, and a sweep with nothing changed only reads
    let before = lab.runner.log.length;
    await lab.attach(net);
    expect(lab.runner.log.slice(before).filter((c) => c.cmd.includes('tables'))).toEqual([]);
    before = lab.runner.log.length;
    await lab.reconciler().sweep();
    const firewallCommands = lab.runner.log.slice(before).filter((c) => c.cmd !== 'ip');
    // only reads: tsbridge's two tables (are they as applied?) and both filter tables
    expect(firewallCommands.map((c) => `${c.cmd} ${c.args.join(' ')}`)).toEqual([
      'nft -j list table inet tsbridge',
      'nft -j list table bridge tsbridge',
      'iptables-nft-save ',
      'ip6tables-nft-save ',
    ]);
  }, T);
});

describe("DOCKER-USER: an operator's rules there come before tsbridge's accept", () => {
  test('whichever was added first, and across the jump being removed and added again', async () => {
    const lab = await Lab.create(cleanup);
    await dockerLike(lab, cleanup, 'nft');
    lab.kernel.firewall = new NftFirewall(lab.runner, lab.log, { v4: 'iptables-nft', v6: 'ip6tables-nft' });
    // as Docker documents: insert at the top of DOCKER-USER; here, nothing from the outside link
    const operatorRule = ['-i', lab.hostIf, '-j', 'DROP'];
    await lab.host.exec('iptables-nft', ['-w', '5', '-I', 'DOCKER-USER', ...operatorRule]);

    for (let round = 0; round < 2; round++) {
      const net = await lab.network();
      const c1 = await lab.attach(net);
      await startPeerRecorder(c1.ns, 80);
      const P = port();
      await lab.publish(c1, P);
      const userChain = (await lab.iptablesRules('iptables-nft')).filter((r) => r.startsWith('-A DOCKER-USER'));
      expect(userChain).toEqual([`-A DOCKER-USER -i ${lab.hostIf} -j DROP`, `-A DOCKER-USER -j ${OWNER.forwardChain}`, '-A DOCKER-USER -j RETURN']);
      expect((await tcpFrom(lab.outside, lab.hostAddr, P, 1500)).reply).toBeUndefined();

      // control: without the operator's rule the port answers
      await lab.host.exec('iptables-nft', ['-w', '5', '-D', 'DOCKER-USER', ...operatorRule]);
      expect(seenAs(await tcpFrom(lab.outside, lab.hostAddr, P))).toBe(lab.outAddr);
      await lab.host.exec('iptables-nft', ['-w', '5', '-I', 'DOCKER-USER', ...operatorRule]);

      await lab.driver.deleteEndpoint(net.id, c1.id);
      await lab.driver.deleteNetwork(net.id); // the jump goes; the next round adds it again
      await lab.driver.settle();
      expect((await lab.iptablesRules('iptables-nft')).filter((r) => r.startsWith('-A DOCKER-USER'))).toEqual([
        `-A DOCKER-USER -i ${lab.hostIf} -j DROP`,
        '-A DOCKER-USER -j RETURN',
      ]);
    }
  }, T);
});
