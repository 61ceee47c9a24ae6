/**
 * One overlay across hosts: its config (subnet, VNI, anycast gateway) agreed in etcd, and which
 * hosts are in it. Every decision is an etcd transaction that compares revisions, so two hosts
 * acting at once never both win:
 *
 * - The first host creates the config and takes a VNI in one transaction that requires both keys
 *   to be absent (`create == 0`). Others read it and must ask for the same subnet (and gateway, if
 *   they name one): OVERLAY_MISMATCH otherwise.
 * - Joining puts the host's member key (on its lease) and re-puts the config unchanged, which
 *   bumps the config's mod revision — in one transaction that requires the mod revision it read.
 * - Leaving: a host that sees no other member deletes the whole overlay and its VNI, in one
 *   transaction requiring the config's mod revision it read. A host that joined meanwhile bumped
 *   it, so the transaction fails and the leaver looks again (it then only removes its own keys);
 *   a joiner that read the config before it was deleted fails its own transaction and creates the
 *   overlay anew. Either way no host is left in an overlay whose config is gone.
 */
import { fail } from '../errors.js';
import { formatAddress, parseAddress, parsePrefix } from '../net/addr.js';
import { encodeConfig, encodeMember, OVERLAY_NAME, parseConfig, parseMember, type OverlayConfig } from './keys.js';
import { guarded, type Cluster } from './context.js';

/** VNIs tsbridge hands out (below 4096 stays free for hand-made VXLANs and VLAN-like numbering). */
export const VNI_RANGE = { min: 4096, max: 0xffffff } as const;
const ATTEMPTS = 50;

export interface OverlayRequest {
  name: string;
  /** IPv4 subnet as given (canonicalised here). */
  subnet: string;
  /** The gateway, if the user named one; default: the subnet's first address. */
  gateway?: string;
  /** Take this VNI when creating the config (a host rejoining with what it had). */
  vni?: number;
}

export interface JoinedOverlay {
  config: OverlayConfig;
  /** The config's create revision: which incarnation of the overlay this is. */
  createRevision: number;
}

/** The anycast gateway's MAC for a VNI: locally administered, 02:74:73 ("ts") + the VNI. */
export function gatewayMacFor(vni: number): string {
  const b = [0x02, 0x74, 0x73, (vni >> 16) & 0xff, (vni >> 8) & 0xff, vni & 0xff];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** The gateway of an overlay whose creator named none: the subnet's first address. */
export function defaultGateway(subnet: string): string {
  return formatAddress(4, parsePrefix(subnet).network + 1n);
}

/** Validates an overlay request; returns it with a canonical subnet (and gateway, if one was named). */
export function overlayRequest(name: string, subnet: string, gateway?: string): OverlayRequest {
  if (!OVERLAY_NAME.test(name)) {
    fail('BAD_OPTION', { option: 'io.tsbridge.overlay', value: name, detail: 'an overlay name is 1-63 of letters, digits, ".", "_", "-", starting with a letter or digit' });
  }
  const p = parsePrefix(subnet);
  if (p.family !== 4) fail('BAD_OPTION', { option: 'io.tsbridge.overlay', value: name, detail: `overlays are IPv4 for now; ${subnet} is IPv6` });
  if (p.length > 30) fail('BAD_CIDR', { what: 'overlay subnet', value: subnet, detail: 'an overlay needs at least a /30' });
  const canonical = `${formatAddress(4, p.network)}/${p.length}`;
  if (!gateway) return { name, subnet: canonical };
  const g = parseAddress(gateway);
  const last = p.network + (1n << BigInt(32 - p.length)) - 1n;
  if (g.family !== 4 || g.value <= p.network || g.value >= last) {
    fail('BAD_ADDRESS', { value: gateway, detail: `the gateway must be a host address of ${canonical}` });
  }
  return { name, subnet: canonical, gateway: formatAddress(4, g.value) };
}

/** Reads an overlay's config; undefined when no host has it. */
export async function readOverlay(c: Cluster, name: string): Promise<JoinedOverlay | undefined> {
  const kv = await guarded(c, `reading overlay ${name}`, () => c.store.get(c.keys.config(name)));
  if (!kv) return undefined;
  const config = parseConfig(kv.value);
  if (!config) fail('STATE', { detail: `overlay ${name}: the config in etcd (${c.keys.config(name)}) is unreadable: ${kv.value}` });
  return { config, createRevision: kv.createRevision };
}

function checkAgreement(name: string, have: OverlayConfig, req: OverlayRequest): void {
  if (have.subnet !== req.subnet) fail('OVERLAY_MISMATCH', { overlay: name, field: 'subnet', theirs: have.subnet, ours: req.subnet });
  if (req.gateway && have.gateway !== req.gateway) fail('OVERLAY_MISMATCH', { overlay: name, field: 'gateway', theirs: have.gateway, ours: req.gateway });
  if (req.vni !== undefined && have.vni !== req.vni) fail('OVERLAY_MISMATCH', { overlay: name, field: 'VNI', theirs: have.vni, ours: req.vni });
}

/**
 * Joins this host to the overlay (creating it if no host has it): its member key goes on the
 * host's lease. Idempotent. Throws OVERLAY_MISMATCH when the overlay exists with other settings.
 */
export async function joinOverlay(c: Cluster, req: OverlayRequest, lease: string, vtep: string): Promise<JoinedOverlay> {
  const { name } = req;
  const configKey = c.keys.config(name);
  const memberPut = { put: c.keys.member(name, c.hostId), value: encodeMember({ vtep }), lease };
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const kv = await guarded(c, `joining overlay ${name}`, () => c.store.get(configKey));
    if (!kv) {
      const vni = req.vni ?? (await freeVni(c));
      const config: OverlayConfig = { vni, subnet: req.subnet, gateway: req.gateway ?? defaultGateway(req.subnet), gatewayMac: gatewayMacFor(vni) };
      const r = await guarded(c, `creating overlay ${name}`, () =>
        c.store.txn(
          [
            { key: configKey, target: 'create', op: '=', value: 0 },
            { key: c.keys.vni(vni), target: 'create', op: '=', value: 0 },
          ],
          [{ put: configKey, value: encodeConfig(config) }, { put: c.keys.vni(vni), value: name }, memberPut],
          [{ get: c.keys.vni(vni) }],
        ),
      );
      if (r.succeeded) {
        c.log.info('overlay created', { overlay: name, vni, subnet: config.subnet, revision: r.revision });
        return { config, createRevision: r.revision };
      }
      const holder = r.gets[0]?.[0];
      if (req.vni !== undefined && holder && holder.value !== name) {
        fail('OVERLAY_MISMATCH', { overlay: name, field: 'VNI', theirs: `${req.vni} taken by overlay ${holder.value}`, ours: req.vni });
      }
      continue; // someone created it (or took the VNI) first: look again
    }
    const config = parseConfig(kv.value);
    if (!config) fail('STATE', { detail: `overlay ${name}: the config in etcd (${configKey}) is unreadable: ${kv.value}` });
    checkAgreement(name, config, req);
    const r = await guarded(c, `joining overlay ${name}`, () =>
      c.store.txn([{ key: configKey, target: 'mod', op: '=', value: kv.modRevision }], [{ put: configKey, value: kv.value }, memberPut]),
    );
    if (r.succeeded) return { config, createRevision: kv.createRevision };
    await pause(attempt);
  }
  fail('OVERLAY_CONTENDED', { op: 'joining', overlay: name, attempts: ATTEMPTS });
}

