/** CreateNetwork / CreateEndpoint / port bindings: wire → validated domain values. */
import { fail } from '../errors.js';
import { canonicalPrefix, parsePrefix } from '../ipam/addr.js';
import { bridgeName } from '../driver/names.js';
import { NETWORK_DEFAULTS as D, type NetworkOptions, type PortMapping, type Subnet } from '../state/types.js';
import {
  dockerId, goBool, hostAddress, interfaceCidr, interfaceName, ipv4Address, macAddress, mtu, optionalString, port, proto, requireObject,
} from './validate.js';
import { checkDockerOption } from './docker-options.js';
import { OPT_ENABLE_IPV6, OPT_EXPOSED, OPT_GENERIC, OPT_INTERNAL, OPT_PORTMAP, type IpamData } from './wire.js';

export interface NetworkSpec extends NetworkOptions {
  id: string;
  ipv4: Subnet[];
  ipv6: Subnet[];
}

/**
 * Every `-o` option tsbridge understands (docs/options.md, side by side with Docker's bridge).
 * Anything else is refused by name: a silently ignored option — a security one above all — is
 * worse than an error.
 */
export const NETWORK_OPTIONS = {
  BRIDGE_NAME: 'com.docker.network.bridge.name',
  MTU: 'com.docker.network.driver.mtu',
  ICC: 'com.docker.network.bridge.enable_icc',
  MASQUERADE: 'com.docker.network.bridge.enable_ip_masquerade',
  HOST_BINDING_IPV4: 'com.docker.network.bridge.host_binding_ipv4',
  HOST_IPV4: 'com.docker.network.host_ipv4',
  INHIBIT_IPV4: 'com.docker.network.bridge.inhibit_ipv4',
  IFACE_PREFIX: 'com.docker.network.container_iface_prefix',
} as const;

const KNOWN = new Set<string>(Object.values(NETWORK_OPTIONS));

/**
 * The prefix of tsbridge's own options, should it ever have any (it has none today: Docker's
 * names cover what it does). A key under it that this version does not know is refused, on a
 * network or an endpoint, like any other unknown option.
 */
export const TSBRIDGE_OPTION_PREFIX = 'io.tsbridge.';

export function parseCreateNetwork(body: unknown): NetworkSpec {
  const b = requireObject(body);
  const id = dockerId(b.NetworkID, 'NetworkID');
  const options = (b.Options ?? {}) as Record<string, unknown>;
  if (typeof options !== 'object') fail('BAD_REQUEST', { detail: 'Options must be an object' });
  const generic = (options[OPT_GENERIC] ?? {}) as Record<string, unknown>;
  if (typeof generic !== 'object' || generic === null) fail('BAD_REQUEST', { detail: `${OPT_GENERIC} must be an object` });
  for (const key of Object.keys(generic)) {
    if (!KNOWN.has(key)) checkDockerOption(key, generic[key]);
  }
  const str = (k: string) => {
    const v = generic[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') fail('BAD_OPTION', { option: k, value: JSON.stringify(v), detail: 'expected a string' });
    return v;
  };
  const bridge = str(NETWORK_OPTIONS.BRIDGE_NAME);
  const prefix = str(NETWORK_OPTIONS.IFACE_PREFIX);
  if (prefix !== undefined && !/^[a-z][a-z0-9]{0,9}$/.test(prefix)) {
    fail('BAD_OPTION', { option: NETWORK_OPTIONS.IFACE_PREFIX, value: prefix, detail: 'a prefix is 1 to 10 lower-case letters or digits, starting with a letter' });
  }
  const hostBinding = str(NETWORK_OPTIONS.HOST_BINDING_IPV4);
  const snat = str(NETWORK_OPTIONS.HOST_IPV4);
  const mtuStr = str(NETWORK_OPTIONS.MTU);
  const boolOpt = (k: string, dflt: boolean) => (generic[k] === undefined ? dflt : goBool(generic[k], k));
  const spec: NetworkSpec = {
    id,
    bridge: bridge !== undefined ? interfaceName(bridge, NETWORK_OPTIONS.BRIDGE_NAME) : bridgeName(id),
    bridgeNamedByUser: bridge !== undefined,
    mtu: mtuStr !== undefined ? mtu(mtuStr, NETWORK_OPTIONS.MTU) : D.mtu,
    internal: options[OPT_INTERNAL] === undefined ? D.internal : goBool(options[OPT_INTERNAL], OPT_INTERNAL),
    icc: boolOpt(NETWORK_OPTIONS.ICC, D.icc),
    masquerade: boolOpt(NETWORK_OPTIONS.MASQUERADE, D.masquerade),
    hostBindingIpv4: hostBinding !== undefined && hostBinding !== '0.0.0.0' ? ipv4Address(hostBinding, NETWORK_OPTIONS.HOST_BINDING_IPV4) : D.hostBindingIpv4,
    snatIpv4: snat !== undefined ? ipv4Address(snat, NETWORK_OPTIONS.HOST_IPV4) : D.snatIpv4,
    inhibitIpv4: boolOpt(NETWORK_OPTIONS.INHIBIT_IPV4, D.inhibitIpv4),
    ifacePrefix: prefix ?? D.ifacePrefix,
    enableIpv6: options[OPT_ENABLE_IPV6] === undefined ? D.enableIpv6 : goBool(options[OPT_ENABLE_IPV6], OPT_ENABLE_IPV6),
    ipv4: parseIpamData(b.IPv4Data, 4),
    ipv6: parseIpamData(b.IPv6Data, 6),
  };
  if (spec.ipv4.length === 0) fail('BAD_REQUEST', { detail: 'IPv4Data must hold at least one subnet' });
  return spec;
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

export interface EndpointSpec {
  networkId: string;
  endpointId: string;
  ipv4: string | null;
  ipv6: string | null;
  mac: string | null;
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
  for (const [key, value] of Object.entries(opts)) {
    if (key.startsWith(TSBRIDGE_OPTION_PREFIX)) fail('UNSUPPORTED_OPTION', { option: key });
    if (KNOWN.has(key)) {
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

/** A port binding as Docker sends it; HostPort 0 means "pick one". Ranges arrive one binding per port. */
export interface PortRequest {
  proto: PortMapping['proto'];
  containerPort: number;
  hostIp: string;
  hostPort: number;
  hostPortEnd: number;
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
