/**
 * The operator's hook (docs/options.md, "Firewall and the operator's own rules"): a table of the
 * operator's own with base chains at priorities below tsbridge's. Its drops win; tsbridge never
 * reads, writes or deletes it — not when networks come and go, not at start-up, not when its own
 * tables disappear with the last network. In network namespaces (helpers/lab.ts), real packets.
 *
 * Needs: root, iproute2, nftables, iptables, conntrack, busybox and node.
 */
import { BASE_CHAINS } from '../../src/kernel/rules/nft.js';
import { Cleanup } from '../lib/cleanup.js';
import { listNetns, startPeerRecorder } from '../lib/netns.js';
import { parsePeerReply } from '../lib/probe.js';
import { requireRoot } from '../lib/run.js';
import { nftTable } from './helpers/isolation.js';
import { Lab, requireLabTools, tcpFrom } from './helpers/lab.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

beforeAll(async () => {
  requireRoot('test/integration/isolation-operator.test.ts');
  await requireLabTools();
});

afterAll(async () => {
  await cleanup.run();
  expect((await listNetns()).filter((n) => Lab.created.includes(n))).toEqual([]);
});

const T = 60_000;
const port = () => 20000 + Math.floor(Math.random() * 10000);

function seenAs(r: { reply?: string; error?: string }): string {
  if (r.reply === undefined) throw new Error(`no answer: ${r.error}`);
  return parsePeerReply(r.reply).address;
}

test('the documented priorities come before every tsbridge chain on their hook', () => {
  const first = (family: string, hook: string) => Math.min(...BASE_CHAINS.filter((c) => c.family === family && c.hook === hook).map((c) => c.priority));
  expect(-310).toBeLessThan(first('inet', 'prerouting')); // priority raw - 10
  expect(-10).toBeLessThan(first('inet', 'forward')); // priority filter - 10
  expect(-10).toBeLessThan(first('inet', 'input'));
  expect(-300).toBeLessThan(first('bridge', 'prerouting')); // bridge: priority dstnat
});

test("an operator's drops in its own table block a published port and container traffic; no tsbridge operation changes that table", async () => {
  const lab = await Lab.create(cleanup);
  await lab.dockerLikeFirewall();
  const net = await lab.network();
  const c1 = await lab.attach(net);
  await startPeerRecorder(c1.ns, 80);
  const world = await startPeerRecorder(lab.outside, 7070);
  const P = port();
  await lab.publish(c1, P);
  expect(seenAs(await tcpFrom(lab.outside, lab.hostAddr, P))).toBe(lab.outAddr);
  expect(seenAs(await tcpFrom(c1.ns, lab.outAddr, world.port))).toBe(lab.hostAddr);

  // The operator's table, as docs/options.md shows it. The accept is there to show it does not
  // open what tsbridge closes (an accept only ends its own chain: netfilter semantics).
  const operator = [
    'table inet operator {',
    '  chain before_nat {',
    '    type filter hook prerouting priority raw - 10; policy accept;',
    `    iifname "${lab.hostIf}" tcp dport ${P} drop`,
    '  }',
    '  chain before_forward {',
    '    type filter hook forward priority filter - 10; policy accept;',
    `    ip saddr ${net.net4}.0/24 ip daddr ${lab.outAddr} tcp dport ${world.port} drop`,
    `    ip daddr ${c1.ipv4} tcp dport 80 accept`,
    '  }',
    '}',
    '',
  ].join('\n');
  await lab.host.exec('nft', ['-f', '-'], { input: operator });
  const mine = await nftTable(lab.host, 'inet', 'operator');
  expect(mine).not.toBeNull();

  expect((await tcpFrom(lab.outside, lab.hostAddr, P, 1500)).reply).toBeUndefined();
  expect((await tcpFrom(c1.ns, lab.outAddr, world.port, 1500)).reply).toBeUndefined();
  expect((await tcpFrom(lab.outside, c1.ipv4, 80, 1500)).reply).toBeUndefined(); // still closed by tsbridge
  expect(world.peers).toHaveLength(1); // only the control above

  // every kind of tsbridge operation
  const other = await lab.network({ internal: true });
  const c2 = await lab.attach(other);
  const c3 = await lab.attach(net);
  await lab.publish(c3, port());
  await lab.driver.revokeExternalConnectivity(net.id, c3.id);
  await lab.reconciler().startup();
  await lab.reconciler().sweep();
  expect(await nftTable(lab.host, 'inet', 'operator')).toBe(mine);
  for (const [n, c] of [[other, c2], [net, c3], [net, c1]] as const) {
    await lab.driver.leave(n.id, c.id);
    await lab.driver.deleteEndpoint(n.id, c.id);
  }
  await lab.driver.deleteNetwork(other.id);
  await lab.driver.deleteNetwork(net.id);
  await lab.driver.settle();
  expect(await nftTable(lab.host, 'inet', 'tsbridge')).toBeNull(); // tsbridge's own tables went with the last network
  expect(await nftTable(lab.host, 'bridge', 'tsbridge')).toBeNull();
  expect(await nftTable(lab.host, 'inet', 'operator')).toBe(mine);
}, T);
