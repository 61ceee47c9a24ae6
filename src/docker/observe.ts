/**
 * What Docker has, as convergence needs it (src/driver/converge.ts): every network with its
 * driver, IPAM driver and IPAM configuration, and — for networks that may be tsbridge's or use
 * its IPAM — the endpoints on them with their addresses. Read with two kinds of request:
 * `GET /networks` once, then `GET /networks/ID` for those networks (the list leaves endpoints
 * out). Docker's network inspect lists every endpoint of the network, with a sandbox or not
 * (moby daemon/network.go, buildDetailedNetworkResources: `ep-ID` keys for those without one).
 *
 * The observation is plain data: the plugin's sweep makes it itself, `tsbridge gc` makes it and
 * sends it on the admin call (parseObservation checks it there).
 */
import { fail } from '../errors.js';
import { canonicalAddress, canonicalPrefix } from '../net/addr.js';
import { DockerUnreachable, type DockerEngine } from './client.js';

export interface ObservedSubnet {
  /** Canonical CIDR. */
  subnet: string;
  /** Canonical address, or null. */
  gateway: string | null;
  /** Docker's auxiliary addresses (`--aux-address`), canonical. */
  aux: string[];
}

export interface ObservedEndpoint {
  id: string;
  /** Canonical addresses without prefix length, or null. */
  ipv4: string | null;
  ipv6: string | null;
}

export interface ObservedNetwork {
  id: string;
  driver: string;
  ipamDriver: string;
  subnets: ObservedSubnet[];
  /** Its endpoints; null when it was not inspected (a built-in driver with Docker's own IPAM). */
  endpoints: ObservedEndpoint[] | null;
}

export interface DockerObservation {
  networks: ObservedNetwork[];
}

/** Docker's own drivers: a network of one of them with Docker's own IPAM is nothing of tsbridge's. */
export const BUILTIN_DRIVERS: ReadonlySet<string> = new Set(['bridge', 'host', 'null', 'overlay', 'macvlan', 'ipvlan']);
/** Docker's own IPAM drivers: a pool of tsbridge's is never held by a network using them. */
export const BUILTIN_IPAM: ReadonlySet<string> = new Set(['', 'default', 'null']);

/** Whether a network may be tsbridge's or use its IPAM: its endpoints are read then. */
export function mayBeOurs(n: Pick<ObservedNetwork, 'driver' | 'ipamDriver'>): boolean {
  return !BUILTIN_DRIVERS.has(n.driver) || !BUILTIN_IPAM.has(n.ipamDriver);
}

type Raw = Record<string, unknown>;
const isObj = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');

function address(v: unknown): string | null {
  const s = str(v).split('/')[0]!;
  if (!s) return null;
  try {
    return canonicalAddress(s);
  } catch {
    return null;
  }
}

function readSubnets(ipam: unknown): ObservedSubnet[] {
  const config = isObj(ipam) && Array.isArray(ipam.Config) ? ipam.Config : [];
  const out: ObservedSubnet[] = [];
  for (const c of config) {
    if (!isObj(c)) continue;
    let subnet: string;
    try {
      subnet = canonicalPrefix(str(c.Subnet));
    } catch {
      continue;
    }
    const aux = isObj(c.AuxiliaryAddresses) ? Object.values(c.AuxiliaryAddresses).map(address).filter((a): a is string => a !== null) : [];
    out.push({ subnet, gateway: address(c.Gateway), aux });
  }
  return out;
}

/** One network of `GET /networks` (or of an inspect), without endpoints. */
export function readNetwork(raw: unknown): ObservedNetwork {
  if (!isObj(raw) || typeof raw.Id !== 'string' || raw.Id === '') throw new DockerUnreachable('Docker listed a network without an Id');
  const ipam = isObj(raw.IPAM) ? raw.IPAM : {};
  return { id: raw.Id, driver: str(raw.Driver), ipamDriver: str(ipam.Driver), subnets: readSubnets(ipam), endpoints: null };
}

/** The endpoints of an inspected network (its `Containers`, keyed by container ID or `ep-ID`). */
export function readEndpoints(raw: unknown): ObservedEndpoint[] {
  const containers = isObj(raw) && isObj(raw.Containers) ? raw.Containers : {};
  const out: ObservedEndpoint[] = [];
  for (const c of Object.values(containers)) {
    if (!isObj(c) || typeof c.EndpointID !== 'string' || c.EndpointID === '') continue;
    out.push({ id: c.EndpointID, ipv4: address(c.IPv4Address), ipv6: address(c.IPv6Address) });
  }
  return out;
}

