import { promises as fs } from 'node:fs';
import { TsbridgeError } from '../../errors.js';
import type { BridgeSpec, LinkInfo, Links, RemoteEndpoint, RouteSpec, VethSpec, VxlanSpec } from '../types.js';
import type { Runner } from './exec.js';

interface RawLink {
  ifname: string;
  master?: string;
  ifalias?: string;
  mtu?: number;
  linkinfo?: { info_kind?: string; info_data?: { id?: number; local?: string; local6?: string; port?: number; learning?: boolean; proxy?: boolean } };
}

interface RawFdb {
  mac: string;
  dst?: string;
  flags?: string[];
  master?: string;
  state?: string;
}

interface RawNeigh {
  dst: string;
  lladdr?: string;
  state?: string[];
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
    await this.batch(L);
  }

  async ensureVeth(spec: VethSpec): Promise<void> {
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
    await this.batch(L);
  }

  async ensureVxlan(spec: VxlanSpec): Promise<void> {
    const L: string[] = [];
    if (await this.present(spec.name)) {
      const r = await this.runner.run('ip', ['-j', '-d', 'link', 'show', 'dev', spec.name]);
      const x = (JSON.parse(r.stdout || '[]') as RawLink[])[0];
      const d = x?.linkinfo?.info_data;
      const same = x?.linkinfo?.info_kind === 'vxlan' && d?.id === spec.vni && (d.local ?? d.local6) === spec.local && d.port === spec.port && d.learning === false && d.proxy === true;
      if (same) {
        if (x.mtu !== spec.mtu) L.push(`link set dev ${spec.name} mtu ${spec.mtu}`);
        if (x.master !== spec.master) L.push(`link set dev ${spec.name} master ${spec.master}`, `link set dev ${spec.name} type bridge_slave learning off`);
        L.push(`link set dev ${spec.name} up`);
        await this.batch(L);
        return;
      }
      L.push(`link del dev ${spec.name}`); // another VNI, source or port: made again
    }
    L.push(
      `link add name ${spec.name} mtu ${spec.mtu} type vxlan id ${spec.vni} local ${spec.local} dstport ${spec.port} nolearning proxy`,
      `link set dev ${spec.name} alias ${this.alias}`,
      `link set dev ${spec.name} master ${spec.master}`,
      `link set dev ${spec.name} type bridge_slave learning off`,
      `link set dev ${spec.name} up`,
    );
    await this.batch(L);
  }

  async remoteEndpoints(vxlan: string): Promise<RemoteEndpoint[]> {
    if (!(await this.present(vxlan))) return [];
    const [fdb, neigh] = await Promise.all([
      this.runner.run('bridge', ['-j', 'fdb', 'show', 'dev', vxlan]),
      this.runner.run('ip', ['-j', 'neigh', 'show', 'dev', vxlan]),
    ]);
    const vtepOf = new Map<string, string>();
    for (const f of JSON.parse(fdb.stdout || '[]') as RawFdb[]) {
      if (f.dst && f.flags?.includes('self') && f.mac !== '00:00:00:00:00:00') vtepOf.set(f.mac.toLowerCase(), f.dst);
    }
    const out: RemoteEndpoint[] = [];
    for (const n of JSON.parse(neigh.stdout || '[]') as RawNeigh[]) {
      const mac = n.lladdr?.toLowerCase();
      const vtep = mac && vtepOf.get(mac);
      if (mac && vtep) out.push({ address: n.dst, mac, vtep });
    }
    return out;
  }

  async changeRemoteEndpoints(vxlan: string, change: { add: RemoteEndpoint[]; remove: RemoteEndpoint[] }): Promise<void> {
    const { add, remove } = change;
    if (remove.length) {
      // A removal of what is already gone fails in iproute2: run them all (-force), then check.
      await this.runner.run('ip', ['-force', '-batch', '-'], { input: remove.map((r) => `neigh del ${r.address} dev ${vxlan}`).join('\n') + '\n', allowFail: true });
      const fdb = remove.flatMap((r) => [`fdb del ${r.mac} dev ${vxlan} dst ${r.vtep} self`, `fdb del ${r.mac} dev ${vxlan} master`]);
      await this.runner.run('bridge', ['-force', '-batch', '-'], { input: fdb.join('\n') + '\n', allowFail: true });
      const left = await this.remoteEndpoints(vxlan);
      const still = left.filter((l) => remove.some((r) => r.address === l.address && r.mac === l.mac && r.vtep === l.vtep));
      if (still.length) throw new TsbridgeError('KERNEL', { op: `remove remote endpoints of ${vxlan}`, detail: `${still.map((x) => x.address).join(', ')} still present` });
    }
    if (add.length) {
      // Independent of each other: the FDB entries forward, the neighbour entries answer ARP/ND.
      await Promise.all([
        this.runner.run('bridge', ['-batch', '-'], {
          input: add.flatMap((r) => [`fdb replace ${r.mac} dev ${vxlan} dst ${r.vtep} self permanent`, `fdb replace ${r.mac} dev ${vxlan} master static`]).join('\n') + '\n',
        }),
        this.batch(add.map((r) => `neigh replace ${r.address} lladdr ${r.mac} dev ${vxlan} nud permanent`)),
      ]);
    }
  }

  async attachToBridge(hostName: string, bridge: string): Promise<void> {
    await this.batch([
      `link set dev ${hostName} master ${bridge}`,
      `link set dev ${hostName} type bridge_slave hairpin on`,
      `link set dev ${hostName} up`,
    ]);
  }

  async ensureRoutes(routes: RouteSpec[]): Promise<void> {
    if (routes.length === 0) return;
    await this.batch(routes.map((r) => `route replace ${r.to} dev ${r.dev} scope link`));
  }

  async deleteLinks(names: string[]): Promise<void> {
    if (names.length === 0) return;
    const here: string[] = [];
    for (const n of names) if (await this.present(n)) here.push(n);
    const L = here.map((n) => `link del dev ${n}`);
    if (L.length === 0) return;
    // Deleting one end of a veth pair removes the other, so a later line may find
    // nothing to delete: run them all, then check that every name is really gone.
    const r = await this.runner.run('ip', ['-force', '-batch', '-'], { input: L.join('\n') + '\n', allowFail: true });
    if (r.exitCode === 0) return;
    const still = (await this.list()).map((l) => l.name).filter((n) => names.includes(n));
    if (still.length) throw new TsbridgeError('KERNEL', { op: 'delete links', detail: `${still.join(', ')} still present: ${r.stderr.trim()}` });
  }

  private async batch(lines: string[]): Promise<void> {
    await this.runner.run('ip', ['-batch', '-'], { input: lines.join('\n') + '\n' });
  }
}
