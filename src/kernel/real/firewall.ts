import type { Logger } from '../../logging.js';
import type { Proto } from '../../domain/types.js';
import { addElements, deleteElements, DEFAULT_MARK, fullRuleset } from '../rules/nft.js';
import { DOCKER_ISOLATION_CHAINS, forwardChainRestore, forwardChainRules, jumpPosition, parseFilterSave, shimParent, type FilterView, type ShimBridge } from '../rules/iptables.js';
import { DEFAULT_INSTANCE, ownerFor, type Owner } from '../owner.js';
import type { Element, EndpointElements, Firewall, FirewallFinding, FirewallView } from '../types.js';
import { runBatch, type Runner } from './exec.js';

/**
 * Until Docker's chains are seen, each new endpoint re-checks the forward shim — at most once a
 * second after this many checks in a row found nothing changed.
 */
const SHIM_CHECKS_BEFORE_PACING = 5;
const SHIM_RECHECK_MS = 1000;

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
export interface FirewallOptions {
  /** The fail-closed mark bit (TSBRIDGE_FWMARK); default DEFAULT_MARK. */
  mark?: number;
  /**
   * Called each time tsbridge's rules were found missing or altered by someone else and applied
   * again, with what was found: `table_missing`, `chain_altered`, `elements_altered`,
   * `shim_missing` (the metrics count them).
   */
  onReapply?: (reason: ReapplyReason) => void;
  /**
   * How long tsbridge's jump stays in DOCKER-USER while FORWARD no longer leads there, before it
   * moves first into FORWARD (default USER_JUMP_GRACE_MS).
   */
  userJumpGraceMs?: number;
  /** Waiting between looks during that grace (tests pass a fake). */
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Docker re-arranges its jump to DOCKER-USER by deleting it and inserting it again at the top of
 * FORWARD (20.10 does so after every network it creates). The nft monitor sees the deletion and
 * the check it triggers can run between the two commands: moving tsbridge's jump out of
 * DOCKER-USER then would leave it in FORWARD behind Docker's until the next sweep. So a
 * DOCKER-USER that FORWARD no longer jumps to keeps tsbridge's jump this long, looked at again
 * every USER_JUMP_LOOK_MS; a jump gone for longer (`iptables -F FORWARD`) is not coming back
 * soon, and tsbridge's goes first in FORWARD.
 */
export const USER_JUMP_GRACE_MS = 2000;
const USER_JUMP_LOOK_MS = 100;

export type ReapplyReason = 'table_missing' | 'chain_altered' | 'elements_altered' | 'shim_missing';

export class NftFirewall implements Firewall {
  private readonly mark: number;
  private readonly onReapply: (reason: ReapplyReason) => void;

  constructor(
    private readonly runner: Runner,
    private readonly log: Logger,
    private readonly iptables: { v4: string; v6: string } = { v4: 'iptables', v6: 'ip6tables' },
    private readonly owner: Owner = ownerFor(DEFAULT_INSTANCE),
    opts: FirewallOptions = {},
  ) {
    this.mark = opts.mark ?? DEFAULT_MARK;
    this.onReapply = opts.onReapply ?? (() => undefined);
    this.userJumpGraceMs = opts.userJumpGraceMs ?? USER_JUMP_GRACE_MS;
    this.sleep = opts.sleep ?? ((ms) => new Promise((res) => setTimeout(res, ms)));
  }

  private readonly userJumpGraceMs: number;
  private readonly sleep: (ms: number) => Promise<void>;

  /** Re-applications after outside changes, by reason, since start (the metrics hook counts them too). */
  readonly reapplied: Record<ReapplyReason, number> = { table_missing: 0, chain_altered: 0, elements_altered: 0, shim_missing: 0 };
  /**
   * The structure of tsbridge's two tables right after the last full apply, as nft lists it
   * (elements counted, not listed): what a later check compares with. null: none taken (no
   * networks, or nft could not list it).
   */
  private baseline: string | null = null;
  /** The iptables binaries whose shim was written (a shim found missing later was removed by someone). */
  private readonly shimWritten = new Set<string>();

