/**
 * Asking a running plugin over its socket: `GET /Plugin.Health` (src/metrics/health.ts). Later
 * admin calls (doctor --fix, gc) go through here as well.
 */
import http from 'node:http';
import type { HealthReport } from '../metrics/health.js';
import type { ConvergeReport } from '../driver/converge.js';
import type { DockerObservation } from '../docker/observe.js';
import { CONVERGE_PATH, DOCTOR_PATH, REPAIR_PATH } from '../server/admin.js';
import type { Finding } from '../driver/doctor.js';

export interface PluginApi {
  /** The plugin's health report. Throws PluginUnreachable when it does not answer. */
  health(): Promise<HealthReport>;
}

export class PluginUnreachable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PluginUnreachable';
  }
}

/** The plugin's admin calls (src/server/admin.ts). */
export interface PluginAdmin {
  /** Hands the plugin an observation of Docker; answers what it removed and what waits. */
  converge(observation: DockerObservation, dryRun: boolean): Promise<ConvergeAnswer>;
  /** What differs between the plugin's state, the kernel and (with an observation) Docker. */
  doctor?(observation: DockerObservation | null): Promise<Finding[]>;
  /** Start-up reconciliation, now. */
  repair?(): Promise<unknown>;
}

export type ConvergeAnswer = ConvergeReport & { graceMs: number; confirmMs: number };

export class PluginClient implements PluginApi, PluginAdmin {
  constructor(readonly socket: string, private readonly timeoutMs = 5000) {}

  async health(): Promise<HealthReport> {
    const r = await this.request('GET', '/Plugin.Health');
    let body: unknown;
    try {
      body = JSON.parse(r.text);
    } catch {
      throw new PluginUnreachable(`${this.socket} answered ${r.status} with something that is not JSON: is it tsbridge?`);
    }
    if (r.status === 404 || r.status === 405) throw new PluginUnreachable(`the plugin on ${this.socket} has no health call (an older tsbridge?)`);
    if (r.status !== 200 || typeof body !== 'object' || body === null || (body as HealthReport).serving !== true) {
      throw new PluginUnreachable(`the plugin on ${this.socket} answered ${r.status}: ${r.text.slice(0, 200)}`);
    }
    return body as HealthReport;
  }

  async converge(observation: DockerObservation, dryRun: boolean): Promise<ConvergeAnswer> {
    return (await this.admin(CONVERGE_PATH, { observation, dryRun })) as ConvergeAnswer;
  }

  async doctor(observation: DockerObservation | null): Promise<Finding[]> {
    return ((await this.admin(DOCTOR_PATH, { observation })) as { findings: Finding[] }).findings;
  }

  async repair(): Promise<unknown> {
    return ((await this.admin(REPAIR_PATH, {})) as { report: unknown }).report;
  }

  private async admin(path: string, payload: unknown): Promise<unknown> {
    const r = await this.request('POST', path, JSON.stringify(payload));
    let body: unknown;
    try {
      body = JSON.parse(r.text);
    } catch {
      throw new PluginUnreachable(`${this.socket} answered ${r.status} with something that is not JSON: is it tsbridge?`);
    }
    if (r.status === 404) throw new PluginUnreachable(`the plugin on ${this.socket} has no ${path} call (an older tsbridge?)`);
    if (r.status !== 200) throw new PluginUnreachable(`the plugin on ${this.socket} refused: ${(body as { Err?: string }).Err ?? r.text.slice(0, 200)}`);
    return body;
  }

  private request(method: string, path: string, payload?: string): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const headers = payload === undefined ? undefined : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) };
      const req = http.request({ socketPath: this.socket, path, method, agent: false, headers }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, text });
        });
      });
      const fail = (message: string) => {
        clearTimeout(timer);
        req.destroy();
        reject(new PluginUnreachable(message));
      };
      const timer = setTimeout(() => fail(`no answer on ${this.socket} within ${this.timeoutMs} ms (the plugin is stuck, or busy for that long)`), this.timeoutMs);
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') fail(`no socket at ${this.socket}: the plugin is not running (or this is not its instance: --instance, TSBRIDGE_SOCKET)`);
        else if (e.code === 'ECONNREFUSED') fail(`nothing listens on ${this.socket}: the plugin is not running (a stale socket)`);
        else if (e.code === 'EACCES') fail(`no permission to use ${this.socket} (run as root)`);
        else fail(`${this.socket}: ${e.message}`);
      });
      req.end(payload);
    });
  }
}
