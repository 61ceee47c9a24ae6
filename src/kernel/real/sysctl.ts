import { promises as fs } from 'node:fs';
import { TsbridgeError } from '../../errors.js';
import type { Sysctl } from '../types.js';

/**
 * Sysctls through /proc/sys directly (no process). Inside a managed plugin
 * /proc/sys is read-only: the plugin's config.json bind-mounts the host's
 * /proc/sys read-write elsewhere and names it in TSBRIDGE_SYSCTL_ROOT. Without
 * that, a value that is already right is fine, anything else is a clear error
 * naming the sysctl the operator must set.
 */
export class ProcSysctl implements Sysctl {
  constructor(private readonly root = '/proc/sys') {}

  async ensure(key: string, value: string): Promise<void> {
    const file = `${this.root}/${key.replace(/\./g, '/')}`;
    let current: string;
    try {
      current = (await fs.readFile(file, 'utf8')).trim();
    } catch (e) {
      throw new TsbridgeError('KERNEL', { op: `read ${key}`, detail: (e as Error).message }, { cause: e });
    }
    if (current === value) return;
    try {
      await fs.writeFile(file, value);
    } catch (e) {
      throw new TsbridgeError('KERNEL', {
        op: `sysctl ${key}=${value}`,
        detail: `${(e as Error).message} (set it on the host: sysctl -w ${key}=${value})`,
      }, { cause: e });
    }
  }
}
