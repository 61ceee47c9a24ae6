/**
 * The state directory lock: one tsbridge per directory, the holder named, released on exit,
 * and a squatter on the lock's name (abstract sockets carry no permissions) does not stop
 * tsbridge. Two real plugin processes on one directory: test/integration/plugin-process.test.ts.
 */
import { mkdtempSync, rmSync, statSync, existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LOCK_FILE, LockedError, lockHolder, lockStateDir } from '../../src/server/lock.js';

let base: string;
beforeEach(() => {
  base = mkdtempSync(path.join(tmpdir(), 'tsbridge-lock-'));
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

const me = (instance: string) => ({ pid: process.pid, instance, socket: `/run/docker/plugins/${instance}.sock` });

test('a second lock on the same directory is refused, naming the holder; released, it can be taken again', async () => {
  const dir = path.join(base, 'state');
  const first = await lockStateDir(dir, me('one'));
  expect(first.warning).toBeUndefined();
  expect(statSync(dir).mode & 0o777).toBe(0o700); // created, private
  expect(statSync(path.join(dir, LOCK_FILE)).mode & 0o777).toBe(0o600);
  const err = await lockStateDir(dir, me('two')).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(LockedError);
  expect((err as Error).message).toBe(
    `state directory ${dir} is in use by another tsbridge: pid ${process.pid}, instance "one", socket /run/docker/plugins/one.sock, since ${(err as LockedError).holder.since}. ` +
      'Each instance needs its own state directory (TSBRIDGE_STATE_DIR); stop the other one first to take over its state.',
  );
  expect(await lockHolder(dir)).toMatchObject({ pid: process.pid, instance: 'one', stateDir: dir });
  await first.release();
  expect(existsSync(path.join(dir, LOCK_FILE))).toBe(false);
  const again = await lockStateDir(dir, me('two'));
  expect(await lockHolder(dir)).toMatchObject({ instance: 'two' });
  await again.release();
});

test('the same directory reached through another path is the same lock; another directory is another', async () => {
  const dir = path.join(base, 'state');
  const first = await lockStateDir(dir, me('one'));
  try {
    await expect(lockStateDir(path.join(base, '.', 'x', '..', 'state'), me('two'))).rejects.toBeInstanceOf(LockedError);
    const other = await lockStateDir(path.join(base, 'other'), me('two'));
    await other.release();
  } finally {
    await first.release();
  }
});

test('a process squatting the lock name that is not tsbridge does not stop it: it starts with a warning', async () => {
  const dir = path.join(base, 'state');
  const probe = await lockStateDir(dir, me('probe'));
  const name = probe.name;
  await probe.release();
  const squatter = net.createServer((c) => c.end('{"pid":1,"token":"guess"}\n'));
  await new Promise<void>((r) => squatter.listen(`\0${name}`, () => r()));
  try {
    const lock = await lockStateDir(dir, me('one'));
    expect(lock.warning).toMatch(/held by a process that is not tsbridge \(it claims pid 1\): running without the lock/);
    expect(JSON.parse(readFileSync(path.join(dir, LOCK_FILE), 'utf8'))).toMatchObject({ instance: 'one' });
    await lock.release();
  } finally {
    await new Promise<void>((r) => squatter.close(() => r()));
  }
});
