import type { Logger } from '../../logging.js';
import type { Proto } from '../../domain/types.js';
import { addElements, deleteElements, fullRuleset } from '../rules/nft.js';
import { DOCKER_ISOLATION_CHAINS, forwardChainRestore, forwardChainRules, jumpPosition, parseFilterSave, shimParent, type FilterView, type ShimBridge } from '../rules/iptables.js';
import { DEFAULT_INSTANCE, ownerFor, type Owner } from '../owner.js';
import type { Element, EndpointElements, Firewall, FirewallView } from '../types.js';
import { runBatch, type Runner } from './exec.js';

/**
 * nftables for everything tsbridge decides; iptables (the variant holding
 * Docker's chains: iptables-variant.ts picks the commands) only for the accept
 * shim that gets tsbridge's traffic past a DROP policy on FORWARD, and through
 * Docker's isolation from its own bridge networks (rules/iptables.ts).
 *
 * Outside its own two nftables tables and its own iptables chain, the only
 * thing tsbridge ever writes is the one jump to that chain, present while it
 * has networks. It never changes a policy, and never another program's rule.
 */
export class NftFirewall implements Firewall {
  constructor(
    private readonly runner: Runner,
    private readonly log: Logger,
    private readonly iptables: { v4: string; v6: string } = { v4: 'iptables', v6: 'ip6tables' },
    private readonly owner: Owner = ownerFor(DEFAULT_INSTANCE),
  ) {}

  /** The bridges the shim was last brought to (the live networks of the last full view). */
  private shimBridges: ShimBridge[] = [];
  /** The last check saw Docker's chains in place (DOCKER-USER and its isolation): nothing more will appear. */
  private dockerSettled = false;

  async apply(view: FirewallView): Promise<void> {
    // The whole ruleset (blocks, many lines): a process of its own.
    await this.runner.run('nft', ['-f', '-'], { input: fullRuleset(view, this.owner.table) });
    await this.refresh(view);
  }

  /** Element statements: one transaction, through a long-lived nft where the runner has one. */
  private async nft(script: string): Promise<void> {
    if (script) await runBatch(this.runner, 'nft', script);
  }

  async addEndpoint(ep: EndpointElements): Promise<void> {
    await this.nft(addElements([...ep.ports, ...ep.member], this.owner.table));
    // Until Docker's chains have been seen, each new endpoint re-checks the shim: at boot
    // tsbridge starts before dockerd, and dockerd's FORWARD DROP and isolation chains appear
    // just before it starts its containers — which must not wait for the next sweep.
    // A failure here is not the endpoint's: it is logged, and the next sweep tries again.
    if (!this.dockerSettled && this.shimBridges.length > 0) {
      await this.applyShims().catch((e: unknown) => this.log.warn('forward shim re-check failed', { error: e instanceof Error ? e.message : String(e) }));
    }
  }

  async removeEndpoint(ep: EndpointElements): Promise<void> {
    await this.nft(deleteElements([...ep.ports, ...ep.member], this.owner.table));
  }

  async addPorts(ports: Element[]): Promise<void> {
    await this.nft(addElements(ports, this.owner.table));
  }

  async removePorts(ports: Element[]): Promise<void> {
    await this.nft(deleteElements(ports, this.owner.table));
  }

  /**
   * Brings the forward shim (both families) to what the view needs, writing only what differs:
   * cheap enough to run periodically, so the shim follows what dockerd did since — its filter
   * table, DOCKER-USER and isolation chains appearing after tsbridge started (boot order), a
   * jump lost to someone's flush.
   */
  async refresh(view: FirewallView): Promise<void> {
    this.shimBridges = view.networks.flatMap((n) => n.rules.shim);
    await this.applyShims();
  }

  private async applyShims(): Promise<void> {
    const v4 = await this.applyShim(this.iptables.v4, this.shimBridges);
    await this.applyShim(this.iptables.v6, this.shimBridges);
    this.dockerSettled = v4 !== null && v4.chains.has('DOCKER-USER') && DOCKER_ISOLATION_CHAINS.every((c) => v4.chains.has(c));
  }

  /**
   * Forgets the conntrack entries of these UDP/SCTP host ports, so a flow that started before a
   * port was (re)published — towards the host itself, or towards a container since replaced —
   * is not kept going where it went. TCP needs nothing: a new connection is a new entry.
   * One `conntrack -L` per protocol finds which ports have entries at all (usually none), and
   * only those get a `conntrack -D` per family: the cost does not grow with the number of ports.
   */
  async flushConntrack(entries: { proto: Proto; hostPort: number }[]): Promise<void> {
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

  /**
   * Makes TSBRIDGE-FORWARD hold the rules for these bridges and be jumped to from exactly one
   * place; removes the jump and the chain when no bridge is left. Touches no other rule.
   * Returns the filter table as it found it (null: none, or iptables not usable).
   */
  private async applyShim(bin: string, bridges: ShimBridge[]): Promise<FilterView | null> {
    const chain = this.owner.forwardChain;
    const ipt = (args: string[]) => this.runner.run(bin, ['-w', '5', '-t', 'filter', ...args]);
    const probe = await this.runner.run(`${bin}-save`, [], { allowFail: true }).catch((e: unknown) => ({
      exitCode: -1, stdout: '', stderr: e instanceof Error ? e.message : String(e),
    }));
    if (probe.exitCode !== 0) {
      this.log.debug('iptables not usable; skipping forward shim', { bin, stderr: probe.stderr });
      return null;
    }
    const view = parseFilterSave(probe.stdout);
    if (view === null) return null; // no filter table: nothing blocks forwarding here, nothing of ours can be left
    const jumps = view.rules.filter((r) => r.endsWith(` -j ${chain}`)).map((r) => r.split(' ')[1]!);
    if (bridges.length === 0) {
      for (const p of jumps) await this.runner.run(bin, ['-w', '5', '-t', 'filter', '-D', p, '-j', chain], { allowFail: true });
      if (view.chains.has(chain)) {
        await this.runner.run(bin, ['-w', '5', '-t', 'filter', '-F', chain], { allowFail: true });
        await this.runner.run(bin, ['-w', '5', '-t', 'filter', '-X', chain], { allowFail: true });
      }
      return view;
    }
    const isolation = DOCKER_ISOLATION_CHAINS.filter((c) => view.chains.has(c));
    const want = forwardChainRules(bridges, chain, isolation);
    const have = view.rules.filter((r) => r.startsWith(`-A ${chain} `));
    if (!view.chains.has(chain) || want.join('\n') !== have.join('\n')) {
      await this.runner.run(`${bin}-restore`, ['-w', '5', '--noflush'], { input: forwardChainRestore(bridges, chain, isolation) });
    }
    const parent = shimParent(view);
    for (const p of jumps.filter((j) => j !== parent)) await ipt(['-D', p, '-j', chain]); // FORWARD, before dockerd made DOCKER-USER
    if (!jumps.includes(parent)) await ipt(['-I', parent, String(jumpPosition(view, parent)), '-j', chain]);
    return view;
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