  /** The bridges the shim was last brought to (the live networks of the last full view). */
  private shimBridges: ShimBridge[] = [];
  /** The last check saw Docker's chains in place (DOCKER-USER and its isolation): nothing more will appear. */
  private dockerSettled = false;

  async apply(view: FirewallView): Promise<void> {
    // The whole ruleset (blocks, many lines): a process of its own.
    await this.runner.run('nft', ['-f', '-'], { input: fullRuleset(view, this.owner.table, this.mark) });
    this.baseline = null;
    if (view.networks.length > 0) {
      // What a later check compares with; a listing that fails only costs that check.
      this.baseline = await this.listing().then((l) => (l.missing ? null : l.structure), () => null);
    }
    await this.applyShims(view.networks.flatMap((n) => n.rules.shim));
  }

  /**
   * Both tables as nft lists them now (`nft -j list table …`): their structure without handles,
   * and each set's element count. `missing` when either table is gone.
   */
  private async listing(): Promise<{ missing: boolean; structure: string; counts: Map<string, number> }> {
    // The inet table first: when it is gone (the usual outside hand), one command tells.
    const items: unknown[] = [];
    const counts = new Map<string, number>();
    for (const family of ['inet', 'bridge']) {
      const r = await this.runner.run('nft', ['-j', 'list', 'table', family, this.owner.table], { allowFail: true });
      if (r.exitCode !== 0) {
        if (/No such file or directory/i.test(r.stderr)) return { missing: true, structure: '', counts };
        throw new Error(`nft -j list table ${family} ${this.owner.table}: ${r.stderr.trim() || `exit ${r.exitCode}`}`);
      }
      const doc = JSON.parse(r.stdout) as { nftables?: Record<string, Record<string, unknown>>[] };
      for (const o of doc.nftables ?? []) {
        const [kind, body] = Object.entries(o)[0] ?? [];
        if (!kind || kind === 'metainfo' || !body) continue;
        const { handle: _h, elem, ...rest } = body as Record<string, unknown>;
        if (kind === 'set' || kind === 'map') counts.set(`${family} ${String(rest.name)}`, Array.isArray(elem) ? elem.length : 0);
        items.push({ [kind]: stripHandles(rest) });
      }
    }
    return { missing: false, structure: JSON.stringify(items), counts };
  }

  /**
   * Whether tsbridge's tables are as the last full apply left them, their sets holding as many
   * elements as the view calls for. null: they are; otherwise what was found.
   */
  private async check(view: FirewallView): Promise<ReapplyReason | null> {
    if (view.networks.length === 0) return null;
    const now = await this.listing();
    if (now.missing) return 'table_missing';
    if (this.baseline !== null && now.structure !== this.baseline) return 'chain_altered';
    const want = new Map<string, Set<string>>();
    for (const e of [...view.networks.flatMap((n) => n.rules.elements), ...view.endpoints.flatMap((x) => x.elements)]) {
      want.set(e.set, (want.get(e.set) ?? new Set()).add(e.key));
    }
    for (const [set, have] of now.counts) if (have !== (want.get(set)?.size ?? 0)) return 'elements_altered';
    return null;
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
    // Where they never appear (dockerd --iptables=false, an nftables-only Docker), a check costs
    // two processes per endpoint for nothing: once several checks in a row found the filter
    // tables as they were, once a second is enough.
    const now = Date.now();
    const due = this.unchangedShimChecks < SHIM_CHECKS_BEFORE_PACING || now - this.lastShimCheck >= SHIM_RECHECK_MS;
    if (!this.dockerSettled && this.shimBridges.length > 0 && due) {
      this.lastShimCheck = now;
      await this.applyShims(this.shimBridges).catch((e: unknown) => this.log.warn('forward shim re-check failed', { error: e instanceof Error ? e.message : String(e) }));
    }
  }

