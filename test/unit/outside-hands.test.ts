/**
 * Outside hands on the firewall (issue 11), over the fakes: tsbridge's tables removed or altered
 * by another program — `nft flush ruleset`, its table deleted, a rule deleted, a map flushed —
 * are noticed by the next check (the sweep, or the nft monitor's trigger) and applied again in
 * full, each re-application counted with its reason; a forward shim someone removed is written
 * again and counted; the mark that makes forwarding fail closed is in both halves. The nft
 * monitor's reading of `nft monitor` output is tested line by line.
 */
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import type { ChildProcess } from 'node:child_process';
import { Reconciler } from '../../src/driver/reconcile.js';
import { firewallView } from '../../src/driver/realize.js';
import type { RunResult, Runner } from '../../src/kernel/real/exec.js';
import { NftFirewall } from '../../src/kernel/real/firewall.js';
import { NftMonitor, touchesOurs } from '../../src/kernel/real/nft-monitor.js';
import { forwardChainRules } from '../../src/kernel/rules/iptables.js';
import { fullRuleset, markLines } from '../../src/kernel/rules/nft.js';
import { KINDS } from '../../src/kinds/registry.js';
import { silentLogger } from '../../src/logging.js';
import { emptyState, type Network } from '../../src/state/types.js';
import { NftModel } from '../fakes/nft.js';
import { EP_1, EP_2, NET_A, NET_B, endpointSpec, makeWorld, networkSpec, portReq, rulesOf, type World } from '../fakes/world.js';

let w: World;
let rec: Reconciler;
beforeEach(async () => {
  w = makeWorld();
  rec = new Reconciler(w.db, w.kernel, silentLogger(), w.runtime);
  await w.driver.createNetwork(networkSpec({ icc: false }));
  await w.driver.createNetwork(networkSpec({ id: NET_B, bridge: 'tsb-bbbb0000000', ipv4: [{ subnet: '10.20.0.0/24', gateway: '10.20.0.1/24' }] }));
  await w.driver.createEndpoint(endpointSpec());
  await w.driver.join(NET_A, EP_1);
  await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8080)]);
  await w.driver.createEndpoint(endpointSpec({ networkId: NET_B, endpointId: EP_2, ipv4: '10.20.0.2/24' }));
});

const T = 'inet tsbridge';

describe('the check puts everything back, and counts why', () => {
  test.each([
    ['nft flush ruleset', () => w.kernel.nft.apply('flush ruleset\n'), 'table_missing'],
    ["deleting tsbridge's inet table", () => w.kernel.nft.apply('delete table inet tsbridge\n'), 'table_missing'],
    ["deleting tsbridge's bridge table (anti-spoofing)", () => w.kernel.nft.apply('delete table bridge tsbridge\n'), 'table_missing'],
    ["Debian's nftables.service: flush ruleset, then its own table", () => w.kernel.nft.apply('flush ruleset\ntable inet filter {\n}\n'), 'table_missing'],
    ['a rule deleted from the forward chain (isolation)', () => w.kernel.nft.deleteRule(T, 'forward', 4), 'chain_altered'],
    ['the 127.0.0.0/8 guard deleted', () => w.kernel.nft.deleteRule(T, 'localnet', 0), 'chain_altered'],
    ['the published-port map flushed', () => w.kernel.nft.flushSet(T, 'ports4'), 'elements_altered'],
    ['anti-spoofing elements flushed', () => w.kernel.nft.flushSet('bridge tsbridge', 'addr4'), 'elements_altered'],
  ])('%s: the sweep applies the full ruleset again (%s)', async (_what, act, reason) => {
    const ours = () => Object.fromEntries(Object.entries(w.kernel.nft.dump()).filter(([k]) => k.endsWith(' tsbridge')));
    const want = ours();
    expect(want).toEqual(rulesOf(w.db.state));
    act();
    expect(ours()).not.toEqual(want);
    await rec.sweep();
    expect(ours()).toEqual(want);
    expect(w.kernel.reapplied).toEqual([reason]);
    expect(w.kernel.nftFirewall.reapplied[reason as 'table_missing']).toBe(1);
    // and the next check finds nothing to do
    await rec.checkFirewall();
    expect(w.kernel.reapplied).toEqual([reason]);
  });

  test('nothing touched: a check reads and writes nothing, counts nothing', async () => {
    const before = w.kernel.nft.applied.length;
    await rec.sweep();
    await rec.checkFirewall();
    expect(w.kernel.nft.applied.length).toBe(before);
    expect(w.kernel.reapplied).toEqual([]);
  });

  test("tsbridge's own changes (endpoints, ports, networks) are not outside changes", async () => {
    await w.driver.programExternalConnectivity(NET_A, EP_1, [portReq(80, 8081)]);
    await w.driver.deleteEndpoint(NET_B, EP_2);
    await w.driver.deleteNetwork(NET_B);
    await rec.checkFirewall();
    expect(w.kernel.reapplied).toEqual([]);
  });
});

