/**
 * The one thing tsbridge needs from iptables: Docker sets the FORWARD policy
 * to DROP, and an accept in tsbridge's own nftables table cannot override a
 * drop in another base chain. So tsbridge keeps its own chain TSBRIDGE-FORWARD
 * in the filter table and one jump to it (from DOCKER-USER when Docker made
 * one, otherwise from FORWARD). All of tsbridge's own policy — isolation
 * between its networks, internal networks, inbound filtering — is decided in
 * nftables before this chain is reached; this chain lets through what nftables
 * did not drop, with one exception it cannot leave to nftables: traffic from a
 * tsbridge network to Docker's own bridge networks.
 *
 * Which interfaces are Docker's networks only Docker knows, and it keeps that
 * list in its isolation chains: DOCKER-ISOLATION-STAGE-2 holds `-o BRIDGE -j
 * DROP` for each of its bridge networks, DOCKER-ISOLATION-STAGE-1 the drops of
 * its internal networks. Traffic leaving a tsbridge bridge goes through both
 * before it is accepted, so it meets exactly the isolation Docker applies
 * between its own networks — and stays current as Docker adds and removes
 * networks. tsbridge only jumps to those chains; it never writes them.
 * Published ports are the exception (as between tsbridge networks): a
 * connection DNATed to a Docker container through a host address is accepted.
 */
import type { ShimBridge } from '../types.js';

export const FORWARD_CHAIN = 'TSBRIDGE-FORWARD';

/** Docker's chains tsbridge jumps to (never writes) when they exist, in this order. */
export const DOCKER_ISOLATION_CHAINS = ['DOCKER-ISOLATION-STAGE-1', 'DOCKER-ISOLATION-STAGE-2'] as const;

export type { ShimBridge };

/**
 * The rules of TSBRIDGE-FORWARD, as `iptables -S` prints them. With `mark` (fail closed), a
 * packet into or out of a bridge without that bit — which tsbridge's nftables forward chain sets
 * on every packet it let through (rules/nft.ts) — is dropped first: without tsbridge's nftables
 * tables, nothing of its networks is forwarded, whatever the FORWARD policy.
 */
export function forwardChainRules(bridges: ShimBridge[], chain: string = FORWARD_CHAIN, isolation: readonly string[] = [], mark: number | null = null): string[] {
  const L: string[] = [];
  const unmarked = mark === null ? '' : `-m mark ! --mark 0x${(mark >>> 0).toString(16)}/0x${(mark >>> 0).toString(16)}`;
  // Several networks may name the same interfaces (a wildcard such as `tsv+`): each once.
  const unique = [...new Map(bridges.map((b) => [`${b.name} ${b.internal}`, b])).values()];
  for (const b of unique.sort((x, y) => x.name.localeCompare(y.name) || Number(y.internal) - Number(x.internal))) {
    if (unmarked) {
      L.push(`-A ${chain} -o ${b.name} ${unmarked} -j DROP`);
      L.push(`-A ${chain} -i ${b.name} ${unmarked} -j DROP`);
    }
    if (b.internal) {
      L.push(`-A ${chain} -i ${b.name} -o ${b.name} -j ACCEPT`);
      continue;
    }
    // In: nftables already let only replies, published ports and same-bridge traffic through.
    L.push(`-A ${chain} -o ${b.name} -j ACCEPT`);
    if (isolation.length > 0) {
      L.push(`-A ${chain} -i ${b.name} -m conntrack --ctstate DNAT -j ACCEPT`);
      for (const c of isolation) L.push(`-A ${chain} -i ${b.name} -j ${c}`);
    }
    L.push(`-A ${chain} -i ${b.name} -j ACCEPT`);
  }
  return L;
}

/** iptables-restore input (use with --noflush) that rewrites TSBRIDGE-FORWARD and nothing else. */
export function forwardChainRestore(bridges: ShimBridge[], chain: string = FORWARD_CHAIN, isolation: readonly string[] = [], mark: number | null = null): string {
  const L = ['*filter', `:${chain} - [0:0]`, `-F ${chain}`, ...forwardChainRules(bridges, chain, isolation, mark), 'COMMIT'];
  return L.join('\n') + '\n';
}

/** What the filter table holds that the shim depends on. */
export interface FilterView {
  /** Chains that exist, built-in and user-defined. */
  chains: Set<string>;
  /** `-A CHAIN …` lines, in order. */
  rules: string[];
}

/**
 * The filter table of an `iptables-save` listing (all tables), or null when there is none. With
 * no filter table nothing filters forwarded traffic in that variant and family, so there is
 * nothing to get past — and tsbridge must not create the table by writing its chain there.
 * (Listing all tables never creates one; `iptables -S`, `-t filter` may, with legacy.)
 */
export function parseFilterSave(save: string): FilterView | null {
  let inFilter = false;
  let found = false;
  const chains = new Set<string>();
  const rules: string[] = [];
  for (const line of save.split('\n')) {
    const t = line.trim();
    if (t.startsWith('*')) {
      inFilter = t === '*filter';
      found ||= inFilter;
    } else if (!inFilter || t === 'COMMIT') {
      inFilter = inFilter && t !== 'COMMIT';
    } else if (t.startsWith(':')) {
      chains.add(t.slice(1).split(' ')[0]!);
    } else if (t.startsWith('-A ')) {
      rules.push(t);
    }
  }
  return found ? { chains, rules } : null;
}

/**
 * Where the jump to the shim goes: DOCKER-USER when Docker made it and FORWARD leads there, else
 * FORWARD. (After an `iptables -F`, DOCKER-USER is still there but nothing jumps to it until
 * dockerd restarts: a jump left in it would never be reached.)
 */
export function shimParent(view: FilterView): 'DOCKER-USER' | 'FORWARD' {
  return view.chains.has('DOCKER-USER') && view.rules.includes('-A FORWARD -j DOCKER-USER') ? 'DOCKER-USER' : 'FORWARD';
}

/**
 * The 1-based position for the jump in its parent chain. In DOCKER-USER it goes after every
 * rule already there except Docker's closing `-j RETURN`: rules an operator inserts at the top
 * of DOCKER-USER (`iptables -I DOCKER-USER …`, as Docker documents) always come before
 * tsbridge's accept, whenever either was added. In FORWARD (no Docker) it goes first, ahead of
 * whatever else decides there.
 */
export function jumpPosition(view: FilterView, parent: string): number {
  if (parent !== 'DOCKER-USER') return 1;
  const own = view.rules.filter((r) => r.startsWith(`-A ${parent} `));
  const last = own.length > 0 ? own[own.length - 1] : undefined;
  return last === `-A ${parent} -j RETURN` ? own.length : own.length + 1;
}
