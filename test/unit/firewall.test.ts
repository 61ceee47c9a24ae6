/**
 * NftFirewall's forward shim against canned `iptables-save` listings: what it reads, and the only
 * writes it makes — its chain and its one jump, never anything else.
 */
import { jest } from '@jest/globals';
import { endpointElements, firewallView } from '../../src/driver/realize.js';
import type { RunResult, Runner } from '../../src/kernel/real/exec.js';
import { NftFirewall } from '../../src/kernel/real/firewall.js';
import type { FirewallView } from '../../src/kernel/types.js';
import { KINDS } from '../../src/kinds/registry.js';
import { silentLogger } from '../../src/logging.js';
import type { Endpoint, Network } from '../../src/state/types.js';
import { emptyState } from '../../src/state/types.js';
import { networkSpec } from '../fakes/world.js';

/** Answers `iptables-save` / `ip6tables-save` from `saves`, everything else with success; records every call. */
class ScriptedRunner implements Runner {
  readonly calls: string[] = [];
  constructor(public saves: { v4: string; v6: string }) {}
  async run(cmd: string, args: string[], opts: { input?: string } = {}): Promise<RunResult> {
    this.calls.push([cmd, ...args].join(' ') + (opts.input ? `\n${opts.input}` : ''));
    if (cmd === 'iptables-save') return { stdout: this.saves.v4, stderr: '', exitCode: 0 };
    if (cmd === 'ip6tables-save') return { stdout: this.saves.v6, stderr: '', exitCode: 0 };
    return { stdout: '', stderr: '', exitCode: 0 };
  }
  writes(): string[] {
    return this.calls.filter((c) => !c.startsWith('iptables-save') && !c.startsWith('ip6tables-save') && !c.startsWith('nft '));
  }
}

const DOCKER = [
  '*filter',
  ':INPUT ACCEPT [0:0]',
  ':FORWARD DROP [0:0]',
  ':OUTPUT ACCEPT [0:0]',
  ':DOCKER-ISOLATION-STAGE-1 - [0:0]',
  ':DOCKER-ISOLATION-STAGE-2 - [0:0]',
  ':DOCKER-USER - [0:0]',
  '-A FORWARD -j DOCKER-USER',
  '-A DOCKER-USER -s 198.51.100.7/32 -j DROP',
  '-A DOCKER-USER -j RETURN',
  'COMMIT',
].join('\n');

const net: Network = { ...networkSpec({ id: 'aa01', bridge: 'tsb-a', ipv4: [{ subnet: '10.217.40.0/24', gateway: '10.217.40.1/24' }] }), phase: 'ready' };
const view: FirewallView = firewallView({ ...emptyState(), networks: { [net.id]: net } }, KINDS);
const ep: Endpoint = {
  id: 'e1', networkId: 'aa01', phase: 'ready', hostVeth: 'tsve1', peerVeth: 'tsce1', mac: '02:00:00:00:00:01',
  ipv4: '10.217.40.2/24', ipv6: null, joined: false, ports: [],
};

const elementsOf = (e: Endpoint) => endpointElements(e, net, KINDS);

function firewall(r: Runner): NftFirewall {
  return new NftFirewall(r, silentLogger());
}

