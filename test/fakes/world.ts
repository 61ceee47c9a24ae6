/**
 * A whole tsbridge without a kernel: Db over an in-memory store, the driver
 * and IPAM services over FakeKernel and FakeHost. Plus spec builders so tests
 * state only what they care about.
 */
import { isTsbridgeError, type ErrorCode } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import { DriverService } from '../../src/driver/service.js';
import { bridgeName } from '../../src/driver/names.js';
import { IpamService } from '../../src/ipam/service.js';
import type { DefaultPool } from '../../src/ipam/types.js';
import type { EndpointSpec, NetworkSpec, PortRequest } from '../../src/protocol/network.js';
import { Db } from '../../src/state/db.js';
import { MemoryStore } from '../../src/state/store.js';
import { emptyState, NETWORK_DEFAULTS, type State } from '../../src/state/types.js';
import { FakeHost } from './host.js';
import { FakeKernel } from './kernel.js';

/** MemoryStore that can also fail a later save: `failSave(1)` lets one save through, then fails. */
export class FlakyStore extends MemoryStore {
  private countdown = -1;

  failSave(afterSuccessfulSaves = 0): void {
    if (afterSuccessfulSaves === 0) this.failNextSave = true;
    else this.countdown = afterSuccessfulSaves;
  }

  override async save(state: State): Promise<void> {
    if (this.countdown === 0) {
      this.countdown = -1;
      this.failNextSave = true;
    } else if (this.countdown > 0) this.countdown--;
    await super.save(state);
  }
}

export interface World {
  store: FlakyStore;
  db: Db;
  kernel: FakeKernel;
  host: FakeHost;
  driver: DriverService;
  ipam: IpamService;
}

export function makeWorld(opts: { pools?: DefaultPool[]; host?: FakeHost; kernel?: FakeKernel } = {}): World {
  const store = new FlakyStore();
  const db = new Db(store, emptyState());
  // ip_forward is usually on already; tests compare kernel snapshots around failures.
  const kernel = opts.kernel ?? new FakeKernel({ sysctls: { 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1' } });
  const host = opts.host ?? new FakeHost();
  const pools = opts.pools ?? [{ base: '10.210.0.0/16', size: 24 }];
  const log = silentLogger();
  return {
    store,
    db,
    kernel,
    host,
    driver: new DriverService(db, kernel, host, log),
    ipam: new IpamService(db, host, () => pools),
  };
}

export const NET_A = 'aaaa000000000000000000000000000000000000000000000000000000000001';
export const NET_B = 'bbbb000000000000000000000000000000000000000000000000000000000002';
export const EP_1 = '1111000000000000000000000000000000000000000000000000000000000001';
export const EP_2 = '2222000000000000000000000000000000000000000000000000000000000002';
export const EP_3 = '3333000000000000000000000000000000000000000000000000000000000003';

export function networkSpec(over: Partial<NetworkSpec> = {}): NetworkSpec {
  const id = over.id ?? NET_A;
  return {
    ...NETWORK_DEFAULTS,
    id,
    bridge: bridgeName(id),
    ipv4: [{ subnet: '10.10.0.0/24', gateway: '10.10.0.1/24' }],
    ipv6: [],
    ...over,
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