/**
 * Asks Docker: the list, then an inspect of each network that may be tsbridge's or use its IPAM
 * (in parallel). A network gone between the two requests is left out. An answer without Docker's
 * predefined `host` or `none` network is not Docker's list and is refused (DockerUnreachable).
 */
export async function observe(engine: DockerEngine): Promise<DockerObservation> {
  const list = (await engine.listNetworks()).map(readNetwork);
  if (!list.some((n) => n.driver === 'host' || n.driver === 'null')) {
    throw new DockerUnreachable("Docker's network list lacks its predefined host and none networks: not an answer to trust");
  }
  const gone = new Set<string>();
  await Promise.all(
    list.filter(mayBeOurs).map(async (n) => {
      const raw = await engine.inspectNetwork(n.id);
      if (raw === null) gone.add(n.id);
      else n.endpoints = readEndpoints(raw);
    }),
  );
  return { networks: list.filter((n) => !gone.has(n.id)) };
}

// ------------------------------------------------------------------ the admin call's body

const ID = /^[0-9a-f]{12,64}$/;

function bad(detail: string): never {
  return fail('BAD_REQUEST', { detail: `observation: ${detail}` });
}

function nullableAddress(v: unknown, where: string): string | null {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'string') bad(`${where} must be an address or null`);
  try {
    return canonicalAddress(v);
  } catch {
    return bad(`${where} is not an address: ${JSON.stringify(v).slice(0, 60)}`);
  }
}

/** An observation as the admin call receives it, checked field by field (BAD_REQUEST otherwise). */
export function parseObservation(v: unknown): DockerObservation {
  if (!isObj(v) || !Array.isArray(v.networks)) bad('expected {"networks": [...]}');
  const networks = (v.networks as unknown[]).map((n, i): ObservedNetwork => {
    const at = `networks[${i}]`;
    if (!isObj(n)) bad(`${at} is not an object`);
    if (typeof n.id !== 'string' || n.id === '' || n.id.length > 128) bad(`${at}.id must be a network ID`);
    if (typeof n.driver !== 'string' || typeof n.ipamDriver !== 'string') bad(`${at}.driver and .ipamDriver must be strings`);
    if (!Array.isArray(n.subnets)) bad(`${at}.subnets must be a list`);
    const subnets = (n.subnets as unknown[]).map((s, j): ObservedSubnet => {
      const sat = `${at}.subnets[${j}]`;
      if (!isObj(s) || typeof s.subnet !== 'string') bad(`${sat} must be {subnet, gateway, aux}`);
      let subnet: string;
      try {
        subnet = canonicalPrefix(s.subnet);
      } catch {
        return bad(`${sat}.subnet is not a subnet`);
      }
      if (!Array.isArray(s.aux ?? [])) bad(`${sat}.aux must be a list`);
      const aux = ((s.aux ?? []) as unknown[]).map((a, k) => nullableAddress(a, `${sat}.aux[${k}]`)).filter((a): a is string => a !== null);
      return { subnet, gateway: nullableAddress(s.gateway, `${sat}.gateway`), aux };
    });
    let endpoints: ObservedEndpoint[] | null = null;
    if (n.endpoints !== null && n.endpoints !== undefined) {
      if (!Array.isArray(n.endpoints)) bad(`${at}.endpoints must be a list or null`);
      endpoints = (n.endpoints as unknown[]).map((e, j): ObservedEndpoint => {
        const eat = `${at}.endpoints[${j}]`;
        if (!isObj(e) || typeof e.id !== 'string' || !ID.test(e.id)) bad(`${eat}.id must be an endpoint ID`);
        return { id: e.id as string, ipv4: nullableAddress(e.ipv4, `${eat}.ipv4`), ipv6: nullableAddress(e.ipv6, `${eat}.ipv6`) };
      });
    }
    return { id: n.id as string, driver: n.driver as string, ipamDriver: n.ipamDriver as string, subnets, endpoints };
  });
  if (!networks.some((n) => n.driver === 'host' || n.driver === 'null')) bad("it lacks Docker's predefined host and none networks: not Docker's list");
  return { networks };
}
