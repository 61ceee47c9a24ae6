/**
 * Pieces of the isolation suites (test/integration/isolation-*.test.ts): a neighbour that looks
 * like dockerd's built-in bridge networking inside the lab's host namespace H, in either iptables
 * variant, and a snapshot of H's firewall outside tsbridge's own tables and chain.
 */
import type { IptablesVariant } from '../../../src/kernel/real/iptables-variant.js';
import type { Owner } from '../../../src/kernel/owner.js';
import { createNetns, randomId, type Netns } from '../../lib/netns.js';
import { sh } from '../../lib/run.js';
import type { Cleanup } from '../../lib/cleanup.js';
import { Lab } from './lab.js';

export interface DockerLike {
  /** The bridge ("docker0" of this lab). */
  bridge: string;
  /** A container on it. */
  ns: Netns;
  /** Its address, the bridge's, and the subnet. */
  addr: string;
  gateway: string;
  subnet: string;
}

/**
 * Builds, inside H, what dockerd 20.10 builds for one bridge network: the bridge with a container
 * on it, and in the given iptables variant FORWARD policy DROP, DOCKER-USER, the isolation chains,
 * the accepts for its bridge, masquerade and (when `publish` is given) one published port
 * hostPort → container:80, exactly in the shape `iptables-save` shows on a Docker host.
 */
