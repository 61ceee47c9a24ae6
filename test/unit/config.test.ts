/** loadConfig: defaults, overrides from the environment, and refusals. */
import { loadConfig } from '../../src/config.js';

describe('loadConfig', () => {
  test('defaults with an empty environment', () => {
    expect(loadConfig({})).toEqual({
      socket: '/run/docker/plugins/tsbridge.sock',
      stateDir: '/var/lib/tsbridge',
      logLevel: 'info',
      defaultPools: '',
      commandTimeoutMs: 10_000,
      gcIntervalSec: 30,
      sysctlRoot: '/proc/sys',
      iptables: 'auto',
    });
  });

  test('every variable overrides its default', () => {
    expect(
      loadConfig({
        TSBRIDGE_SOCKET: '/tmp/x/tsb.sock',
        TSBRIDGE_STATE_DIR: '/tmp/x/state',
        TSBRIDGE_LOG_LEVEL: 'debug',
        TSBRIDGE_DEFAULT_POOLS: '10.210.0.0/16:24',
        TSBRIDGE_COMMAND_TIMEOUT_MS: '2500',
        TSBRIDGE_GC_INTERVAL: '0',
        TSBRIDGE_SYSCTL_ROOT: '/host/proc/sys',
        TSBRIDGE_IPTABLES: 'legacy',
      }),
    ).toEqual({
      socket: '/tmp/x/tsb.sock',
      stateDir: '/tmp/x/state',
      logLevel: 'debug',
      defaultPools: '10.210.0.0/16:24',
      commandTimeoutMs: 2500,
      gcIntervalSec: 0,
      sysctlRoot: '/host/proc/sys',
      iptables: 'legacy',
    });
  });

  test('empty strings mean the default', () => {
    const c = loadConfig({ TSBRIDGE_SOCKET: '', TSBRIDGE_STATE_DIR: '', TSBRIDGE_COMMAND_TIMEOUT_MS: '', TSBRIDGE_GC_INTERVAL: '' });
    expect(c.socket).toBe('/run/docker/plugins/tsbridge.sock');
    expect(c.stateDir).toBe('/var/lib/tsbridge');
    expect(c.commandTimeoutMs).toBe(10_000);
    expect(c.gcIntervalSec).toBe(30);
  });

  test('the log level is case-insensitive', () => {
    expect(loadConfig({ TSBRIDGE_LOG_LEVEL: 'WARN' }).logLevel).toBe('warn');
  });

  test('an unknown log level is refused, naming the variable', () => {
    expect(() => loadConfig({ TSBRIDGE_LOG_LEVEL: 'verbose' })).toThrow(/TSBRIDGE_LOG_LEVEL.*verbose/);
  });

  test.each(['abc', '-5', '1.5', '10s', ' 10'])('a command timeout of %j is refused', (v) => {
    expect(() => loadConfig({ TSBRIDGE_COMMAND_TIMEOUT_MS: v })).toThrow(/TSBRIDGE_COMMAND_TIMEOUT_MS/);
  });

  test('a zero command timeout is refused (it would fail every command)', () => {
    expect(() => loadConfig({ TSBRIDGE_COMMAND_TIMEOUT_MS: '0' })).toThrow(/TSBRIDGE_COMMAND_TIMEOUT_MS must be a positive integer/);
  });

  test.each(['-1', 'off', '30s'])('a GC interval of %j is refused', (v) => {
    expect(() => loadConfig({ TSBRIDGE_GC_INTERVAL: v })).toThrow(/TSBRIDGE_GC_INTERVAL/);
  });

  test('reads process.env when given nothing', () => {
    const saved = process.env.TSBRIDGE_STATE_DIR;
    process.env.TSBRIDGE_STATE_DIR = '/tmp/from-process-env';
    try {
      expect(loadConfig().stateDir).toBe('/tmp/from-process-env');
    } finally {
      if (saved === undefined) delete process.env.TSBRIDGE_STATE_DIR;
      else process.env.TSBRIDGE_STATE_DIR = saved;
    }
  });
});

test('a bad TSBRIDGE_IPTABLES is refused by name', () => {
  expect(() => loadConfig({ TSBRIDGE_IPTABLES: 'iptables-ng' })).toThrow(/TSBRIDGE_IPTABLES must be auto, nft or legacy/);
});
