/**
 * A kind of network: one way of wiring containers to the host (a NAT bridge today; later a
 * routed bridge, a LAN uplink, point-to-point links, a VXLAN overlay). Everything a kind decides
 * is a pure function of the state — which options it takes, which links, addresses, routes and
 * sysctls a network and an endpoint need, which rules and set elements they add, what Join
 * answers. The driver (src/driver) does the rest the same way for every kind: it orders the
 * steps, persists them, rolls back, reconciles at start-up.
 *
 * Adding a kind: a folder `src/kinds/<name>/` exporting a `Kind`, and one line in
 * `src/kinds/registry.ts`.
 */
import type { Logger } from '../logging.js';
import type { Endpoint, JoinInfo, KindSettings, Network, NetworkSpec, PortMapping } from '../domain/types.js';
import type { BridgeSpec, Element, Kernel, NetworkRules, RouteSpec, SysctlSetting, UplinkSpec, VethSpec, VxlanSpec } from '../kernel/types.js';
import type { ClusterService } from '../cluster/service.js';
import type { State } from '../state/types.js';

/** A network's common fields, parsed by the protocol edge before its kind parses its own options. */
export type CommonNetwork = Omit<NetworkSpec, 'kind' | 'settings'>;

/** `-o` options as the user gave them: strings. */
export type KindOptions = Readonly<Record<string, string>>;

/** What a network needs from the kernel, made in this order: links, then routes, then sysctls, then uplinks. */
export interface NetworkPlan {
  /** Its bridge, created or brought to spec; null for a kind without one. */
  bridge: BridgeSpec | null;
  /** A VXLAN device on that bridge (an overlay's tunnel end), made after the bridge; absent for most kinds. */
  vxlan?: VxlanSpec;
  /**
   * Links the network makes and removes with it: they must be free when it is created, and
   * start-up keeps them (and removes those of networks that are gone).
   */
  links: string[];
  routes: RouteSpec[];
  sysctls: SysctlSetting[];
  /**
   * Existing host interfaces it takes over as ports of its bridge (a LAN uplink): no other
   * network may take them or name a link after them; given back as they were (`was`) when the
   * network goes. Absent or empty for a kind that takes none.
   */
  uplinks?: UplinkSpec[];
}

/** What an endpoint needs from the kernel, made in this order: the veth pair, routes, sysctls. */
export interface EndpointPlan {
  veth: VethSpec;
  routes: RouteSpec[];
  sysctls: SysctlSetting[];
}

/** How a network publishes ports; null when it publishes none. */
export interface Publishing {
  /** Host address of ports requested without one ('' = every address). */
  defaultHostIp: string;
  /**
   * Families whose ports are published on the container's own address instead of a host port
   * (Docker's routed gateway mode): no host port is taken, the host address of a request only
   * says which family (src/driver/ports.ts). None when absent.
   */
  routed?: { v4: boolean; v6: boolean };
}

/** What a kind's lifecycle hooks may use. */
export interface KindContext {
  kernel: Kernel;
  log: Logger;
  /** The cluster this host is in (etcd); undefined unless TSBRIDGE_ETCD_ENDPOINTS is set. */
  cluster?: ClusterService;
  /** The state as it is now, read only (absent where no state is kept, e.g. some unit tests). */
  state?: () => Readonly<State>;
  /**
   * Changes a running network's settings (what its long-running work learned, e.g. an overlay's
   * peers): the firewall is re-applied with them, then they are saved — in one state transaction.
   * `change` returns null to change nothing.
   */
  updateSettings?(networkId: string, change: (settings: KindSettings) => KindSettings | null): Promise<void>;
}

/** Long-running work a kind does for a network (an etcd watch programming FDB entries, …). */
export interface Running {
  stop(): Promise<void>;
}

/** Optional hooks, for kinds that do more than what their plans and rules say. */
/** What a kind's beforeCreate found (KindLifecycle.beforeCreate). */
export interface BeforeCreateResult {
  settings?: KindSettings;
  adopted?: KindSettings;
}