describe('fail-closed marks', () => {
  test('the forward chain marks traffic to and from the shimmed interfaces first; forward_done clears the bit after iptables', () => {
    const script = fullRuleset(firewallView(w.db.state, KINDS));
    expect(script).toContain(
      [
        '  chain forward {',
        '    type filter hook forward priority filter - 1; policy accept;',
        '    iifname { "tsb-aaaa0000000", "tsb-bbbb0000000" } meta mark set meta mark | 0x01000000',
        '    oifname { "tsb-aaaa0000000", "tsb-bbbb0000000" } meta mark set meta mark | 0x01000000',
      ].join('\n'),
    );
    expect(script).toContain(
      [
        '  chain forward_done {',
        '    type filter hook forward priority filter + 1; policy accept;',
        '    iifname { "tsb-aaaa0000000", "tsb-bbbb0000000" } meta mark set meta mark & 0xfeffffff',
        '    oifname { "tsb-aaaa0000000", "tsb-bbbb0000000" } meta mark set meta mark & 0xfeffffff',
        '  }',
      ].join('\n'),
    );
    expect(fullRuleset(firewallView(w.db.state, KINDS), 'tsbridge', 0x10)).toContain('meta mark set meta mark | 0x00000010');
  });

  test('an iptables wildcard interface becomes nft\'s', () => {
    expect(markLines(['tsv+', 'br0'], 0x1000000).set).toEqual([
      'iifname { "br0" } meta mark set meta mark | 0x01000000',
      'oifname { "br0" } meta mark set meta mark | 0x01000000',
      'iifname "tsv*" meta mark set meta mark | 0x01000000',
      'oifname "tsv*" meta mark set meta mark | 0x01000000',
    ]);
  });

  test('the shim drops what is not marked before it accepts anything, for internal networks too', () => {
    expect(forwardChainRules([{ name: 'tsb-a', internal: false }, { name: 'tsb-i', internal: true }], 'TSBRIDGE-FORWARD', [], 0x1000000)).toEqual([
      '-A TSBRIDGE-FORWARD -o tsb-a -m mark ! --mark 0x1000000/0x1000000 -j DROP',
      '-A TSBRIDGE-FORWARD -i tsb-a -m mark ! --mark 0x1000000/0x1000000 -j DROP',
      '-A TSBRIDGE-FORWARD -o tsb-a -j ACCEPT',
      '-A TSBRIDGE-FORWARD -i tsb-a -j ACCEPT',
      '-A TSBRIDGE-FORWARD -o tsb-i -m mark ! --mark 0x1000000/0x1000000 -j DROP',
      '-A TSBRIDGE-FORWARD -i tsb-i -m mark ! --mark 0x1000000/0x1000000 -j DROP',
      '-A TSBRIDGE-FORWARD -i tsb-i -o tsb-i -j ACCEPT',
    ]);
  });
});

