/**
 * `tsbridge gc`: convergence with Docker on demand. The command — outside the plugin — asks
 * Docker's API what it has (src/docker/observe.ts), hands that to the plugin through its admin
 * call (`POST /Tsbridge.Converge`, under the plugin's state lock), and when the plugin found
 * records Docker lacks, asks Docker again after the confirmation interval and hands that over
 * too: the plugin removes what both observations lacked (src/driver/converge.ts).
 */
import type { DockerEngine } from '../docker/client.js';
import { observe } from '../docker/observe.js';
import type { Forgotten } from '../driver/converge.js';
import type { ConvergeAnswer, PluginAdmin } from './plugin.js';

export interface GcResult {
  dryRun: boolean;
  removed: Forgotten;
  /** Lacking in Docker, but younger than the plugin's grace period: left alone. */
  young: Forgotten;
  /** Lacking in the second observation only: a later run removes them. */
  confirming: Forgotten;
  graceMs: number;
}

export async function runGc(docker: DockerEngine, plugin: PluginAdmin, opts: { dryRun: boolean; sleep: (ms: number) => Promise<void> }): Promise<GcResult> {
  let answer: ConvergeAnswer = await plugin.converge(await observe(docker), opts.dryRun);
  let removed = answer.removed;
  if (!opts.dryRun && answer.confirmInMs > 0) {
    await opts.sleep(answer.confirmInMs);
    answer = await plugin.converge(await observe(docker), false);
    removed = {
      networks: [...removed.networks, ...answer.removed.networks],
      endpoints: [...removed.endpoints, ...answer.removed.endpoints],
      pools: [...removed.pools, ...answer.removed.pools],
      addresses: [...removed.addresses, ...answer.removed.addresses],
    };
  }
  return { dryRun: opts.dryRun, removed, young: answer.young, confirming: answer.confirming, graceMs: answer.graceMs };
}

function lines(f: Forgotten, full: boolean): string[] {
  const id = (x: string) => (full ? x : x.slice(0, 12));
  return [
    ...f.networks.map((x) => `  network   ${id(x)}   (its bridge, rules, endpoints and their published ports)`),
    ...f.endpoints.map((x) => `  endpoint  ${id(x)}   (its veth, rules and published ports)`),
    ...f.pools.map((x) => `  pool      ${x}`),
    ...f.addresses.map((a) => `  address   ${a.address}   (pool ${a.pool})`),
  ];
}

export function formatGc(r: GcResult, opts: { full?: boolean } = {}): string {
  const full = !!opts.full;
  const out: string[] = [];
  const removed = lines(r.removed, full);
  if (removed.length === 0) out.push(r.dryRun ? 'nothing to remove: tsbridge holds nothing Docker lacks' : 'nothing removed: tsbridge holds nothing Docker lacks');
  else out.push(r.dryRun ? 'would remove (Docker no longer has them):' : 'removed (Docker no longer has them):', ...removed);
  const young = lines(r.young, full);
  if (young.length) out.push(`left alone, younger than ${Math.round(r.graceMs / 1000)} s (Docker may be creating them; run again later):`, ...young);
  const late = lines(r.confirming, full);
  if (late.length && !r.dryRun) out.push('lacking only in the second look at Docker (removed meanwhile?): run again to remove:', ...late);
  return out.join('\n') + '\n';
}
