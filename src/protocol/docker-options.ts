/**
 * Every option Docker's built-in bridge driver reads from `docker network create -o` (Docker 28:
 * libnetwork's drivers/bridge labels and netlabel), and what tsbridge does with each one that
 * it does not implement. An option is either implemented with Docker's meaning (NETWORK_OPTIONS
 * in network.ts, which reads them), applied by Docker itself, or refused with a message saying
 * tsbridge does not support it; the parser hands every user option it does not implement to
 * checkDockerOption. docs/options.md lists each one beside Docker's meaning (a unit test keeps
 * the two in step).
 */
import { fail } from '../errors.js';

/**
 * Options Docker itself reads from the `-o` list (its daemon, before any driver sees them) and
 * passes to every driver in their own top-level field: accepted here, taken from that field.
 */
export const DOCKER_APPLIED_OPTIONS = {
  ENABLE_IPV4: 'com.docker.network.enable_ipv4',
  ENABLE_IPV6: 'com.docker.network.enable_ipv6',
} as const;

/** Options of Docker's bridge tsbridge refuses by name, with what Docker's bridge does with them. */
export const REFUSED_OPTIONS: Record<string, string> = {
  'com.docker.network.bridge.trusted_host_interfaces': 'host interfaces allowed direct access to container addresses and unpublished ports',
  'com.docker.network.bridge.default_bridge': "marks Docker's own default bridge network (docker0)",
  'com.docker.network.host_ipv6': 'IPv6 egress is SNATed to this address instead of masqueraded',
};

const DOCKER_APPLIED = new Set<string>(Object.values(DOCKER_APPLIED_OPTIONS));

/**
 * Checks one user `-o` option of CreateNetwork that tsbridge does not implement itself.
 * Docker-applied options pass; everything else is refused: known options of Docker's bridge with
 * a message saying tsbridge does not support them, unknown ones by name. (The gateway modes,
 * `gateway_mode_ipv4` / `_ipv6`, are the bridge kind's own options: src/kinds/bridge/settings.ts.)
 */
export function checkDockerOption(key: string): void {
  if (DOCKER_APPLIED.has(key)) return;
  fail('UNSUPPORTED_OPTION', { option: key });
}
