/** CreateNetwork / CreateEndpoint / port bindings: wire → validated domain values. */
import { fail } from '../errors.js';
import { canonicalPrefix, parsePrefix } from '../net/addr.js';
import type { EndpointSpec, NetworkSpec, PortRequest, Subnet } from '../domain/types.js';
import { KINDS } from '../kinds/registry.js';
import { MODE_OPTION } from '../kinds/select.js';
import type { CommonNetwork, KindRegistry } from '../kinds/types.js';
import {
  dockerId, goBool, hostAddress, interfaceCidr, macAddress, mtu, optionalString, port, proto, requireObject,
} from './validate.js';
import { checkDockerOption } from './docker-options.js';
import { OPT_ENABLE_IPV4, OPT_ENABLE_IPV6, OPT_EXPOSED, OPT_GENERIC, OPT_INTERNAL, OPT_PORTMAP, type IpamData } from './wire.js';

/** Options every kind of network takes (docs/options.md); each kind adds its own (src/kinds). */
export const COMMON_OPTIONS = {
  MODE: MODE_OPTION,
  MTU: 'com.docker.network.driver.mtu',
  IFACE_PREFIX: 'com.docker.network.container_iface_prefix',
} as const;

/** What a network gets for every common option the user did not set (Docker's defaults). */
export const COMMON_DEFAULTS = { mtu: 1500, internal: false, ifacePrefix: 'eth', enableIpv6: false } as const;

/**
 * Every `-o` option tsbridge understands, any kind's (docs/options.md, side by side with Docker's
 * bridge). Anything else is refused by name: a silently ignored option — a security one above
 * all — is worse than an error.
 */
export function networkOptions(kinds: KindRegistry = KINDS): string[] {
  return [...new Set([...Object.values(COMMON_OPTIONS), ...kinds.all.flatMap((k) => k.options)])];
}

/**
 * The prefix of tsbridge's own options. A key under it that this version does not know is
 * refused, on a network or an endpoint, like any other unknown option.
 */
export const TSBRIDGE_OPTION_PREFIX = 'io.tsbridge.';

/**
 * CreateNetwork. The common fields are parsed here; the options select the network's kind
 * (io.tsbridge.mode, default the NAT bridge), which validates its own. Nothing reaches the kernel
 * before all of it passed.
 *
 * IPv4: Docker 28 always sends com.docker.network.enable_ipv4 (older engines never do, and mean
 * true). false is an IPv6-only network (`--ipv4=false --ipv6`): it has no IPv4 at all — IPv4Data,
 * should any arrive, is ignored, as Docker's own bridge driver does (no IPv4 address on the
 * bridge, no IPv4 gateway, no IPv4 rules; Docker itself requests no IPv4 pool then). Neither
 * family enabled is refused, as Docker refuses it.
 */
export function parseCreateNetwork(body: unknown, kinds: KindRegistry = KINDS): NetworkSpec {
  const b = requireObject(body);
  const id = dockerId(b.NetworkID, 'NetworkID');
  const options = (b.Options ?? {}) as Record<string, unknown>;
  if (typeof options !== 'object') fail('BAD_REQUEST', { detail: 'Options must be an object' });
  const generic = (options[OPT_GENERIC] ?? {}) as Record<string, unknown>;
  if (typeof generic !== 'object' || generic === null) fail('BAD_REQUEST', { detail: `${OPT_GENERIC} must be an object` });
  const known = new Set(networkOptions(kinds));
  const given: Record<string, string> = {};
  for (const [key, value] of Object.entries(generic)) {
    if (!known.has(key)) {
      // Refused, or one tsbridge need not act on (Docker applies it, or it names the default).
      checkDockerOption(key);
      continue;
    }
    if (typeof value !== 'string') fail('BAD_OPTION', { option: key, value: JSON.stringify(value), detail: 'expected a string' });
    given[key] = value;
  }
  const kind = kinds.select(given);
  const mine = new Set<string>([...Object.values(COMMON_OPTIONS), ...kind.options]);
  for (const key of Object.keys(given)) {
    if (!mine.has(key)) fail('BAD_OPTION', { option: key, value: given[key]!, detail: `not an option of mode ${kind.name}` });
  }

  const prefix = given[COMMON_OPTIONS.IFACE_PREFIX];
  if (prefix !== undefined && !/^[a-z][a-z0-9]{0,9}$/.test(prefix)) {
    fail('BAD_OPTION', { option: COMMON_OPTIONS.IFACE_PREFIX, value: prefix, detail: 'a prefix is 1 to 10 lower-case letters or digits, starting with a letter' });
  }
  const topBool = (k: string, dflt: boolean) => (options[k] === undefined ? dflt : goBool(options[k], k));
  const enableIpv4 = topBool(OPT_ENABLE_IPV4, true);
  const enableIpv6 = topBool(OPT_ENABLE_IPV6, COMMON_DEFAULTS.enableIpv6);
  if (!enableIpv4 && !enableIpv6) fail('BAD_REQUEST', { detail: `${OPT_ENABLE_IPV4} and ${OPT_ENABLE_IPV6} are both false: a network needs IPv4 or IPv6` });
  const ipv4 = enableIpv4 ? parseIpamData(b.IPv4Data, 4) : [];
  const ipv6 = parseIpamData(b.IPv6Data, 6);
  if (enableIpv4 && ipv4.length === 0) fail('BAD_REQUEST', { detail: 'IPv4Data must hold at least one subnet' });
  if (!enableIpv4 && ipv6.length === 0) fail('BAD_REQUEST', { detail: `IPv6Data must hold at least one subnet on a network without IPv4 (${OPT_ENABLE_IPV4}=false)` });
  const mtuStr = given[COMMON_OPTIONS.MTU];
  const common: CommonNetwork = {
    id,
    ipv4,
    ipv6,
    enableIpv6,
    internal: topBool(OPT_INTERNAL, COMMON_DEFAULTS.internal),
    mtu: mtuStr !== undefined ? mtu(mtuStr, COMMON_OPTIONS.MTU) : COMMON_DEFAULTS.mtu,
    ifacePrefix: prefix ?? COMMON_DEFAULTS.ifacePrefix,
  };
  const kindOptions = Object.fromEntries(Object.entries(given).filter(([k]) => kind.options.includes(k)));
  return { ...common, kind: kind.name, settings: kind.parse(kindOptions, common) };
}

