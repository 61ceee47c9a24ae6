/**
 * tsbridge's own calls on the plugin socket, beside Docker's (Docker never makes them; the socket
 * is root's, like the calls Docker makes on it). Each takes the state lock as Docker's calls do.
 *
 *   POST /Tsbridge.Converge  {observation, dryRun?}  Docker's networks as `tsbridge gc` read them
 *                            (src/docker/observe.ts): what Docker no longer has is removed after
 *                            two observations (src/driver/converge.ts). Answers the report.
 */
import { fail } from '../errors.js';
import type { Convergence } from '../driver/converge.js';
import { parseObservation } from '../docker/observe.js';

export const CONVERGE_PATH = '/Tsbridge.Converge';

type Handler = (body: Record<string, unknown>) => Promise<unknown>;

export function adminRoutes(d: { convergence?: Convergence }): [string, Handler][] {
  const conv = d.convergence;
  if (!conv) return [];
  return [
    [
      CONVERGE_PATH,
      async (b) => {
        if (b.dryRun !== undefined && typeof b.dryRun !== 'boolean') fail('BAD_REQUEST', { detail: 'dryRun must be true or false' });
        const report = await conv.observe(parseObservation(b.observation), { dryRun: b.dryRun === true });
        return { ...report, graceMs: conv.settings.graceMs, confirmMs: conv.settings.confirmMs };
      },
    ],
  ];
}