describe('forward shim', () => {
  test("with Docker's chains: the chain through Docker's isolation, the jump after the operator's rule and before RETURN", async () => {
    const r = new ScriptedRunner({ v4: DOCKER, v6: '' });
    await firewall(r).apply(view);
    expect(r.writes()).toEqual([
      [
        'iptables-restore -w 5 --noflush',
        '*filter',
        ':TSBRIDGE-FORWARD - [0:0]',
        '-F TSBRIDGE-FORWARD',
        // fail closed: without tsbridge's nftables mark, nothing to or from the bridge passes
        '-A TSBRIDGE-FORWARD -o tsb-a -m mark ! --mark 0x1000000/0x1000000 -j DROP',
        '-A TSBRIDGE-FORWARD -i tsb-a -m mark ! --mark 0x1000000/0x1000000 -j DROP',
        '-A TSBRIDGE-FORWARD -o tsb-a -j ACCEPT',
        '-A TSBRIDGE-FORWARD -i tsb-a -m conntrack --ctstate DNAT -j ACCEPT',
        '-A TSBRIDGE-FORWARD -i tsb-a -j DOCKER-ISOLATION-STAGE-1',
        '-A TSBRIDGE-FORWARD -i tsb-a -j DOCKER-ISOLATION-STAGE-2',
        '-A TSBRIDGE-FORWARD -i tsb-a -j ACCEPT',
        'COMMIT',
        '',
      ].join('\n'),
      'iptables -w 5 -t filter -I DOCKER-USER 2 -j TSBRIDGE-FORWARD',
    ]);
  });

  test('a family without a filter table is left alone: nothing to get past, and no table created', async () => {
    const r = new ScriptedRunner({ v4: '', v6: '*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n' });
    await firewall(r).apply(view);
    expect(r.writes()).toEqual([]);
  });

  test('already in place: a refresh only reads', async () => {
    const placed = DOCKER.replace(':DOCKER-USER - [0:0]', ':DOCKER-USER - [0:0]\n:TSBRIDGE-FORWARD - [0:0]').replace(
      '-A DOCKER-USER -j RETURN',
      [
        '-A DOCKER-USER -j TSBRIDGE-FORWARD',
        '-A DOCKER-USER -j RETURN',
        '-A TSBRIDGE-FORWARD -o tsb-a -m mark ! --mark 0x1000000/0x1000000 -j DROP',
        '-A TSBRIDGE-FORWARD -i tsb-a -m mark ! --mark 0x1000000/0x1000000 -j DROP',
        '-A TSBRIDGE-FORWARD -o tsb-a -j ACCEPT',
        '-A TSBRIDGE-FORWARD -i tsb-a -m conntrack --ctstate DNAT -j ACCEPT',
        '-A TSBRIDGE-FORWARD -i tsb-a -j DOCKER-ISOLATION-STAGE-1',
        '-A TSBRIDGE-FORWARD -i tsb-a -j DOCKER-ISOLATION-STAGE-2',
        '-A TSBRIDGE-FORWARD -i tsb-a -j ACCEPT',
      ].join('\n'),
    );
    const r = new ScriptedRunner({ v4: placed, v6: '' });
    await firewall(r).refresh(view);
    expect(r.calls.filter((c) => !c.startsWith('nft -j list'))).toEqual(['iptables-save', 'ip6tables-save']);
  });

  test('a jump left in FORWARD (from before dockerd made DOCKER-USER) moves to DOCKER-USER', async () => {
    const before = DOCKER.replace('-A FORWARD -j DOCKER-USER', '-A FORWARD -j DOCKER-USER\n-A FORWARD -j TSBRIDGE-FORWARD');
    const r = new ScriptedRunner({ v4: before, v6: '' });
    await firewall(r).refresh(view);
    expect(r.writes().filter((w) => !w.includes('restore'))).toEqual([
      'iptables -w 5 -t filter -D FORWARD -j TSBRIDGE-FORWARD',
      'iptables -w 5 -t filter -I DOCKER-USER 2 -j TSBRIDGE-FORWARD',
    ]);
  });

  test('no network left: the jump and the chain go, nothing else', async () => {
    const placed = DOCKER.replace(':DOCKER-USER - [0:0]', ':DOCKER-USER - [0:0]\n:TSBRIDGE-FORWARD - [0:0]').replace(
      '-A DOCKER-USER -j RETURN',
      '-A DOCKER-USER -j TSBRIDGE-FORWARD\n-A DOCKER-USER -j RETURN\n-A TSBRIDGE-FORWARD -o tsb-a -j ACCEPT',
    );
    const r = new ScriptedRunner({ v4: placed, v6: '' });
    await firewall(r).apply(firewallView(emptyState(), KINDS));
    expect(r.writes()).toEqual([
      'iptables -w 5 -t filter -D DOCKER-USER -j TSBRIDGE-FORWARD',
      'iptables -w 5 -t filter -F TSBRIDGE-FORWARD',
      'iptables -w 5 -t filter -X TSBRIDGE-FORWARD',
    ]);
  });

  test("new endpoints re-check the shim until Docker's chains have been seen, then no more", async () => {
    const r = new ScriptedRunner({ v4: '', v6: '' });
    const fw = firewall(r);
    await fw.apply(view);
    r.calls.length = 0;
    await fw.addEndpoint(elementsOf(ep));
    expect(r.calls.filter((c) => c.includes('tables-save'))).toEqual(['iptables-save', 'ip6tables-save']); // dockerd not there yet
    r.saves.v4 = DOCKER; // dockerd started
    await fw.addEndpoint(elementsOf({ ...ep, id: 'e2', hostVeth: 'tsve2' }));
    expect(r.writes().some((w) => w.startsWith('iptables -w 5 -t filter -I DOCKER-USER'))).toBe(true);
    r.calls.length = 0;
    await fw.addEndpoint(elementsOf({ ...ep, id: 'e3', hostVeth: 'tsve3' }));
    await fw.removeEndpoint(elementsOf(ep));
    expect(r.calls.filter((c) => c.includes('tables'))).toEqual([]);
  });

  test("where Docker's chains never appear, endpoints re-check until five checks in a row found nothing changed, then once a second", async () => {
    const noDocker = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', 'COMMIT'].join('\n');
    const r = new ScriptedRunner({ v4: noDocker, v6: '' });
    let now = 1_000_000;
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => now);
    try {
      const fw = firewall(r);
      await fw.apply(view); // writes the shim: the next check finds it there
      r.saves.v4 = noDocker.replace(':OUTPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]\n:TSBRIDGE-FORWARD - [0:0]\n-A FORWARD -j TSBRIDGE-FORWARD');
      const checks = async (n: number) => {
        r.calls.length = 0;
        for (let i = 0; i < n; i++) await fw.addEndpoint(elementsOf({ ...ep, id: `e${i}`, hostVeth: `tsve${i}` }));
        return r.calls.filter((c) => c === 'iptables-save').length;
      };
      expect(await checks(6)).toBe(6); // the first finds the shim written, then five the same
      expect(await checks(3)).toBe(0); // within the same second
      now += 1000;
      expect(await checks(3)).toBe(1);
      r.saves.v4 = DOCKER; // dockerd came after all
      now += 1000;
      expect(await checks(1)).toBe(1);
      expect(r.writes().some((w) => w.startsWith('iptables -w 5 -t filter -I DOCKER-USER'))).toBe(true);
    } finally {
      clock.mockRestore();
    }
  });
});