function parseIpamData(v: unknown, family: 4 | 6): Subnet[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) fail('BAD_REQUEST', { detail: `IPv${family}Data must be a list` });
  return (v as IpamData[]).map((d, i) => {
    const field = `IPv${family}Data[${i}]`;
    const pool = optionalString(d?.Pool, `${field}.Pool`);
    let subnet: string;
    try {
      subnet = canonicalPrefix(pool);
    } catch {
      return fail('BAD_REQUEST', { detail: `${field}.Pool must be a subnet, got "${pool}"` });
    }
    if (parsePrefix(subnet).family !== family) fail('BAD_REQUEST', { detail: `${field}.Pool must be IPv${family}` });
    const gw = optionalString(d?.Gateway, `${field}.Gateway`);
    return { subnet, gateway: gw ? interfaceCidr(gw, family, `${field}.Gateway`) : null };
  });
}

/**
 * CreateEndpoint. Its Options mix what Docker itself adds (port bindings, exposed ports, and on
 * newer engines keys such as com.docker.network.endpoint.*) with the user's `--driver-opt`
 * values, so unknown keys cannot all be refused. tsbridge has no endpoint option of its own;
 * refused by name are keys under its prefix and network options given per endpoint (they
 * would otherwise look applied, and are not).
 */
export function parseCreateEndpoint(body: unknown): EndpointSpec {
  const b = requireObject(body);
  const opts = b.Options ?? {};
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) fail('BAD_REQUEST', { detail: 'Options must be an object' });
  const networkOnly = new Set(networkOptions());
  for (const [key, value] of Object.entries(opts)) {
    if (key.startsWith(TSBRIDGE_OPTION_PREFIX)) fail('UNSUPPORTED_OPTION', { option: key });
    if (networkOnly.has(key)) {
      fail('BAD_OPTION', { option: key, value: String(value), detail: 'a network option: set it with docker network create -o, not per endpoint' });
    }
  }
  const iface = (b.Interface ?? {}) as Record<string, unknown>;
  const addr = optionalString(iface.Address, 'Interface.Address');
  const addr6 = optionalString(iface.AddressIPv6, 'Interface.AddressIPv6');
  const mac = optionalString(iface.MacAddress, 'Interface.MacAddress');
  return {
    networkId: dockerId(b.NetworkID, 'NetworkID'),
    endpointId: dockerId(b.EndpointID, 'EndpointID'),
    ipv4: addr ? interfaceCidr(addr, 4, 'Interface.Address') : null,
    ipv6: addr6 ? interfaceCidr(addr6, 6, 'Interface.AddressIPv6') : null,
    mac: mac ? macAddress(mac, 'Interface.MacAddress') : null,
  };
}

export function parseIds(body: unknown): { networkId: string; endpointId: string } {
  const b = requireObject(body);
  return { networkId: dockerId(b.NetworkID, 'NetworkID'), endpointId: dockerId(b.EndpointID, 'EndpointID') };
}

export function parsePortBindings(options: unknown): PortRequest[] {
  const o = (options ?? {}) as Record<string, unknown>;
  const list = o[OPT_PORTMAP];
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list)) fail('BAD_REQUEST', { detail: `${OPT_PORTMAP} must be a list` });
  return list.map((raw, i) => {
    const p = requireObject(raw);
    const hostPort = port(p.HostPort ?? 0, `${OPT_PORTMAP}[${i}].HostPort`, true);
    const end = port(p.HostPortEnd ?? 0, `${OPT_PORTMAP}[${i}].HostPortEnd`, true);
    if (end !== 0 && end < hostPort) fail('BAD_REQUEST', { detail: `${OPT_PORTMAP}[${i}]: HostPortEnd ${end} is below HostPort ${hostPort}` });
    return {
      proto: proto(p.Proto),
      containerPort: port(p.Port, `${OPT_PORTMAP}[${i}].Port`, false),
      hostIp: hostAddress(optionalString(p.HostIP, `${OPT_PORTMAP}[${i}].HostIP`), `${OPT_PORTMAP}[${i}].HostIP`),
      hostPort,
      hostPortEnd: end,
    };
  });
}

export { OPT_EXPOSED };