  /** When a new endpoint last re-checked the forward shim (ms). */
  private lastShimCheck = 0;
  /** Re-checks in a row that found the filter tables as the one before; what they found. */
  private unchangedShimChecks = 0;
  private lastShimSeen = '';

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
    // Someone else's hands on tsbridge's tables (`nft flush ruleset`, a firewalld reload,
    // Debian's nftables service, a deleted rule or element): everything applied again.
    let reason: ReapplyReason | null;
    try {
      reason = await this.check(view);
    } catch (e) {
      this.log.warn("cannot check tsbridge's nftables tables", { error: e instanceof Error ? e.message : String(e) });
      reason = null;
    }
    if (reason) {
      this.log.warn("tsbridge's rules were changed by someone else: applying them again", { reason, table: this.owner.table });
      this.reapplied[reason]++;
      this.onReapply(reason);
      await this.apply(view);
      return;
    }
    await this.applyShims(view.networks.flatMap((n) => n.rules.shim));
  }

  /**
   * Read-only: what of the rules this view calls for is missing or altered now — tsbridge's
   * tables (as a check finds them) and, per iptables family, the shim's chain, its rules and its
   * jump. Changes nothing (`tsbridge doctor`; `--fix` goes through a full apply).
   */
  async diagnose(view: FirewallView): Promise<FirewallFinding[]> {
    const out: FirewallFinding[] = [];
    const tables = `nftables (tables inet/bridge ${this.owner.table})`;
    if (view.networks.length === 0) {
      const l = await this.listing().catch(() => null);
      if (l && !l.missing) out.push({ what: tables, problem: 'present although no network needs them' });
    } else {
      try {
        const reason = await this.check(view);
        const words: Record<ReapplyReason, string> = {
          table_missing: 'a table is missing',
          chain_altered: 'a chain, rule or set is not as last applied',
          elements_altered: 'set or map elements are missing or extra (published ports, anti-spoofing, isolation)',
          shim_missing: '',
        };
        if (reason) out.push({ what: tables, problem: words[reason] });
      } catch (e) {
        out.push({ what: tables, problem: `cannot be listed: ${e instanceof Error ? e.message : String(e)}` });
      }
    }
    const bridges = view.networks.flatMap((n) => n.rules.shim);
    for (const bin of [this.iptables.v4, this.iptables.v6]) {
      const probe = await this.runner.run(`${bin}-save`, [], { allowFail: true }).catch(() => null);
      if (!probe || probe.exitCode !== 0) continue;
      const fv = parseFilterSave(probe.stdout);
      if (fv === null) continue; // no filter table: nothing to get past
      const chain = this.owner.forwardChain;
      const what = `iptables shim (${bin}, chain ${chain})`;
      const jumps = fv.rules.filter((r) => r.endsWith(` -j ${chain}`)).map((r) => r.split(' ')[1]!);
      if (bridges.length === 0) {
        if (fv.chains.has(chain) || jumps.length) out.push({ what, problem: 'present although no network needs it' });
        continue;
      }
      const isolation = DOCKER_ISOLATION_CHAINS.filter((c) => fv.chains.has(c));
      const want = forwardChainRules(bridges, chain, isolation, this.mark);
      const have = fv.rules.filter((r) => r.startsWith(`-A ${chain} `));
      const parent = shimParent(fv);
      if (!fv.chains.has(chain)) out.push({ what, problem: 'the chain is missing' });
      else if (want.join('\n') !== have.join('\n')) out.push({ what, problem: 'its rules are not the ones the networks need' });
      if (!jumps.includes(parent)) out.push({ what, problem: `no jump to it from ${parent}${jumps.length ? ` (only from ${jumps.join(', ')})` : ''}` });
    }
    return out;
  }

