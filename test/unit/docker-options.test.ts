/**
 * Issue 10: every option Docker 28's bridge driver accepts is implemented with Docker's meaning,
 * applied by Docker itself, or refused with a message saying tsbridge does not support it
 * (src/protocol/docker-options.ts, consulted by parseCreateNetwork for each user `-o` option).
 */
import { parseCreateNetwork } from '../../src/protocol/network.js';
import { DOCKER_APPLIED_OPTIONS, REFUSED_OPTIONS } from '../../src/protocol/docker-options.js';
import { errorOf } from '../fakes/world.js';

const NET = 'b428f65ce838648217a3c236a05ad428b2174f664bf9170615a85731a589d16f';

/** A CreateNetwork body as Docker 28 sends it (enable_ipv4 always at the top), with these `-o` options. */
function createNetwork(generic: Record<string, unknown>, top: Record<string, unknown> = {}) {
  return {
    NetworkID: NET,
    Options: { 'com.docker.network.enable_ipv4': true, 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': generic, ...top },
    IPv4Data: [{ AddressSpace: 'local', Gateway: '10.99.0.1/24', Pool: '10.99.0.0/24' }],
    IPv6Data: [],
  };
}

describe("Docker 28's bridge options", () => {
  test.each(Object.keys(REFUSED_OPTIONS))('%s is refused, saying tsbridge does not support it', (option) => {
    const e = errorOf(() => parseCreateNetwork(createNetwork({ [option]: 'x' })));
    expect(e.code).toBe('UNSUPPORTED_OPTION');
    expect(e.message).toBe(`option ${option} is not supported by tsbridge`);
  });

  // The gateway modes are options of the bridge kind (routed implemented, nat-unprotected and
  // isolated refused): test/unit/kinds-routed.test.ts.
  test.each(['com.docker.network.bridge.gateway_mode_ipv4', 'com.docker.network.bridge.gateway_mode_ipv6'])('%s=nat is the default: accepted, the same network as without it', (option) => {
    expect(parseCreateNetwork(createNetwork({ [option]: 'nat' }))).toEqual(parseCreateNetwork(createNetwork({})));
  });

  test('-o com.docker.network.enable_ipv4 / enable_ipv6 are applied by Docker (its top-level values): accepted, the top level wins', () => {
    const spec = parseCreateNetwork(
      createNetwork({ [DOCKER_APPLIED_OPTIONS.ENABLE_IPV4]: 'true', [DOCKER_APPLIED_OPTIONS.ENABLE_IPV6]: 'true' }, { 'com.docker.network.enable_ipv6': true }),
    );
    expect(spec.enableIpv6).toBe(true);
  });

  test('options Docker adds at the top level (enable_ipv4, enable_ipv6, internal) are never refused', () => {
    expect(() => parseCreateNetwork(createNetwork({}, { 'com.docker.network.enable_ipv4': true, 'com.docker.network.internal': false }))).not.toThrow();
  });

  test('unknown user options are still refused by name', () => {
    for (const option of ['com.docker.network.bridge.enable_icc_typo', 'com.docker.network.bridge.gateway_mode', 'io.tsbridge.x']) {
      const e = errorOf(() => parseCreateNetwork(createNetwork({ [option]: 'true' })));
      expect(e.code).toBe('UNSUPPORTED_OPTION');
      expect(e.message).toContain(option);
    }
  });
});
