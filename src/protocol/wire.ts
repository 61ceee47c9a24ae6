/** Docker's remote-plugin wire shapes (PascalCase), as Docker 20.10 sends them (and later engines, where noted). Only used at the edge. */

export interface IpamData {
  AddressSpace?: string;
  Pool?: string;
  Gateway?: string;
  AuxAddresses?: Record<string, string> | null;
}

export interface CreateNetworkRequest {
  NetworkID: string;
  Options?: Record<string, unknown> | null;
  IPv4Data?: IpamData[] | null;
  IPv6Data?: IpamData[] | null;
}

export interface EndpointInterface {
  Address?: string;
  AddressIPv6?: string;
  MacAddress?: string;
}

export interface CreateEndpointRequest {
  NetworkID: string;
  EndpointID: string;
  Interface?: EndpointInterface | null;
  Options?: Record<string, unknown> | null;
}

export interface JoinRequest {
  NetworkID: string;
  EndpointID: string;
  SandboxKey?: string;
  Options?: Record<string, unknown> | null;
}

export interface PortBindingWire {
  Proto: number;
  IP?: string;
  Port: number;
  HostIP?: string;
  HostPort?: number;
  HostPortEnd?: number;
}

export interface RequestPoolRequest {
  AddressSpace?: string;
  Pool?: string;
  SubPool?: string;
  Options?: Record<string, string> | null;
  V6?: boolean;
}

export interface RequestAddressRequest {
  PoolID: string;
  Address?: string;
  Options?: Record<string, string> | null;
}

export const OPT_GENERIC = 'com.docker.network.generic';
/** Sent by Docker 28 and later, always; false: an IPv6-only network. */
export const OPT_ENABLE_IPV4 = 'com.docker.network.enable_ipv4';
export const OPT_ENABLE_IPV6 = 'com.docker.network.enable_ipv6';
export const OPT_INTERNAL = 'com.docker.network.internal';
export const OPT_PORTMAP = 'com.docker.network.portmap';
export const OPT_EXPOSED = 'com.docker.network.endpoint.exposedports';
export const GATEWAY_REQUEST = 'com.docker.network.gateway';
