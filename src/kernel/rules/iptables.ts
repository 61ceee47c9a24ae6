/**
 * The one thing tsbridge needs from iptables: Docker sets the FORWARD policy
 * to DROP, and an accept in tsbridge's own nftables table cannot override a
 * drop in another base chain. So tsbridge keeps its own chain TSBRIDGE-FORWARD
 * in the filter table, holding an ACCEPT per tsbridge bridge, and one jump to
 * it (from DOCKER-USER when Docker made one, otherwise from FORWARD). All
 * policy — isolation, internal networks, inbound filtering — is decided in
 * nftables before this chain is reached; this chain only lets through what
 * nftables did not drop.
 */
export const FORWARD_CHAIN = 'TSBRIDGE-FORWARD';

export interface ShimBridge {
  name: string;
  internal: boolean;
}

/** iptables-restore input (use with --noflush) that rewrites TSBRIDGE-FORWARD. */
export function forwardChainRestore(bridges: ShimBridge[], chain: string = FORWARD_CHAIN): string {
  const L = ['*filter', `:${chain} - [0:0]`, `-F ${chain}`];
  for (const b of [...bridges].sort((x, y) => x.name.localeCompare(y.name))) {
    if (b.internal) {
      L.push(`-A ${chain} -i ${b.name} -o ${b.name} -j ACCEPT`);
    } else {
      L.push(`-A ${chain} -i ${b.name} -j ACCEPT`);
      L.push(`-A ${chain} -o ${b.name} -j ACCEPT`);
    }
  }
  L.push('COMMIT');
  return L.join('\n') + '\n';
}
