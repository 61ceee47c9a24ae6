/**
 * Asking a running plugin over its socket: `GET /Plugin.Health` (src/metrics/health.ts). Later
 * admin calls (doctor --fix, gc) go through here as well.
 */
import http from 'node:http';
import type { HealthReport } from '../metrics/health.js';

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

export class PluginClient implements PluginApi {
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

  private request(method: string, path: string): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: this.socket, path, method, agent: false }, (res) => {
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
      req.end();
    });
  }
}