describe('the forward shim removed by someone else', () => {
  /** iptables as a tiny model: `iptables-save` prints it; restores and jumps change it. */
  class IptablesRunner implements Runner {
    chain: string[] | null = null;
    jump = false;
    /** Docker's `-A FORWARD -j DOCKER-USER`. */
    dockerJump = true;
    /** Our jump first in FORWARD. */
    forwardJump = false;
    readonly nft = new NftModel();
    async run(cmd: string, args: string[], opts: { input?: string } = {}): Promise<RunResult> {
      const ok = (stdout = ''): RunResult => ({ stdout, stderr: '', exitCode: 0 });
      if (cmd === 'nft' && args[0] === '-f') {
        this.nft.apply(opts.input!);
        return ok();
      }
      if (cmd === 'nft' && args[0] === '-j') return ok(this.nft.listJson(args[3]!, args[4]!)!);
      if (cmd === 'iptables-save') {
        const L = ['*filter', ':FORWARD DROP [0:0]', ':DOCKER-USER - [0:0]', ...(this.chain ? [':TSBRIDGE-FORWARD - [0:0]'] : [])];
        if (this.forwardJump) L.push('-A FORWARD -j TSBRIDGE-FORWARD');
        if (this.dockerJump) L.push('-A FORWARD -j DOCKER-USER');
        if (this.jump) L.push('-A DOCKER-USER -j TSBRIDGE-FORWARD');
        L.push('-A DOCKER-USER -j RETURN', ...(this.chain ?? []), 'COMMIT');
        return ok(L.join('\n'));
      }
      if (cmd === 'iptables-restore') {
        this.chain = opts.input!.split('\n').filter((l) => l.startsWith('-A '));
        return ok();
      }
      if (cmd === 'iptables' && args.includes('-I')) {
        if (args.includes('FORWARD')) this.forwardJump = true;
        else this.jump = true;
        return ok();
      }
      if (cmd === 'iptables' && args.includes('-D')) {
        if (args.includes('FORWARD')) this.forwardJump = false;
        else this.jump = false;
        return ok();
      }
      return ok();
    }
  }

  const net: Network = { ...networkSpec({ id: NET_A }), phase: 'ready' };
  const view = firewallView({ ...emptyState(), networks: { [NET_A]: net } }, KINDS);

  test.each([
    ['iptables -F (chain and jump flushed, the DROP policy stays)', (r: IptablesRunner) => ((r.chain = []), (r.jump = false))],
    ['iptables -F DOCKER-USER (the jump gone)', (r: IptablesRunner) => (r.jump = false)],
    ['iptables -X after -F (the chain gone)', (r: IptablesRunner) => ((r.chain = null), (r.jump = false))],
    ["iptables -F with Docker's FORWARD jump to DOCKER-USER gone too: the jump goes first in FORWARD", (r: IptablesRunner) => ((r.chain = []), (r.jump = false), (r.dockerJump = false))],
  ])('%s: written again by the next check, counted as shim_missing', async (_what, act) => {
    const r = new IptablesRunner();
    const reasons: string[] = [];
    const fw = new NftFirewall(r, silentLogger(), { v4: 'iptables', v6: 'ip6tables-absent' }, undefined, { onReapply: (x) => reasons.push(x) });
    await fw.apply(view); // first written: dockerd's boot order, not an outside change
    const written = { chain: r.chain, jump: r.jump };
    expect(reasons).toEqual([]);
    act(r);
    await fw.refresh(view);
    expect(r.chain).toEqual(written.chain);
    // reachable: from DOCKER-USER while FORWARD leads there, else first in FORWARD
    expect(r.dockerJump ? r.jump : r.forwardJump).toBe(true);
    expect(reasons).toEqual(['shim_missing']);
  });

  // Docker 20.10, after every network it creates: `iptables -D FORWARD -j DOCKER-USER`, then
  // `iptables -I FORWARD -j DOCKER-USER`. The monitor's check can come between the two.
  test("Docker's jump to DOCKER-USER away for a moment (deleted and inserted again): tsbridge's jump stays in DOCKER-USER", async () => {
    const r = new IptablesRunner();
    const waits: number[] = [];
    const sleep = async (ms: number) => {
      waits.push(ms);
      if (waits.length === 3) r.dockerJump = true; // Docker's second command
    };
    const reasons: string[] = [];
    const fw = new NftFirewall(r, silentLogger(), { v4: 'iptables', v6: 'ip6tables-absent' }, undefined, { onReapply: (x) => reasons.push(x), sleep });
    await fw.apply(view);
    expect(r.jump).toBe(true);
    r.dockerJump = false; // Docker's first command
    await fw.refresh(view);
    expect({ jump: r.jump, forwardJump: r.forwardJump, reasons }).toEqual({ jump: true, forwardJump: false, reasons: [] });
    expect(waits.length).toBe(3);
  });

  test("Docker's jump to DOCKER-USER gone for longer than the grace (iptables -F FORWARD): tsbridge's jump moves first into FORWARD", async () => {
    const r = new IptablesRunner();
    let waited = 0;
    const fw = new NftFirewall(r, silentLogger(), { v4: 'iptables', v6: 'ip6tables-absent' }, undefined, { userJumpGraceMs: 500, sleep: async (ms) => void (waited += ms) });
    await fw.apply(view);
    r.dockerJump = false;
    await fw.refresh(view);
    expect({ jump: r.jump, forwardJump: r.forwardJump }).toEqual({ jump: false, forwardJump: true });
    expect(waited).toBe(500);
    waited = 0;
    await fw.refresh(view); // in FORWARD now: nothing to wait for
    expect(waited).toBe(0);
  });
});

