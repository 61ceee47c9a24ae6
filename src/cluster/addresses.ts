/**
 * Addresses of an overlay, allocated cluster-wide: one etcd key per address in use, created by a
 * transaction that requires the key to be absent and the overlay's config to be the incarnation
 * the host joined (its create revision). Two hosts taking the same address at once: one
 * transaction wins, the other looks again. Keys sit on the owner's lease, so a dead host's
 * addresses come back to the pool when — and only when — its lease is gone.
 */
import { fail } from '../errors.js';
import { formatAddress, parseAddress, parsePrefix } from '../net/addr.js';
import { encodeAddress, parseAddress as parseRecord, type AddressRecord } from './keys.js';
import { guarded, type Cluster } from './context.js';
import { pause, type JoinedOverlay } from './overlays.js';

const ATTEMPTS = 64;

/** The addresses containers may get: the subnet without its network, broadcast and gateway addresses. */
function usable(overlay: JoinedOverlay): { first: bigint; last: bigint; gateway: bigint } {
  const p = parsePrefix(overlay.config.subnet);
  return {
    first: p.network + 1n,
    last: p.network + (1n << BigInt(32 - p.length)) - 2n,
    gateway: parseAddress(overlay.config.gateway).value,
  };
}

/** The lowest usable address not in `taken`; undefined when none is left. */
export function lowestFree(overlay: JoinedOverlay, taken: ReadonlySet<string>): string | undefined {
  return freeAddresses(overlay, taken, 1)[0];
}

/** Up to `n` usable addresses not in `taken`, lowest first. */
export function freeAddresses(overlay: JoinedOverlay, taken: ReadonlySet<string>, n: number): string[] {
  const { first, last, gateway } = usable(overlay);
  const out: string[] = [];
  for (let v = first; v <= last && out.length < n; v++) {
    if (v === gateway) continue;
    const a = formatAddress(4, v);
    if (!taken.has(a)) out.push(a);
  }
  return out;
}

/** Checks that `address` is one containers may get in this overlay; returns it canonical. */
export function checkAddress(name: string, overlay: JoinedOverlay, address: string): string {
  const a = parseAddress(address);
  const { first, last, gateway } = usable(overlay);
  if (a.family !== 4 || a.value < first || a.value > last) {
    fail('ADDRESS_OUT_OF_POOL', { address, pool: `${overlay.config.subnet} (overlay ${name})` });
  }
  if (a.value === gateway) fail('ADDRESS_IN_USE', { address, pool: `${overlay.config.subnet} (overlay ${name}: its gateway)` });
  return formatAddress(4, a.value);
}

/**
 * Puts `value` at `address`'s key on `lease` in one transaction, if the key is absent and the
 * overlay is still the incarnation `overlay` joined. OVERLAY_MISMATCH when it is not; otherwise
 * whether it was taken, and when not, who holds it.
 */
async function takeIfAbsent(c: Cluster, name: string, overlay: JoinedOverlay, address: string, value: string, lease: string, what: string): Promise<{ taken: boolean; holder?: AddressRecord }> {
  const configKey = c.keys.config(name);
  const key = c.keys.address(name, address);
  const r = await guarded(c, what, () =>
    c.store.txn(
      [
        { key: configKey, target: 'create', op: '=', value: overlay.createRevision },
        { key, target: 'create', op: '=', value: 0 },
      ],
      [{ put: key, value, lease }],
      [{ get: configKey }, { get: key }],
    ),
  );
  if (r.succeeded) return { taken: true };
  const cfg = r.gets[0]?.[0];
  if (!cfg || cfg.createRevision !== overlay.createRevision) {
    fail('OVERLAY_MISMATCH', { overlay: name, field: 'incarnation', theirs: cfg ? `revision ${cfg.createRevision}` : 'none (released)', ours: `revision ${overlay.createRevision}` });
  }
  return { taken: false, holder: parseRecord(r.gets[1]?.[0]?.value ?? '') };
}

/**
 * Takes an address for this host (`want`, or the lowest free one) on `lease`. Idempotent for an
 * address this host already holds. Throws ADDRESS_IN_USE (another host has `want`),
 * POOL_EXHAUSTED, CLUSTER_UNAVAILABLE, or OVERLAY_MISMATCH when the overlay was released and made
 * again meanwhile.
 */
