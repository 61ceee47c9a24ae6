/**
 * The indexed port allocator against a plain reference (every binding checked against every
 * entry, every search from the start of its range: what tsbridge did before it was indexed) on
 * random inputs, plus the cap and the shapes that made the old one quadratic.
 */
import fc from 'fast-check';
import { allocatePorts, hostIpsOverlap, MAX_PORT_BINDINGS, type Listener, type PortContext } from '../../src/driver/ports.js';
import { fail, isTsbridgeError } from '../../src/errors.js';
import type { PortRequest } from '../../src/domain/types.js';
import type { PortMapping, Proto } from '../../src/state/types.js';
import { errorOf } from '../fakes/world.js';

/** The obvious allocator: same checks, same order, no index. Quadratic and then some. */
function reference(reqs: PortRequest[], ctx: PortContext): PortMapping[] {
  const out: PortMapping[] = [];
  const busy = (proto: Proto, ip: string, port: number): string | null => {
    for (const t of ctx.taken) {
      if (t.mapping.proto === proto && t.mapping.hostPort === port && hostIpsOverlap(t.mapping.hostIp, ip)) return ` (published by ${t.owner})`;
    }
    for (const m of out) if (m.proto === proto && m.hostPort === port && hostIpsOverlap(m.hostIp, ip)) return ' (twice in this request)';
    for (const l of ctx.listening) if (l.proto === proto && l.port === port && hostIpsOverlap(l.ip, ip)) return ' (a host process listens on it)';
    return null;
  };
  for (const r of reqs) {
    const hostIp = r.hostIp === '' ? ctx.defaultHostIp : r.hostIp;
    // Host address checks are shared code (checkHostIp): run them through the real allocator.
    allocatePorts([{ ...r, hostIp, hostPort: 1, hostPortEnd: 1 }], { ...ctx, taken: [], listening: [] });
    const [lo, hi] = r.hostPort === 0 ? ctx.ephemeral : [r.hostPort, r.hostPortEnd > r.hostPort ? r.hostPortEnd : r.hostPort];
    let chosen = 0;
    let lastReason = '';
    for (let p = lo; p <= hi; p++) {
      const why = busy(r.proto, hostIp, p);
      if (why === null) {
        chosen = p;
        break;
      }
      lastReason = why;
    }
    if (chosen === 0) {
      if (lo === hi) fail('PORT_IN_USE', { hostIp: hostIp.includes(':') ? `[${hostIp}]` : hostIp || '0.0.0.0', port: lo, proto: r.proto, owner: lastReason });
      fail('NO_FREE_PORT', { proto: r.proto, range: `${lo}-${hi}` });
    }
    out.push({ proto: r.proto, hostIp, hostPort: chosen, containerPort: r.containerPort });
  }
  return out;
}

/** The outcome of a run: the mappings, or the error's code and message. */
function outcome(fn: () => PortMapping[]): unknown {
  try {
    return { ok: fn() };
  } catch (e) {
    if (isTsbridgeError(e)) return { code: e.code, message: e.message };
    throw e;
  }
}

// A small world so that collisions are frequent: 12 ports, a few addresses of each kind.
const IPS = ['', '0.0.0.0', '::', '127.0.0.1', '127.0.0.2', '10.0.0.1', '2001:db8::1', '2001:db8::2', '::ffff:127.0.0.1', '::ffff:0.0.0.0'];
const proto = fc.constantFrom<Proto>('tcp', 'udp', 'sctp');
const ip = fc.constantFrom(...IPS);
const port = fc.integer({ min: 1, max: 12 });
const request: fc.Arbitrary<PortRequest> = fc.record({
  proto,
  containerPort: fc.integer({ min: 1, max: 65535 }),
  hostIp: fc.constantFrom(...IPS.filter((a) => !a.startsWith('::ffff:'))),
  hostPort: fc.oneof(fc.constant(0), port),
  hostPortEnd: fc.oneof(fc.constant(0), port),
});
const mapping: fc.Arbitrary<PortMapping> = fc.record({ proto, hostIp: ip, hostPort: port, containerPort: fc.constant(80) });
const listener: fc.Arbitrary<Listener> = fc.record({ proto, ip, port });
const context: fc.Arbitrary<PortContext> = fc.record({
  taken: fc.array(fc.record({ mapping, owner: fc.constantFrom('endpoint a', 'endpoint b') }), { maxLength: 12 }),
  listening: fc.array(listener, { maxLength: 12 }),
  ephemeral: fc.constantFrom<[number, number]>([3, 9], [1, 12], [5, 5], [10, 12]),
  defaultHostIp: fc.constantFrom('', '127.0.0.1', '10.0.0.1'),
  families: fc.constantFrom({ v4: true, v6: true }, { v4: true, v6: false }, { v4: false, v6: true }),
});

