/** `tsbridge health`: the plugin's own answer about itself, for people and for watchdogs. */
import type { HealthReport } from '../metrics/health.js';
import { duration } from './table.js';

export function formatHealth(h: HealthReport, now = Date.now()): string {
  const lines = [`tsbridge (instance ${h.instance}): serving, ${h.healthy ? 'healthy' : 'NOT HEALTHY'} (pid ${h.pid}, up ${duration(h.uptimeSeconds)}, version ${h.version})`];
  for (const p of h.problems) lines.push(`  ! ${p}`);
  const r = h.lastReconcile;
  if (r) lines.push(`  start-up reconciliation: ${r.ok ? 'ok' : `FAILED: ${r.error}`}, ${r.ms} ms, ${Object.entries(r.counts).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(', ') || 'nothing to repair'}`);
  const s = h.lastSweep;
  if (s) lines.push(`  last sweep: ${duration((now - Date.parse(s.at)) / 1000)} ago, ${s.ok ? `ok, ${s.ms} ms, ${s.endpointsRemoved} endpoints removed` : `FAILED: ${s.error}`}`);
  else lines.push(`  last sweep: ${h.sweepIntervalSeconds > 0 ? `none yet (every ${h.sweepIntervalSeconds} s)` : 'off'}`);
  lines.push(`  ${h.networks} networks, ${h.endpoints} endpoints, ${h.callsInFlight} calls in flight; state ${h.stateDir}`);
  return lines.join('\n') + '\n';
}
