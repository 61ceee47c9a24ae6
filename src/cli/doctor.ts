/**
 * `tsbridge doctor`: asks Docker what it has (when it can), hands that to the plugin, which
 * compares its state with the kernel and with Docker (src/driver/doctor.ts), and prints each
 * difference with its cause and the fix. `--fix`: the plugin's start-up reconciliation now
 * (kernel back to the state, every rule applied again), then convergence with Docker as
 * `tsbridge gc` does it — and a second look, whose findings are what is left.
 */
import type { DockerEngine } from '../docker/client.js';
import { DockerUnreachable } from '../docker/client.js';
import { observe, type DockerObservation } from '../docker/observe.js';
import type { Finding } from '../driver/doctor.js';
import { runGc, type GcResult } from './gc.js';
import type { PluginAdmin } from './plugin.js';

export interface DoctorResult {
  /** Why Docker was not asked (null: it was). */
  dockerUnavailable: string | null;
  findings: Finding[];
  /** With --fix: what was found before the repair, and what convergence removed. */
  fixed?: { before: Finding[]; gc: GcResult | null };
}

async function look(docker: DockerEngine | null): Promise<{ obs: DockerObservation | null; why: string | null }> {
  if (!docker) return { obs: null, why: 'not asked (--no-docker)' };
  try {
    return { obs: await observe(docker), why: null };
  } catch (e) {
    if (e instanceof DockerUnreachable) return { obs: null, why: e.message };
    throw e;
  }
}

export async function runDoctor(docker: DockerEngine | null, plugin: Required<PluginAdmin>, opts: { fix: boolean; sleep: (ms: number) => Promise<void> }): Promise<DoctorResult> {
  const first = await look(docker);
  const findings = await plugin.doctor(first.obs);
  if (!opts.fix || findings.length === 0) return { dockerUnavailable: first.why, findings };
  if (findings.some((f) => f.repair === 'reconcile')) await plugin.repair();
  const gc = docker && first.obs && findings.some((f) => f.repair === 'converge') ? await runGc(docker, plugin, { dryRun: false, sleep: opts.sleep }) : null;
  const after = await look(docker);
  return { dockerUnavailable: after.why, findings: await plugin.doctor(after.obs), fixed: { before: findings, gc } };
}

function block(fs: Finding[]): string[] {
  return fs.flatMap((f) => [`  ✗ ${f.object}: ${f.problem}`, `      cause: ${f.cause}`, `      fix:   ${f.fix}`]);
}

export function formatDoctor(r: DoctorResult): string {
  const out: string[] = [];
  if (r.dockerUnavailable) out.push(`Docker not asked: ${r.dockerUnavailable} (what Docker no longer has is not checked)`);
  if (r.fixed) {
    out.push(`found ${r.fixed.before.length} problem${r.fixed.before.length === 1 ? '' : 's'}, repaired through the plugin:`, ...block(r.fixed.before));
    if (r.findings.length === 0) out.push('all repaired: the kernel, the rules and Docker agree with the state');
    else out.push(`left after the repair (${r.findings.length}):`, ...block(r.findings));
    return out.join('\n') + '\n';
  }
  if (r.findings.length === 0) out.push('no problem found: the kernel, the rules and Docker agree with the state');
  else out.push(`${r.findings.length} problem${r.findings.length === 1 ? '' : 's'}:`, ...block(r.findings), '', 'tsbridge doctor --fix repairs what it can through the plugin (never by editing state.json)');
  return out.join('\n') + '\n';
}
