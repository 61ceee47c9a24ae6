import type { Logger } from '../../logging.js';
import type { EndpointRecord, NetworkRecord } from '../../state/types.js';
import { endpointDelta, fullRuleset, type FirewallView } from '../rules/nft.js';
import { forwardChainRestore } from '../rules/iptables.js';
import { DEFAULT_INSTANCE, ownerFor, type Owner } from '../owner.js';
import type { Firewall } from '../types.js';
import type { Runner } from './exec.js';

/**
 * nftables for everything tsbridge decides; iptables (whichever variant the
 * host's `iptables` is, the same one Docker uses) only for the accept shim
 * that gets tsbridge's traffic past a DROP policy on FORWARD.
 */
export class NftFirewall implements Firewall {
  constructor(
    private readonly runner: Runner,
    private readonly log: Logger,
    private readonly iptables: { v4: string; v6: string } = { v4: 'iptables', v6: 'ip6tables' },
    private readonly owner: Owner = ownerFor(DEFAULT_INSTANCE),
  ) {}

  async applyAll(view: FirewallView): Promise<void> {
    await this.runner.run('nft', ['-f', '-'], { input: fullRuleset(view, this.owner.table) });
    const live = view.networks.filter((n) => n.phase !== 'deleting');
    const bridges = live.map((n) => ({ name: n.bridge, internal: n.internal }));
    for (const bin of [this.iptables.v4, this.iptables.v6]) {
      await this.applyShim(bin, bridges);
    }
  }

  async applyEndpoint(ep: EndpointRecord, net: NetworkRecord, op: 'add' | 'delete'): Promise<void> {
    const script = endpointDelta(ep, net, op, this.owner.table);
    if (script) await this.runner.run('nft', ['-f', '-'], { input: script });
  }

  /**
   * Forgets the conntrack entries of these UDP/SCTP host ports, so a flow that started before a
   * port was (re)published — towards the host itself, or towards a container since replaced —
   * is not kept going where it went. TCP needs nothing: a new connection is a new entry.
   * One `conntrack -L` per protocol finds which ports have entries at all (usually none), and
   * only those get a `conntrack -D` per family: the cost does not grow with the number of ports.
   */
  async flushConntrack(entries: { proto: 'udp' | 'sctp' | 'tcp'; hostPort: number }[]): Promise<void> {
    const byProto = new Map<string, Set<number>>();
    for (const e of entries) {
      if (e.proto === 'tcp') continue;
      byProto.set(e.proto, (byProto.get(e.proto) ?? new Set()).add(e.hostPort));
    }
    for (const [proto, ports] of byProto) {
      // Without -f, -L lists both families. Exit 1 with nothing listed is fine.
      const listed = await this.runner.run('conntrack', ['-L', '-p', proto], { allowFail: true });
      const stale = conntrackDestPorts(listed.stdout, proto).filter((p) => ports.has(p));
      for (const port of stale) {
        for (const fam of ['ipv4', 'ipv6']) {
          // conntrack exits 1 when nothing matched: that is success here.
          await this.runner.run('conntrack', ['-D', '-f', fam, '-p', proto, '--orig-port-dst', String(port)], { allowFail: true });
        }
      }
    }
  }

  /** Rewrites TSBRIDGE-FORWARD and makes sure it is jumped to; removes both when no bridge is left. */
  private async applyShim(bin: string, bridges: { name: string; internal: boolean }[]): Promise<void> {
    const chain = this.owner.forwardChain;
    const probe = await this.runner.run(bin, ['-w', '5', '-t', 'filter', '-S'], { allowFail: true });
    if (probe.exitCode !== 0) {
      this.log.debug('iptables not usable; skipping forward shim', { bin, stderr: probe.stderr });
      return;
    }
    const rules = probe.stdout.split('\n');
    const parent = rules.includes('-N DOCKER-USER') ? 'DOCKER-USER' : 'FORWARD';
    const jumps = rules.filter((r) => r.endsWith(`-j ${chain}`)).map((r) => r.split(' ')[1]!);
    const chainExists = rules.includes(`-N ${chain}`);
    if (bridges.length === 0) {
      for (const p of jumps) await this.runner.run(bin, ['-w', '5', '-t', 'filter', '-D', p, '-j', chain], { allowFail: true });
      if (chainExists) {
        await this.runner.run(bin, ['-w', '5', '-t', 'filter', '-F', chain], { allowFail: true });
        await this.runner.run(bin, ['-w', '5', '-t', 'filter', '-X', chain], { allowFail: true });
      }
      return;
    }
    await this.runner.run(`${bin}-restore`, ['-w', '5', '--noflush'], { input: forwardChainRestore(bridges, chain) });
    if (!jumps.includes(parent)) {
      await this.runner.run(bin, ['-w', '5', '-t', 'filter', '-I', parent, '1', '-j', chain]);
    }
  }
}

/** Original-direction destination ports of `conntrack -L` lines of one protocol, each once. */
export function conntrackDestPorts(listing: string, proto: string): number[] {
  const out = new Set<number>();
  for (const line of listing.split('\n')) {
    if (!line.startsWith(`${proto} `)) continue;
    const m = / dport=(\d+)/.exec(line); // the first dport= is the original direction's
    if (m) out.add(Number(m[1]));
  }
  return [...out].sort((a, b) => a - b);
}
