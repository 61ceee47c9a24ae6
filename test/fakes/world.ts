/**
 * A whole tsbridge without a kernel: Db over an in-memory store, the driver
 * and IPAM services over FakeKernel and FakeHost. Plus spec builders so tests
 * state only what they care about.
 */
import { isTsbridgeError, type ErrorCode } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import { DriverService, kindsRuntime, type KindsRuntime } from '../../src/driver/service.js';
import { firewallView } from '../../src/driver/realize.js';
import { bridgeName } from '../../src/domain/names.js';
import type { EndpointSpec, NetworkSpec, PortRequest } from '../../src/domain/types.js';
import { IpamService } from '../../src/ipam/service.js';
import type { DefaultPool } from '../../src/ipam/types.js';
import { fullRuleset } from '../../src/kernel/rules/nft.js';
import { BRIDGE_DEFAULTS, type BridgeSettings } from '../../src/kinds/bridge/settings.js';
import { KINDS } from '../../src/kinds/registry.js';
import type { KindRegistry } from '../../src/kinds/types.js';
import { COMMON_DEFAULTS } from '../../src/protocol/network.js';
import { Db } from '../../src/state/db.js';
import type { Change } from '../../src/state/journal.js';
import { MemoryStore, type CommitOptions } from '../../src/state/store.js';
import { emptyState, type State } from '../../src/state/types.js';
import { FakeHost } from './host.js';
import { FakeKernel } from './kernel.js';
import { modelOf, type NftDump } from './nft.js';

/** MemoryStore that can also fail a later save: `failSave(1)` lets one save through, then fails. */
export class FlakyStore extends MemoryStore {
  private countdown = -1;

  failSave(afterSuccessfulSaves = 0): void {
    if (afterSuccessfulSaves === 0) this.failNextSave = true;
    else this.countdown = afterSuccessfulSaves;
  }

  private tick(): void {
    if (this.countdown === 0) {
      this.countdown = -1;
      this.failNextSave = true;
    } else if (this.countdown > 0) this.countdown--;
  }

  override async save(state: State): Promise<void> {
    this.tick();
    await super.save(state);
  }

  override async commit(changes: Change[], state: State, opts?: CommitOptions): Promise<void> {
    this.tick();
    await super.commit(changes, state, opts);
  }
}

export interface World {
  store: FlakyStore;
  db: Db;
  kernel: FakeKernel;
  host: FakeHost;
  driver: DriverService;
  ipam: IpamService;
  runtime: KindsRuntime;
}

export function makeWorld(opts: { pools?: DefaultPool[]; host?: FakeHost; kernel?: FakeKernel; kinds?: KindRegistry } = {}): World {
  const store = new FlakyStore();
  const db = new Db(store, emptyState());
  // ip_forward is usually on already; tests compare kernel snapshots around failures.
  const kernel = opts.kernel ?? new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1' } });
  const host = opts.host ?? new FakeHost();
  const pools = opts.pools ?? [{ base: '10.210.0.0/16', size: 24 }];
  const log = silentLogger();
  const runtime = kindsRuntime(kernel, log, opts.kinds ?? KINDS);
  const driver = new DriverService(db, kernel, host, log, runtime);
  // Docker's part after a successful Join: the container end of the veth goes into the container.
  const join = driver.join.bind(driver);
  driver.join = async (networkId, endpointId) => {
    const info = await join(networkId, endpointId);
    kernel.peerIntoContainer(info.srcName);
    return info;
  };
  return {
    store,
    db,
    kernel,
    host,
    driver,
    ipam: new IpamService(db, host, () => pools),
    runtime,
  };
}

/** What nftables would hold if the state's full ruleset were applied now. */
export function rulesOf(state: State, kinds: KindRegistry = KINDS, table?: string): NftDump {
  return modelOf(fullRuleset(firewallView(state, kinds), table));
}

/**
 * The kernel's nftables and the state's full ruleset, side by side: after any sequence of
 * operations (failed ones included) they must be the same.
 */
export function firewallAgrees(w: World): { kernel: NftDump; state: NftDump } {
  return { kernel: w.kernel.nft.dump(), state: rulesOf(w.db.state, w.runtime.kinds, w.kernel.table) };
}

export const NET_A = 'aaaa000000000000000000000000000000000000000000000000000000000001';
export const NET_B = 'bbbb000000000000000000000000000000000000000000000000000000000002';
export const EP_1 = '1111000000000000000000000000000000000000000000000000000000000001';
export const EP_2 = '2222000000000000000000000000000000000000000000000000000000000002';
export const EP_3 = '3333000000000000000000000000000000000000000000000000000000000003';

/** A NAT bridge network's fields, common and kind settings side by side, as tests write them. */
export type BridgeNetworkFields = Omit<NetworkSpec, 'kind' | 'settings'> & BridgeSettings;

/** A spec of the NAT bridge kind, as the protocol edge would produce: defaults, then `over`. */
export function networkSpec(over: Partial<BridgeNetworkFields> = {}): NetworkSpec {
  const id = over.id ?? NET_A;
  const f: BridgeNetworkFields = {
    ...COMMON_DEFAULTS,
    ...BRIDGE_DEFAULTS,
    id,
    bridge: bridgeName(id),
    ipv4: [{ subnet: '10.10.0.0/24', gateway: '10.10.0.1/24' }],
    ipv6: [],
    ...over,
  };
  return {
    id: f.id,
    kind: 'bridge',
    ipv4: f.ipv4,
    ipv6: f.ipv6,
    enableIpv6: f.enableIpv6,
    internal: f.internal,
    mtu: f.mtu,
    ifacePrefix: f.ifacePrefix,
    settings: {
      bridge: f.bridge,
      bridgeNamedByUser: f.bridgeNamedByUser,
      icc: f.icc,
      masquerade: f.masquerade,
      hostBindingIpv4: f.hostBindingIpv4,
      snatIpv4: f.snatIpv4,
      inhibitIpv4: f.inhibitIpv4,
      ...(f.gatewayModeIpv4 ? { gatewayModeIpv4: f.gatewayModeIpv4 } : {}),
      ...(f.gatewayModeIpv6 ? { gatewayModeIpv6: f.gatewayModeIpv6 } : {}),
    },
  };
}

export function endpointSpec(over: Partial<EndpointSpec> = {}): EndpointSpec {
  return { networkId: NET_A, endpointId: EP_1, ipv4: '10.10.0.2/24', ipv6: null, mac: null, ...over };
}

export function portReq(containerPort: number, hostPort: number, over: Partial<PortRequest> = {}): PortRequest {
  return { proto: 'tcp', containerPort, hostIp: '', hostPort, hostPortEnd: hostPort, ...over };
}

/** The catalogue code a call fails with (fails the test if the call succeeds or throws something else). */
export async function codeOf(p: Promise<unknown>): Promise<ErrorCode> {
  try {
    await p;
  } catch (e) {
    if (isTsbridgeError(e)) return e.code;
    throw e;
  }
  throw new Error('expected the call to fail');
}

/** The catalogue error a synchronous call throws (fails the test if it throws nothing or something else). */
export function errorOf(fn: () => unknown): { code: ErrorCode; message: string; params: Record<string, string | number> } {
  try {
    fn();
  } catch (e) {
    if (isTsbridgeError(e)) return { code: e.code, message: e.message, params: e.params };
    throw e;
  }
  throw new Error('expected a TsbridgeError');
}
