/**
 * Issue 10: every option Docker 28's bridge driver accepts is implemented with Docker's meaning,
 * applied by Docker itself, or refused with a message saying tsbridge does not support it
 * (src/protocol/docker-options.ts, consulted by parseCreateNetwork for each user `-o` option).
 */
import { parseCreateNetwork } from '../../src/protocol/network.js';
import { DOCKER_APPLIED_OPTIONS, GATEWAY_MODE_OPTIONS, GATEWAY_MODES, REFUSED_OPTIONS } from '../../src/protocol/docker-options.js';
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

  test.each(Object.values(GATEWAY_MODE_OPTIONS))('%s=nat is what tsbridge does anyway: accepted', (option) => {
    const spec = parseCreateNetwork(createNetwork({ [option]: 'nat' }));
    expect(spec).toMatchObject({ kind: 'bridge', internal: false, settings: { masquerade: true } });
  });

  test.each(Object.values(GATEWAY_MODE_OPTIONS).flatMap((o) => ['nat-unprotected', 'routed', 'isolated'].map((m) => [o, m] as const)))(
    '%s=%s is refused, saying tsbridge does not support that mode',
    (option, mode) => {
      const e = errorOf(() => parseCreateNetwork(createNetwork({ [option]: mode }, { 'com.docker.network.internal': mode === 'isolated' })));
      expect(e.code).toBe('BAD_OPTION');
      expect(e.message).toContain(`${option}=${mode}`);
      expect(e.message).toContain(`tsbridge does not support gateway mode ${mode}`);
    },
  );

  test('routed is refused for now, saying it is planned', () => {
    const e = errorOf(() => parseCreateNetwork(createNetwork({ 'com.docker.network.bridge.gateway_mode_ipv4': 'routed' })));
    expect(e.message).toContain('not support gateway mode routed yet');
  });

  test('an unknown gateway mode is BAD_OPTION naming the modes Docker knows', () => {
    const e = errorOf(() => parseCreateNetwork(createNetwork({ 'com.docker.network.bridge.gateway_mode_ipv6': 'bridged' })));
    expect(e.code).toBe('BAD_OPTION');
    expect(e.message).toContain(Object.keys(GATEWAY_MODES).join(', '));
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