describe('nft monitor', () => {
  test.each([
    ['delete table inet tsbridge', true],
    ['delete table bridge tsbridge', true],
    ['delete rule inet tsbridge forward handle 12', true],
    ['delete chain inet tsbridge localnet', true],
    ['delete set inet tsbridge ports4', true],
    ['flush set inet tsbridge ports4', true],
    ['flush ruleset', true],
    ['delete rule ip filter DOCKER-USER handle 7', true],
    ['delete rule ip6 filter FORWARD handle 3', true],
    ['delete rule ip filter TSBRIDGE-FORWARD handle 9', true],
    ['delete chain ip filter TSBRIDGE-FORWARD', true],
    ['delete table ip filter', true],
    ['delete element inet tsbridge ports4 { tcp . 8080 : 10.10.0.2 . 80 }', false],
    ['add element inet tsbridge ports4 { tcp . 8080 : 10.10.0.2 . 80 }', false],
    ['add table inet tsbridge', false],
    ['delete rule ip filter DOCKER handle 31', false],
    ['delete table inet tsbridge_other', false],
    ['delete rule ip nat DOCKER handle 4', false],
  ])('%s → %s', (line, yes) => {
    expect(touchesOurs(line, 'tsbridge', 'TSBRIDGE-FORWARD')).toBe(yes);
  });

  /** A fake `nft monitor` process: its stdout is ours to write. */
  function fakeChild(): ChildProcess & { stdout: PassThrough } {
    const c = new EventEmitter() as ChildProcess & { stdout: PassThrough };
    Object.assign(c, { stdout: new PassThrough(), exitCode: null, kill: () => ((c as { exitCode: number | null }).exitCode = 0, c.emit('exit', 0, null), true) });
    return c;
  }

  test("one check per transaction that touched tsbridge's rules, when its generation line arrives; none for the others", async () => {
    const child = fakeChild();
    const calls: string[] = [];
    const m = new NftMonitor({ table: 'tsbridge', forwardChain: 'TSBRIDGE-FORWARD', log: silentLogger(), onChange: (why) => calls.push(why), spawn: () => child });
    m.start();
    child.stdout.write('add element inet tsbridge ports4 { tcp . 1 : 10.0.0.2 . 1 }\n# new generation 7 by process 11 (nft)\n');
    child.stdout.write('delete rule inet tsbridge forward handle 5\ndelete chain inet tsbridge forward\ndelete table inet tsbridge\ndelete table bridge tsbridge\n');
    await new Promise((r) => setTimeout(r, 5));
    expect(calls).toEqual([]); // the transaction is not over yet
    child.stdout.write('# new generation 8 by process 12 (nft)\n');
    await new Promise((r) => setTimeout(r, 5));
    expect(calls).toEqual(['delete rule inet tsbridge forward handle 5']);
    await m.stop();
  });

  test('without a generation line (an older nft), it fires a moment after the last event', async () => {
    const child = fakeChild();
    const calls: string[] = [];
    const m = new NftMonitor({ table: 'tsbridge', forwardChain: 'TSBRIDGE-FORWARD', log: silentLogger(), onChange: (why) => calls.push(why), spawn: () => child, settleMs: 10 });
    m.start();
    child.stdout.write('flush ruleset\n');
    await new Promise((r) => setTimeout(r, 40));
    expect(calls).toEqual(['flush ruleset']);
    await m.stop();
  });

  test('a monitor that exits is started again', async () => {
    const children = [fakeChild(), fakeChild()];
    let n = 0;
    const m = new NftMonitor({ table: 'tsbridge', forwardChain: 'X', log: silentLogger(), onChange: () => undefined, spawn: () => children[n++]!, restartMs: 5 });
    m.start();
    children[0]!.emit('exit', 1, null);
    await new Promise((r) => setTimeout(r, 30));
    expect(n).toBe(2);
    await m.stop();
  });
});