  private async applyShims(bridges: ShimBridge[]): Promise<void> {
    this.shimBridges = bridges;
    const v4 = await this.applyShim(this.iptables.v4, this.shimBridges);
    const v6 = await this.applyShim(this.iptables.v6, this.shimBridges);
    this.dockerSettled = v4 !== null && v4.chains.has('DOCKER-USER') && DOCKER_ISOLATION_CHAINS.every((c) => v4.chains.has(c));
    const seen = JSON.stringify([v4 && [...v4.chains].sort(), v4?.rules, v6 && [...v6.chains].sort(), v6?.rules]);
    this.unchangedShimChecks = seen === this.lastShimSeen ? this.unchangedShimChecks + 1 : 0;
    this.lastShimSeen = seen;
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
    let view: FilterView | null | undefined;
    let jumps: string[] = [];
    // Looked at again while Docker's jump to DOCKER-USER is away and tsbridge's is in DOCKER-USER
    // (USER_JUMP_GRACE_MS): Docker is most likely putting it back.
    for (let waited = 0; ; waited += USER_JUMP_LOOK_MS) {
      const probe = await this.runner.run(`${bin}-save`, [], { allowFail: true }).catch((e: unknown) => ({
        exitCode: -1, stdout: '', stderr: e instanceof Error ? e.message : String(e),
      }));
      if (probe.exitCode !== 0) {
        this.log.debug('iptables not usable; skipping forward shim', { bin, stderr: probe.stderr });
        return null;
      }
      view = parseFilterSave(probe.stdout);
      if (view === null) return null; // no filter table: nothing blocks forwarding here, nothing of ours can be left
      jumps = view.rules.filter((r) => r.endsWith(` -j ${chain}`)).map((r) => r.split(' ')[1]!);
      const userJumpAway = bridges.length > 0 && jumps.includes('DOCKER-USER') && shimParent(view) === 'FORWARD';
      if (!userJumpAway || waited >= this.userJumpGraceMs) break;
      await this.sleep(USER_JUMP_LOOK_MS);
    }
    if (bridges.length === 0) {
      this.shimWritten.delete(bin);
      for (const p of jumps) await this.runner.run(bin, ['-w', '5', '-t', 'filter', '-D', p, '-j', chain], { allowFail: true });
      if (view.chains.has(chain)) {
        await this.runner.run(bin, ['-w', '5', '-t', 'filter', '-F', chain], { allowFail: true });
        await this.runner.run(bin, ['-w', '5', '-t', 'filter', '-X', chain], { allowFail: true });
      }
      return view;
    }
    const isolation = DOCKER_ISOLATION_CHAINS.filter((c) => view.chains.has(c));
    const want = forwardChainRules(bridges, chain, isolation, this.mark);
    const have = view.rules.filter((r) => r.startsWith(`-A ${chain} `));
    // Written before and now without its chain, its rules or any jump: someone removed it
    // (`iptables -F`, a flushed DOCKER-USER). Docker's isolation chains appearing, or a jump
    // moving from FORWARD to DOCKER-USER once dockerd made it, are not that.
    const lost = this.shimWritten.has(bin) && (!view.chains.has(chain) || have.length === 0 || jumps.length === 0);
    if (lost) {
      this.log.warn("tsbridge's forward shim was removed by someone else: writing it again", { iptables: bin });
      this.reapplied.shim_missing++;
      this.onReapply('shim_missing');
    }
    if (!view.chains.has(chain) || want.join('\n') !== have.join('\n')) {
      await this.runner.run(`${bin}-restore`, ['-w', '5', '--noflush'], { input: forwardChainRestore(bridges, chain, isolation, this.mark) });
    }
    this.shimWritten.add(bin);
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

/** A value with every `handle` key removed (nft's handles change with every re-creation). */
function stripHandles(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripHandles);
  if (typeof v !== 'object' || v === null) return v;
  return Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'handle').map(([k, x]) => [k, stripHandles(x)]));
}
