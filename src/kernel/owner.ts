/**
 * Which kernel objects belong to this tsbridge instance. The instance is the
 * driver name (the socket's file name); the default one, "tsbridge", keeps the
 * plain names. Another instance on the same host (a second driver name, a test
 * run) gets its own nftables tables and iptables chain, and recognises its links
 * by their alias, so neither ever rewrites or removes the other's objects.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';

export interface Owner {
  instance: string;
  /** Name of the `inet` and `bridge` nftables tables. */
  table: string;
  /** iptables chain of the forward shim (at most 28 characters). */
  forwardChain: string;
  /** ifalias set on every link this instance creates. */
  linkAlias: string;
}

export const DEFAULT_INSTANCE = 'tsbridge';

export function instanceFromSocket(socket: string): string {
  const base = path.basename(socket).replace(/\.sock$/, '');
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(base)) throw new Error(`socket name "${base}" must be 1-64 letters, digits, ".", "_" or "-"`);
  return base;
}

export function ownerFor(instance: string): Owner {
  if (instance === DEFAULT_INSTANCE) {
    return { instance, table: 'tsbridge', forwardChain: 'TSBRIDGE-FORWARD', linkAlias: 'tsbridge' };
  }
  const tag = createHash('sha256').update(instance).digest('hex').slice(0, 8);
  return {
    instance,
    table: `tsbridge_${instance.replace(/[^A-Za-z0-9_]/g, '_')}`,
    forwardChain: `TSBRIDGE-FWD-${tag}`,
    linkAlias: `tsbridge:${instance}`,
  };
}
