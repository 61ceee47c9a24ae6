import { ExecRunner } from '../../src/kernel/real/exec.js';
import { isTsbridgeError } from '../../src/errors.js';

describe('ExecRunner', () => {
  test('runs with an argument array and returns output', async () => {
    const r = await new ExecRunner(60_000).run('printf', ['%s|%s', 'a b', '$HOME;']);
    expect(r.stdout).toBe('a b|$HOME;'); // no shell: nothing expanded or split
  });

  test('a non-zero exit is a KERNEL error naming the command and its stderr', async () => {
    await expect(new ExecRunner(60_000).run('sh', ['-c', 'echo boom >&2; exit 3'])).rejects.toThrow(/sh -c .*failed: boom/);
  });

  test('allowFail returns the exit code instead', async () => {
    expect((await new ExecRunner(60_000).run('false', [], { allowFail: true })).exitCode).toBe(1);
  });

  test('a hung command is killed with its whole process group at the deadline', async () => {
    const t0 = Date.now();
    // The grandchild `sleep` keeps the pipes open: killing only `sh` would not end the call.
    const err = await new ExecRunner(300).run('sh', ['-c', 'sleep 30 & wait']).catch((e: unknown) => e);
    expect(isTsbridgeError(err, 'TIMEOUT')).toBe(true);
    expect((err as Error).message).toMatch(/timed out after 300 ms/);
    expect(Date.now() - t0).toBeLessThan(10_000); // a bound on hanging, not a performance figure
  });
});
