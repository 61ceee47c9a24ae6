import { promises as fs } from 'node:fs';
import { isTsbridgeError, TsbridgeError } from '../../errors.js';
import type { BridgeSpec, LinkInfo, Links, RouteSpec, VethSpec } from '../types.js';
import { runBatch, type Runner } from './exec.js';

interface RawLink {
  ifname: string;
  master?: string;
  ifalias?: string;
  linkinfo?: { info_kind?: string };
}

/** `addr replace` keeps the line idempotent; IPv6 without duplicate address detection (tsbridge owns the subnet). */
function addressLine(cidr: string, dev: string): string {
  return cidr.includes(':') ? `addr replace ${cidr} dev ${dev} nodad` : `addr replace ${cidr} dev ${dev}`;
}

/** Links through iproute2: one `ip -batch` per operation. Names are validated before they get here. */
export class IpLinks implements Links {
  constructor(
    private readonly runner: Runner,
    private readonly sysfs = '/sys/class/net',
    /** Set as ifalias on every link created here, so start-up can tell its own links from others'. */
    private readonly alias = 'tsbridge',
  ) {}

  private info(x: RawLink): LinkInfo {
    return { name: x.ifname, kind: x.linkinfo?.info_kind ?? '', master: x.master ?? null, owned: x.ifalias === this.alias };
  }

  async list(): Promise<LinkInfo[]> {
    const r = await this.runner.run('ip', ['-j', '-d', 'link', 'show']);
    return (JSON.parse(r.stdout || '[]') as RawLink[]).map((x) => this.info(x));
  }

  /** Cheap existence check through sysfs (no process). */
  private async present(name: string): Promise<boolean> {
    try {
      await fs.access(`${this.sysfs}/${name}`);
      return true;
    } catch {
      return false;
    }
  }

  private async exists(name: string): Promise<LinkInfo | null> {
    if (!(await this.present(name))) return null;
    const r = await this.runner.run('ip', ['-j', '-d', 'link', 'show', 'dev', name], { allowFail: true });
    if (r.exitCode !== 0) return null;
    const x = (JSON.parse(r.stdout || '[]') as RawLink[])[0];
    return x ? this.info(x) : null;
  }

  async ensureBridge(spec: BridgeSpec): Promise<void> {
    await this.batch(() => this.bridgeLines(spec));
  }

  private async bridgeLines(spec: BridgeSpec): Promise<string[]> {
    const have = await this.exists(spec.name);
    const L: string[] = [];
    if (have && have.kind !== 'bridge') {
      throw new TsbridgeError('BRIDGE_NAME_IN_USE', { name: spec.name, networkId: `no network (it is a ${have.kind || 'non-bridge'} interface)` });
    }
    if (!have) {
      L.push(`link add name ${spec.name} address ${spec.mac} mtu ${spec.mtu} type bridge stp_state 0 forward_delay 0`);
      L.push(`link set dev ${spec.name} alias ${this.alias}`);
    }
    else L.push(`link set dev ${spec.name} mtu ${spec.mtu}`);
    for (const a of spec.addresses) L.push(addressLine(a, spec.name));
    L.push(`link set dev ${spec.name} up`);
    return L;
  }

  async ensureVeth(spec: VethSpec): Promise<void> {
    await this.batch(() => this.vethLines(spec));
  }

  private async vethLines(spec: VethSpec): Promise<string[]> {
    const L: string[] = [];
    if (await this.present(spec.hostName)) L.push(`link del dev ${spec.hostName}`);
    L.push(
      `link add name ${spec.hostName} mtu ${spec.mtu} type veth peer name ${spec.peerName} mtu ${spec.mtu} address ${spec.mac}`,
      `link set dev ${spec.hostName} alias ${this.alias}`,
      `link set dev ${spec.peerName} alias ${this.alias}`,
    );
    if (spec.master) {
      L.push(`link set dev ${spec.hostName} master ${spec.master}`, `link set dev ${spec.hostName} type bridge_slave hairpin on`);
    }
    for (const a of spec.hostAddresses) L.push(addressLine(a, spec.hostName));
    L.push(`link set dev ${spec.hostName} up`);
    return L;
  }

  async attachToBridge(hostName: string, bridge: string): Promise<void> {
    await this.batch(async () => [
      `link set dev ${hostName} master ${bridge}`,
      `link set dev ${hostName} type bridge_slave hairpin on`,
      `link set dev ${hostName} up`,
    ]);
  }

  async ensureRoutes(routes: RouteSpec[]): Promise<void> {
    if (routes.length === 0) return;
    await this.batch(async () => routes.map((r) => `route replace ${r.to} dev ${r.dev} scope link`));
  }

  async deleteLinks(names: string[]): Promise<void> {
    if (names.length === 0) return;
    const here: string[] = [];
    for (const n of names) if (await this.present(n)) here.push(n);
    const L = here.map((n) => `link del dev ${n}`);
    if (L.length === 0) return;
    // Deleting one end of a veth pair removes the other, so a later line may find
    // nothing to delete: run them all, then check that every name is really gone.
    let r = await runBatch(this.runner, 'ip', L.join('\n') + '\n', { allowFail: true });
    if (r.exitCode === 0) return;
    const left = async () => {
      const still: string[] = [];
      for (const n of here) if (await this.present(n)) still.push(n);
      return still;
    };
    let still = await left();
    if (still.length && this.runner.restartBatch) {
      // A long-lived ip may know a link by an index it no longer has (deleted and made again by
      // someone else): a new one looks the names up afresh.
      this.runner.restartBatch('ip');
      r = await runBatch(this.runner, 'ip', still.map((n) => `link del dev ${n}`).join('\n') + '\n', { allowFail: true });
      still = await left();
    }
    if (still.length) throw new TsbridgeError('KERNEL', { op: 'delete links', detail: `${still.join(', ')} still present: ${r.stderr.trim()}` });
  }

  /**
   * One operation's lines through `ip -batch` (a long-lived one where the runner has it). Given
   * how to plan them (idempotently, from what the kernel holds), a failed operation is planned
   * and run once more on a new long-lived ip: the running one keeps a cache of link names, and a
   * link someone else deleted and made again (a bridge re-created by name) is not in it as it is
   * now.
   */
  private async batch(lines: string[] | (() => Promise<string[]>)): Promise<void> {
    const plan = typeof lines === 'function' ? lines : async () => lines;
    try {
      await runBatch(this.runner, 'ip', (await plan()).join('\n') + '\n');
    } catch (e) {
      if (typeof lines !== 'function' || !this.runner.restartBatch || !isTsbridgeError(e, 'KERNEL')) throw e;
      this.runner.restartBatch('ip');
      await runBatch(this.runner, 'ip', (await plan()).join('\n') + '\n');
    }
  }
}