describe('allocatePorts against the reference', () => {
  test('same mappings, or the same error, on random requests (seeded)', () => {
    fc.assert(
      fc.property(fc.array(request, { maxLength: 25 }), context, (reqs, ctx) => {
        expect(outcome(() => allocatePorts(reqs, ctx))).toEqual(outcome(() => reference(reqs, ctx)));
      }),
      { seed: 20_240_611, numRuns: 3000 },
    );
  });

  test('a crowded ephemeral range searched by many addresses at once', () => {
    // Every other port busy on all IPv4 addresses, the rest taken by one address: the searches
    // of the other addresses must find the same ports the reference finds.
    const taken = Array.from({ length: 200 }, (_, i) => ({ mapping: { proto: 'tcp' as const, hostIp: i % 2 ? '0.0.0.0' : '10.0.0.1', hostPort: 1000 + i, containerPort: 80 }, owner: `endpoint ${i}` }));
    const reqs: PortRequest[] = Array.from({ length: 300 }, (_, i) => ({ proto: 'tcp', containerPort: 80, hostIp: `10.0.${i % 3}.1`, hostPort: 0, hostPortEnd: 0 }));
    const ctx: PortContext = { taken, listening: [], ephemeral: [1000, 1500], defaultHostIp: '' };
    expect(allocatePorts(reqs, ctx)).toEqual(reference(reqs, ctx));
  });
});

describe('the cap on bindings per request', () => {
  const bindings = (n: number): PortRequest[] => Array.from({ length: n }, () => ({ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 0, hostPortEnd: 0 }));
  const ctx: PortContext = { taken: [], listening: [], ephemeral: [1, 65535], defaultHostIp: '' };

  test(`${MAX_PORT_BINDINGS} bindings are allocated, one more is TOO_MANY_PORTS`, () => {
    expect(allocatePorts(bindings(MAX_PORT_BINDINGS), ctx)).toHaveLength(MAX_PORT_BINDINGS);
    expect(errorOf(() => allocatePorts(bindings(MAX_PORT_BINDINGS + 1), ctx))).toMatchObject({
      code: 'TOO_MANY_PORTS',
      message: `${MAX_PORT_BINDINGS + 1} port bindings in one request: tsbridge publishes at most ${MAX_PORT_BINDINGS} per container and network`,
    });
  });

  test('-p 20000-23999 with HostPort 0 (what -P sends for a range): distinct ports from the ephemeral range, in order', () => {
    const got = allocatePorts(bindings(4000), { ...ctx, ephemeral: [32768, 60999], listening: [{ proto: 'tcp', ip: '', port: 32770 }] });
    const ports = got.map((m) => m.hostPort);
    expect(new Set(ports).size).toBe(4000);
    expect(ports.slice(0, 4)).toEqual([32768, 32769, 32771, 32772]);
    expect(ports[3999]).toBe(32768 + 4000);
  });

  test('a full ephemeral range is NO_FREE_PORT', () => {
    expect(errorOf(() => allocatePorts(bindings(11), { ...ctx, ephemeral: [100, 109] })).code).toBe('NO_FREE_PORT');
  });
});
