/**
 * tsbridge's own calls on the plugin socket, beside Docker's (Docker never makes them; the socket
 * is root's, like the calls Docker makes on it). Each takes the state lock as Docker's calls do.
 *
 *   POST /Tsbridge.Converge  {observation, dryRun?}  Docker's networks as `tsbridge gc` read them
 *                            (src/docker/observe.ts): what Docker no longer has is removed after
 *                            two observations (src/driver/converge.ts). Answers the report.
 *   POST /Tsbridge.Doctor    {observation?}  what differs between the state, the kernel and Docker
 *                            (src/driver/doctor.ts). Answers {findings}. Changes nothing.
 *   POST /Tsbridge.Repair    {}  start-up reconciliation, now: the kernel brought back to the state,
 *                            every rule applied again (`tsbridge doctor --fix`). Answers its report.
 */
import { fail } from '../errors.js';
import type { Convergence } from '../driver/converge.js';
import type { Doctor } from '../driver/doctor.js';
import { parseObservation } from '../docker/observe.js';

export const CONVERGE_PATH = '/Tsbridge.Converge';
export const DOCTOR_PATH = '/Tsbridge.Doctor';
export const REPAIR_PATH = '/Tsbridge.Repair';

type Handler = (body: Record<string, unknown>) => Promise<unknown>;

export interface AdminDeps {
  convergence?: Convergence;
  doctor?: Doctor;
  /** Start-up reconciliation, run again (src/driver/reconcile.ts). */
  repair?: () => Promise<unknown>;
}

export function adminRoutes(d: AdminDeps): [string, Handler][] {
  const out: [string, Handler][] = [];
  const { doctor, repair } = d;
  if (doctor) {
    out.push([DOCTOR_PATH, async (b) => ({ findings: await doctor.examine(b.observation === undefined || b.observation === null ? null : parseObservation(b.observation)) })]);
  }
  if (repair) out.push([REPAIR_PATH, async () => ({ report: await repair() })]);
  const conv = d.convergence;
  if (!conv) return out;
  return [
    ...out,
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