export async function allocateAddress(c: Cluster, name: string, overlay: JoinedOverlay, lease: string, want?: string): Promise<string> {
  const wanted = want === undefined ? undefined : checkAddress(name, overlay, want);
  const record = encodeAddress({ host: c.hostId, mac: '', endpoint: '' });
  const tried = new Set<string>();
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    let candidate = wanted;
    if (candidate === undefined) {
      const { kvs } = await guarded(c, `allocating an address in overlay ${name}`, () => c.store.list(c.keys.addresses(name)));
      const taken = new Set([...tried, ...kvs.map((kv) => kv.key.slice(c.keys.addresses(name).length))]);
      // First try: the lowest free address. After losing a race, one of the lowest few at random
      // (more with each loss), so hosts allocating at the same moment stop picking the same one.
      const spread = attempt === 1 ? 1 : Math.min(64, 2 ** (attempt - 1));
      const free = freeAddresses(overlay, taken, spread);
      candidate = free[Math.floor(Math.random() * free.length)];
      if (candidate === undefined) fail('POOL_EXHAUSTED', { pool: overlay.config.subnet, range: '', network: ` (overlay ${name}, all hosts)` });
    }
    const r = await takeIfAbsent(c, name, overlay, candidate, record, lease, `allocating ${candidate} in overlay ${name}`);
    if (r.taken) return candidate;
    const holder = r.holder;
    if (wanted !== undefined) {
      if (holder?.host === c.hostId) return wanted; // ours already (a retried request, or left by a crash)
      fail('ADDRESS_IN_USE', { address: wanted, pool: `${overlay.config.subnet} (overlay ${name}, held by host ${holder?.host ?? '?'})` });
    }
    tried.add(candidate);
    if (attempt % 4 === 0) await pause(attempt);
  }
  fail('OVERLAY_CONTENDED', { op: 'allocating an address', overlay: name, attempts: ATTEMPTS });
}

/**
 * Records the endpoint behind an address of this host (its MAC is what peers program). The
 * reservation may be gone: the host's lease expired between RequestAddress and CreateEndpoint (a
 * host too loaded to renew it in time — seen with a 10 s TTL at load 19) and etcd dropped its
 * keys. Then the address is taken again on the current lease, as long as no other host took it
 * meanwhile and the overlay is the incarnation this host joined. Fails with ADDRESS_IN_USE when
 * another host holds it.
 */
export async function attachEndpoint(c: Cluster, name: string, overlay: JoinedOverlay, address: string, lease: string, rec: Omit<AddressRecord, 'host'>): Promise<void> {
  const key = c.keys.address(name, address);
  const value = encodeAddress({ host: c.hostId, ...rec });
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const kv = await guarded(c, `recording endpoint ${address} in overlay ${name}`, () => c.store.get(key));
    if (!kv) {
      if ((await takeIfAbsent(c, name, overlay, address, value, lease, `taking ${address} in overlay ${name} again`)).taken) return;
      continue; // someone took it meanwhile: look again
    }
    const holder = parseRecord(kv.value);
    if (holder?.host !== c.hostId) fail('ADDRESS_IN_USE', { address, pool: `overlay ${name} (now held by host ${holder?.host ?? '?'})` });
    if (kv.value === value && kv.lease === lease) return;
    const r = await guarded(c, `recording endpoint ${address} in overlay ${name}`, () =>
      c.store.txn([{ key, target: 'mod', op: '=', value: kv.modRevision }], [{ put: key, value, lease }]),
    );
    if (r.succeeded) return;
  }
  fail('OVERLAY_CONTENDED', { op: 'recording an endpoint', overlay: name, attempts: ATTEMPTS });
}

/** Gives an address of this host back. Another host's key is left alone. Idempotent. */
export async function releaseAddress(c: Cluster, name: string, address: string): Promise<void> {
  const key = c.keys.address(name, address);
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const kv = await guarded(c, `releasing ${address} in overlay ${name}`, () => c.store.get(key));
    if (!kv || parseRecord(kv.value)?.host !== c.hostId) return;
    const r = await guarded(c, `releasing ${address} in overlay ${name}`, () =>
      c.store.txn([{ key, target: 'mod', op: '=', value: kv.modRevision }], [{ delete: key }]),
    );
    if (r.succeeded) return;
  }
  fail('OVERLAY_CONTENDED', { op: 'releasing an address', overlay: name, attempts: ATTEMPTS });
}