/**
 * This host leaves the overlay: its member key and its address keys go. When it was the last
 * member, the overlay's config, addresses and VNI go too ('released'). Idempotent.
 */
export async function leaveOverlay(c: Cluster, name: string): Promise<'left' | 'released' | 'absent'> {
  const configKey = c.keys.config(name);
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const { kvs } = await guarded(c, `leaving overlay ${name}`, () => c.store.list(c.keys.overlay(name)));
    const cfgKv = kvs.find((kv) => kv.key === configKey);
    const mine = kvs.filter((kv) => isMine(c, name, kv.key, kv.value)).map((kv) => ({ delete: kv.key }));
    if (!cfgKv) {
      if (mine.length) await guarded(c, `leaving overlay ${name}`, () => c.store.txn([], mine));
      return 'absent';
    }
    const others = kvs.filter((kv) => kv.key.startsWith(c.keys.members(name)) && kv.key !== c.keys.member(name, c.hostId));
    if (others.length) {
      await guarded(c, `leaving overlay ${name}`, () => c.store.txn([], mine));
      return 'left';
    }
    const config = parseConfig(cfgKv.value);
    const release = [{ delete: c.keys.overlay(name), prefix: true }, ...(config ? [{ delete: c.keys.vni(config.vni) }] : [])];
    const r = await guarded(c, `releasing overlay ${name}`, () => c.store.txn([{ key: configKey, target: 'mod', op: '=', value: cfgKv.modRevision }], release));
    if (r.succeeded) {
      c.log.info('overlay released', { overlay: name, vni: config?.vni, revision: r.revision });
      return 'released';
    }
    await pause(attempt);
  }
  fail('OVERLAY_CONTENDED', { op: 'leaving', overlay: name, attempts: ATTEMPTS });
}

/** This host's member or address key. */
function isMine(c: Cluster, name: string, key: string, value: string): boolean {
  if (key === c.keys.member(name, c.hostId)) return true;
  if (!key.startsWith(c.keys.addresses(name))) return false;
  try {
    return (JSON.parse(value) as { host?: unknown }).host === c.hostId;
  } catch {
    return false;
  }
}

/** The lowest VNI of the range no overlay holds. */
async function freeVni(c: Cluster): Promise<number> {
  const { kvs } = await guarded(c, 'reading VNIs', () => c.store.list(c.keys.vnis()));
  const taken = new Set(kvs.map((kv) => Number(kv.key.slice(c.keys.vnis().length))));
  for (let v = VNI_RANGE.min; v <= VNI_RANGE.max; v++) if (!taken.has(v)) return v;
  fail('NO_FREE_VNI', { range: `${VNI_RANGE.min}-${VNI_RANGE.max}` });
}

/** The member records of an overlay (host id → VTEP). */
export async function overlayMembers(c: Cluster, name: string): Promise<Map<string, string>> {
  const { kvs } = await guarded(c, `reading overlay ${name}`, () => c.store.list(c.keys.members(name)));
  const out = new Map<string, string>();
  for (const kv of kvs) {
    const m = parseMember(kv.value);
    if (m) out.set(kv.key.slice(c.keys.members(name).length), m.vtep);
  }
  return out;
}

/** A short, growing, jittered pause between attempts that lost a race. */
export function pause(attempt: number): Promise<void> {
  const ms = Math.min(200, 5 * attempt) * (0.5 + Math.random());
  return new Promise((r) => setTimeout(r, ms));
}
