/**
 * Proves the test helpers in test/lib against the real kernel: needs root and iproute2.
 */
import { Cleanup } from '../lib/cleanup.js';
import { createNetns, createOutsideWorld, linkExists, listNetns, startPeerRecorder } from '../lib/netns.js';
import { parsePeerReply, tcpRequest, udpRequest } from '../lib/probe.js';
import { CommandError, requireRoot, sh, shOk } from '../lib/run.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

beforeAll(() => requireRoot('test/integration/netns-lib.test.ts'));

describe('run', () => {
  test('sh returns stdout, shOk returns the exit code, sh throws with stderr', async () => {
    expect(await sh('echo', ['a b', 'c'])).toBe('a b c');
    const r = await shOk('ip', ['link', 'show', 'dev', 'tsbt-no-such']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/does not exist/);
    await expect(sh('ip', ['link', 'show', 'dev', 'tsbt-no-such'])).rejects.toThrow(/does not exist/);
    await expect(sh('ip', ['link', 'show', 'dev', 'tsbt-no-such'])).rejects.toBeInstanceOf(CommandError);
    expect((await shOk('tsbt-no-such-command', [])).exitCode).toBe(-1);
  });

  test('a command that outlives its timeout is killed', async () => {
    const r = await shOk('sleep', ['5'], { timeoutMs: 200 });
    expect(r.exitCode).toBe(-1);
    expect(r.stderr).toMatch(/timed out/i);
  });
});

describe('Cleanup', () => {
  test('runs undos newest first, keeps going past failures, never throws', async () => {
    const c = new Cleanup();
    const order: number[] = [];
    c.add(() => order.push(1));
    c.add(() => {
      throw new Error('boom');
    }, 'failing');
    c.add(async () => order.push(3));
    const warn = captureWarnings();
    const errors = await c.run();
    warn.restore();
    expect(order).toEqual([3, 1]);
    expect(errors.map((e) => e.message)).toEqual(['boom']);
    expect(warn.calls.join('\n')).toMatch(/failing.*boom/);
    expect(c.size).toBe(0);
    expect(await c.run()).toEqual([]);
  });
});

describe('createNetns', () => {
  test('creates a namespace with lo up, runs commands in it, deletes it', async () => {
    const ns = await createNetns('lib');
    cleanup.add(() => ns.delete());
    expect(ns.name).toMatch(/^tsbt-lib-[0-9a-f]{6}$/);
    expect(await listNetns()).toContain(ns.name);
    expect(await ns.exec('ip', ['-br', 'link', 'show', 'lo'])).toMatch(/UNKNOWN|UP/);
    await ns.exec('busybox', ['ping', '-c', '1', '-W', '2', '127.0.0.1']);

    await ns.delete();
    expect(await listNetns()).not.toContain(ns.name);
    await ns.delete(); // idempotent
  });

  test('delete kills processes started in the namespace', async () => {
    const ns = await createNetns('lib');
    cleanup.add(() => ns.delete());
    const p = ns.spawn('sleep', ['60']);
    await ns.delete();
    expect(p.exitCode !== null || p.signalCode !== null).toBe(true);
    expect(await listNetns()).not.toContain(ns.name);
  });
});

describe('createOutsideWorld', () => {
  test('is reachable from the host over IPv4 and IPv6, and routes back through it', async () => {
    const w = await createOutsideWorld();
    cleanup.add(() => w.delete());
    expect(w.hostIf.length).toBeLessThanOrEqual(15);
    expect(w.prefix4).toMatch(/^198\.18\.\d+\.0\/30$/);
    expect(w.prefix6).toMatch(/^fd5e:[0-9a-f]+:[0-9a-f]+::\/64$/);
    expect(await linkExists(w.hostIf)).toBe(true);
    expect(await sh('ip', ['route', 'show', w.prefix4])).toContain(`dev ${w.hostIf}`);

    await w.ns.exec('busybox', ['ping', '-c', '1', '-W', '3', w.hostAddr]);
    await w.ns.exec('busybox', ['ping', '-6', '-c', '1', '-W', '3', w.hostAddr6]);
    expect(await w.ns.exec('ip', ['route', 'show', 'default'])).toContain(`via ${w.hostAddr}`);
    expect(await w.ns.exec('ip', ['-6', 'route', 'show', 'default'])).toContain(`via ${w.hostAddr6}`);
  }, 20_000);

  test('the peer recorder sees the host address over TCP and UDP, IPv4 and IPv6', async () => {
    const w = await createOutsideWorld();
    cleanup.add(() => w.delete());
    const rec = await startPeerRecorder(w.ns, 7070);

    const tcp4 = parsePeerReply(await tcpRequest(w.nsAddr, rec.port));
    expect(tcp4.address).toBe(w.hostAddr);
    expect(await rec.waitForPeer((p) => p.proto === 'tcp')).toEqual({ proto: 'tcp', address: w.hostAddr, port: tcp4.port });

    const tcp6 = parsePeerReply(await tcpRequest(w.nsAddr6, rec.port));
    expect(tcp6.address).toBe(w.hostAddr6);

    const udp4 = parsePeerReply(await udpRequest(w.nsAddr, rec.port, 'ping4'));
    expect(udp4).toMatchObject({ address: w.hostAddr, payload: 'ping4' });
    const udp6 = parsePeerReply(await udpRequest(w.nsAddr6, rec.port, 'ping6'));
    expect(udp6).toMatchObject({ address: w.hostAddr6, payload: 'ping6' });

    expect(rec.peers.map((p) => `${p.proto} ${p.address}`)).toEqual([
      `tcp ${w.hostAddr}`,
      `tcp ${w.hostAddr6}`,
      `udp ${w.hostAddr}`,
      `udp ${w.hostAddr6}`,
    ]);
    await expect(rec.waitForPeer((p) => p.address === 'never', 200)).rejects.toThrow(/timed out/);
  }, 20_000);

  test('two worlds at once get different prefixes; delete leaves nothing behind', async () => {
    const [a, b] = await Promise.all([createOutsideWorld(), createOutsideWorld()]);
    cleanup.add(() => a.delete());
    cleanup.add(() => b.delete());
    expect(a.prefix4).not.toBe(b.prefix4);
    expect(a.prefix6).not.toBe(b.prefix6);
    await startPeerRecorder(a.ns); // a running process must not keep the namespace alive

    for (const w of [a, b]) {
      await w.delete();
      expect(await listNetns()).not.toContain(w.ns.name);
      expect(await linkExists(w.hostIf)).toBe(false);
      expect(await sh('ip', ['route', 'show', w.prefix4])).toBe('');
      expect(await sh('ip', ['-6', 'route', 'show', w.prefix6])).toBe('');
      await w.delete(); // idempotent
    }
  }, 30_000);
});

/** Captures console.warn without the jest object (not a global under ESM). */
function captureWarnings() {
  const calls: string[] = [];
  const orig = console.warn;
  console.warn = (...args: unknown[]) => void calls.push(args.map(String).join(' '));
  return { calls, restore: () => (console.warn = orig) };
}