export async function dockerLike(
  lab: Lab,
  cleanup: Cleanup,
  variant: IptablesVariant,
  opts: { publish?: number; octet?: number } = {},
): Promise<DockerLike> {
  const id = randomId();
  const bridge = `dk${id}`;
  const net = `10.217.${opts.octet ?? 250}`;
  const subnet = `${net}.0/24`;
  const gateway = `${net}.1`;
  const addr = `${net}.2`;
  const ns = await createNetns('d');
  Lab.created.push(ns.name);
  cleanup.add(() => ns.delete(), `netns ${ns.name}`);
  const H = (args: string[]) => lab.ipH(args);
  await H(['link', 'add', bridge, 'type', 'bridge']);
  await H(['addr', 'add', `${gateway}/24`, 'dev', bridge]);
  await H(['link', 'set', bridge, 'up']);
  await H(['link', 'add', `dh${id}`, 'type', 'veth', 'peer', 'name', `dc${id}`, 'netns', ns.name]);
  await H(['link', 'set', `dh${id}`, 'master', bridge, 'up']);
  await sh('ip', ['-n', ns.name, 'link', 'set', `dc${id}`, 'name', 'eth0']);
  await sh('ip', ['-n', ns.name, 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
  await sh('ip', ['-n', ns.name, 'link', 'set', 'eth0', 'up']);
  await sh('ip', ['-n', ns.name, 'route', 'add', 'default', 'via', gateway]);
  const b = bridge;
  const filter = [
    '*filter',
    ':FORWARD DROP [0:0]',
    ':DOCKER - [0:0]',
    ':DOCKER-ISOLATION-STAGE-1 - [0:0]',
    ':DOCKER-ISOLATION-STAGE-2 - [0:0]',
    ':DOCKER-USER - [0:0]',
    '-A FORWARD -j DOCKER-USER',
    '-A FORWARD -j DOCKER-ISOLATION-STAGE-1',
    `-A FORWARD -o ${b} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    `-A FORWARD -o ${b} -j DOCKER`,
    `-A FORWARD -i ${b} ! -o ${b} -j ACCEPT`,
    `-A FORWARD -i ${b} -o ${b} -j ACCEPT`,
    ...(opts.publish ? [`-A DOCKER -d ${addr}/32 ! -i ${b} -o ${b} -p tcp -m tcp --dport 80 -j ACCEPT`] : []),
    `-A DOCKER-ISOLATION-STAGE-1 -i ${b} ! -o ${b} -j DOCKER-ISOLATION-STAGE-2`,
    '-A DOCKER-ISOLATION-STAGE-1 -j RETURN',
    `-A DOCKER-ISOLATION-STAGE-2 -o ${b} -j DROP`,
    '-A DOCKER-ISOLATION-STAGE-2 -j RETURN',
    '-A DOCKER-USER -j RETURN',
    'COMMIT',
  ];
  const nat = [
    '*nat',
    ':DOCKER - [0:0]',
    '-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER',
    '-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER',
    `-A POSTROUTING -s ${subnet} ! -o ${b} -j MASQUERADE`,
    `-A DOCKER -i ${b} -j RETURN`,
    ...(opts.publish ? [`-A DOCKER ! -i ${b} -p tcp -m tcp --dport ${opts.publish} -j DNAT --to-destination ${addr}:80`] : []),
    'COMMIT',
  ];
  await lab.host.exec(`iptables-${variant}-restore`, ['-w', '5', '--noflush'], { input: [...filter, ...nat, ''].join('\n') });
  return { bridge, ns, addr, gateway, subnet };
}

const IPTABLES_SAVES = ['iptables-nft-save', 'ip6tables-nft-save', 'iptables-legacy-save', 'ip6tables-legacy-save'] as const;

export interface FirewallSnapshot {
  /** `nft list ruleset`, one entry per table, counters zeroed. */
  nft: string[];
  /** Each variant's `*-save` of every table, comments dropped, counters zeroed. */
  saves: Record<(typeof IPTABLES_SAVES)[number], string>;
}

/** Everything in H's firewall, counters zeroed: comparable byte for byte. */
export async function firewallOf(ns: Netns): Promise<FirewallSnapshot> {
  const text = (await ns.exec('nft', ['list', 'ruleset'])).replace(/packets \d+ bytes \d+/g, 'packets 0 bytes 0');
  const nft: string[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith('table ')) nft.push(line);
    else if (nft.length) nft[nft.length - 1] += `\n${line}`;
  }
  const saves = {} as FirewallSnapshot['saves'];
  for (const bin of IPTABLES_SAVES) {
    const r = await ns.execOk(bin, []);
    saves[bin] = r.stdout
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
      .join('\n');
  }
  return { nft, saves };
}

/**
 * The snapshot without what belongs to this tsbridge instance: its two nft tables, its iptables
 * chain (declaration and rules) and the jump lines to it, which are returned in `jumps` (the
 * iptables-save lines, and the nft rule lines iptables-nft makes of them).
 */
export function withoutOwn(s: FirewallSnapshot, owner: Owner): { rest: FirewallSnapshot; jumps: string[] } {
  const chain = owner.forwardChain;
  const jumps: string[] = [];
  const nft = s.nft
    .filter((t) => ![`table inet ${owner.table} {`, `table bridge ${owner.table} {`].includes(t.split('\n')[0]!))
    .map((t) => {
      const out: string[] = [];
      let inOwnChain = false;
      for (const line of t.split('\n')) {
        if (line.trim() === `chain ${chain} {`) {
          inOwnChain = true;
          if (out.length && out[out.length - 1]!.trim() === '') out.pop(); // the blank line nft puts between chains
        }
        if (inOwnChain) {
          if (line.trim() === '}') inOwnChain = false;
          continue;
        }
        if (line.includes(chain)) jumps.push(`nft: ${line.trim()}`);
        else out.push(line);
      }
      return out.join('\n');
    });
  const saves = {} as FirewallSnapshot['saves'];
  for (const [bin, text] of Object.entries(s.saves) as [keyof FirewallSnapshot['saves'], string][]) {
    const out: string[] = [];
    for (const line of text.split('\n')) {
      if (line === `:${chain} - [0:0]` || line.startsWith(`-A ${chain} `)) continue;
      if (line.includes(chain)) jumps.push(`${bin}: ${line}`);
      else out.push(line);
    }
    saves[bin] = out.join('\n');
  }
  return { rest: { nft, saves }, jumps };
}

/** `nft list table inet|bridge NAME` inside `ns`, or null when it does not exist. */
export async function nftTable(ns: Netns, family: string, name: string): Promise<string | null> {
  const r = await ns.execOk('nft', ['list', 'table', family, name]);
  return r.exitCode === 0 ? r.stdout : null;
}