export interface KindLifecycle {
  /**
   * Checks against the host that parsing options cannot make (an uplink interface exists, holds
   * no address; an overlay's cluster). Runs before anything of the network is saved or made; a
   * throw refuses it. May return
   * - `settings`: the settings completed with what only the host or the cluster knows (an
   *   overlay's VNI and gateway MAC, this host's underlay address); they are what gets saved;
   * - `adopted`: what the network takes over from the host as it is now (an uplink's addresses
   *   and routes), stored with the network before anything is changed, so the plans (and a
   *   restart after a crash) can give it back.
   */
  beforeCreate?(net: Network, ctx: KindContext): Promise<BeforeCreateResult | void>;
  /** Starts the network's long-running work: after it was created, and at every start-up. */
  start?(net: Network, ctx: KindContext): Promise<Running>;
  /** After the network's links and rules are gone (its work already stopped). */
  afterDelete?(net: Network, ctx: KindContext): Promise<void>;
  /**
   * After an endpoint's links and elements are made, before it is saved (an overlay records its
   * MAC in etcd); a throw undoes the endpoint.
   */
  endpointCreated?(ep: Endpoint, net: Network, ctx: KindContext): Promise<void>;
}

export interface Kind {
  /** Its name: the value of `-o io.tsbridge.mode`, and what the state records. */
  readonly name: string;
  /** The `-o` keys it accepts besides the common ones (docs/options.md lists them). */
  readonly options: readonly string[];
  /**
   * True for a kind whose subnets are those of a host link (a LAN uplink: its subnet is the LAN's,
   * its gateway the LAN's router). A new network of such a kind skips the checks that keep other
   * networks off the host's default route, its uplink subnet and its nameservers
   * (src/driver/subnets.ts, checkAgainstHost); its own `beforeCreate` checks the host instead.
   */
  readonly sharesHostSubnet?: boolean;
  /** True when these options ask for this kind without naming a mode (e.g. an uplink interface given). */
  claims?(options: KindOptions): boolean;
  /**
   * Validates its options into its settings (plain data, stored with the network). Pure; refuses
   * a bad value with BAD_OPTION naming it — before anything touches the kernel.
   */
  parse(options: KindOptions, net: CommonNetwork): KindSettings;

  /** What the network needs from the kernel. */
  network(net: Network): NetworkPlan;
  /** What one of its endpoints needs from the kernel. */
  endpoint(ep: Endpoint, net: Network): EndpointPlan;
  /** The network's own interface on the host (its bridge), shown to users; null when it has none. */
  hostInterface(net: Network): string | null;

  /** The network's rules (rendered with every other network's into one ruleset). */
  rules(net: Network): NetworkRules;
  /** An endpoint's elements while it exists (anti-spoofing, isolation). */
  members(ep: Endpoint, net: Network): Element[];
  /** The elements that publish these ports of an endpoint. */
  ports(ep: Endpoint, net: Network, ports: PortMapping[]): Element[];
  /**
   * How it publishes ports; null when it publishes none (an internal network never does). Asked
   * only when ports are requested: a kind on which publishing makes no sense throws a clear
   * error (NO_PUBLISHING) rather than let `-p` look applied.
   */
  publishing(net: Network): Publishing | null;

  /** What Join answers for an endpoint. */
  join(ep: Endpoint, net: Network): JoinInfo;

  /**
   * Its options that differ from the kind's defaults, under the names users give them (shown by
   * `tsbridge status`).
   */
  describe(net: Network): Record<string, string | number | boolean>;

  lifecycle?: KindLifecycle;
}

/** The kinds tsbridge knows, and how a network's options select one. */
export interface KindRegistry {
  /** The kind of a network whose options name none. */
  readonly fallback: Kind;
  readonly all: readonly Kind[];
  /** The kind of a stored network; an unknown name is a STATE error (a newer tsbridge's network). */
  get(name: string): Kind;
  /** The kind these `-o` options ask for (io.tsbridge.mode, or a kind claiming them); BAD_OPTION otherwise. */
  select(options: KindOptions): Kind;
}
