/** Shared pieces of the end-to-end suites: the tsbridge footprint on the host, and small docker shorthands. */
import { sh, shOk } from '../lib/run.js';
import { docker, TEST_IMAGE } from '../lib/docker.js';
import { ownerFor } from '../../src/kernel/owner.js';
import { encodeState } from '../../src/state/disk.js';
import { FileStore } from '../../src/state/store.js';

/**
 * A plugin's state as its files hold it (the state.json snapshot with the state.journal entries
 * after it replayed), as the current version's document. Reading changes nothing.
 */
export async function stateOnDisk<T = ReturnType<typeof encodeState>>(stateDir: string): Promise<T> {
  return encodeState(await new FileStore(stateDir).load()) as unknown as T;
}

/** The nftables table name a plugin instance (driver name) uses. */
export function tableOf(driver: string): string {
  return ownerFor(driver).table;
}

/**
 * Routes tsbridge could have made: unreachable routes (a point-to-point network's subnets) and
 * routes through its links (which go with them), both families, every table.
 */
export async function tsbridgeRoutes(): Promise<string[]> {
  const out: string[] = [];
  for (const family of ['-4', '-6']) {
    const lines = (await sh('ip', [family, 'route', 'show', 'table', 'all'])).split('\n');
    // The kernel's own entries of a link (its local, broadcast, anycast and multicast routes, the
    // IPv6 link-local ones, which come after duplicate address detection, a moment after the link
    // is up) follow the links, which the footprint lists already: only routes someone added count.
    const kernels = (l: string) => / table local /.test(l) || /^(multicast|broadcast|anycast|local) /.test(l) || /^fe80::\/64 /.test(l);
    out.push(...lines.filter((l) => (/^unreachable /.test(l) || / dev (tsb-|tsv|tsc)[0-9a-f]/.test(l)) && !kernels(l)).map((l) => l.trim()));
  }
  return out;
}

/**
 * Everything on the host that tsbridge could have made: links, nft tables, iptables chains — and
 * `routes` (tsbridgeRoutes), present only when there are some, so that a clean host is still
 * `{ links: [], nft: [], iptables: [] }`.
 */
export async function footprint(): Promise<{ links: string[]; nft: string[]; iptables: string[]; routes?: string[] }> {
  const links = (await sh('ip', ['-o', 'link', 'show']))
    .split('\n')
    .map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '')
    .filter((n) => /^(tsb-|tsv|tsc)[0-9a-f]/.test(n));
  const nft = (await sh('nft', ['list', 'tables'])).split('\n').filter((l) => l.includes('tsbridge'));
  const iptables: string[] = [];
  for (const bin of ['iptables', 'ip6tables']) {
    const r = await shOk(bin, ['-S']);
    iptables.push(...r.stdout.split('\n').filter((l) => l.includes('TSBRIDGE')).map((l) => `${bin} ${l}`));
  }
  const routes = await tsbridgeRoutes();
  return { links, nft, iptables, ...(routes.length ? { routes } : {}) };
}

/** The host's firewall outside tsbridge's own tables and chains, without counters. */
export async function foreignFirewall(): Promise<string> {
  const out: string[] = [];
  for (const bin of ['iptables-save', 'ip6tables-save']) {
    const r = await shOk(bin, []);
    out.push(...r.stdout.split('\n').filter((l) => !l.startsWith('#') && !l.includes('TSBRIDGE')).map((l) => l.replace(/\[\d+:\d+\]/, '')));
  }
  return out.join('\n');
}

/** Runs a throwaway container and returns its output (fails the test on a non-zero exit). */
export function runIn(network: string, script: string, extra: string[] = []): Promise<string> {
  return docker(['run', '--rm', '--network', network, ...extra, TEST_IMAGE, 'sh', '-c', script]);
}


export { TEST_IMAGE };

/** A request for the CGI that answers with the client's address. */
export const PEER_REQUEST = 'GET /cgi-bin/ip HTTP/1.0\r\n\r\n';

/** A container script: busybox httpd on port 80 with that CGI, then `extra` lines, then it waits. */
export function peerServerScript(extra: string[] = []): string {
  return [
    'mkdir -p /www/cgi-bin',
    `printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho "peer=$REMOTE_ADDR"\\n' > /www/cgi-bin/ip`,
    'chmod +x /www/cgi-bin/ip',
    'httpd -p 80 -h /www',
    ...extra,
    'exec sleep 100000',
  ].join('\n');
}

/** The client address in an answer of the CGI ("peer=[::ffff:1.2.3.4]" → "1.2.3.4"), or null. */
export function httpPeer(answer: string): string | null {
  const m = /peer=\[?([^\]\s]+)\]?/.exec(answer);
  return m ? m[1]!.replace(/^::ffff:(?=\d+\.)/, '') : null;
}
