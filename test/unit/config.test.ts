/** loadConfig: defaults, overrides from the environment, and refusals; the CLI's instance rule. */
import { defaultStateDir, loadConfig, metricsAddr, resolveInstance } from '../../src/config.js';

describe('loadConfig', () => {
  test('defaults with an empty environment', () => {
    expect(loadConfig({})).toEqual({
      socket: '/run/docker/plugins/tsbridge.sock',
      instance: 'tsbridge',
      stateDir: '/var/lib/tsbridge',
      logLevel: 'info',
      defaultPools: '',
      commandTimeoutMs: 10_000,
      gcIntervalSec: 30,
      sysctlRoot: '/proc/sys',
      iptables: 'auto',
      metrics: null,
      dockerSocket: null,
      gcGraceSec: 60,
      fwmark: 0x1000000,
      firewallWatch: 'monitor',
      etcd: { endpoints: [], ca: '', cert: '', key: '', prefix: '/tsbridge/', leaseTtlSec: 15, timeoutMs: 3000, vtep: '' },
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
        TSBRIDGE_METRICS_ADDR: '127.0.0.1:9477',
        TSBRIDGE_DOCKER_SOCKET: 'unix:///var/run/docker.sock',
        TSBRIDGE_GC_GRACE: '5',
        TSBRIDGE_FWMARK: '0x200000',
        TSBRIDGE_FIREWALL_WATCH: 'sweep',
        TSBRIDGE_ETCD_ENDPOINTS: 'https://10.0.0.5:2379, https://etcd2.example:2379',
        TSBRIDGE_ETCD_CA: '/etc/tsbridge/ca.pem',
        TSBRIDGE_ETCD_CERT: '/etc/tsbridge/host.pem',
        TSBRIDGE_ETCD_KEY: '/etc/tsbridge/host-key.pem',
        TSBRIDGE_ETCD_PREFIX: '/prod',
        TSBRIDGE_ETCD_LEASE_TTL: '5',
        TSBRIDGE_ETCD_TIMEOUT_MS: '1500',
        TSBRIDGE_VTEP_ADDRESS: '10.0.0.9',
      }),
    ).toEqual({
      socket: '/tmp/x/tsb.sock',
      instance: 'tsb',
      stateDir: '/tmp/x/state',
      logLevel: 'debug',
      defaultPools: '10.210.0.0/16:24',
      commandTimeoutMs: 2500,
      gcIntervalSec: 0,
      sysctlRoot: '/host/proc/sys',
      iptables: 'legacy',
      metrics: { host: '127.0.0.1', port: 9477 },
      dockerSocket: '/var/run/docker.sock',
      gcGraceSec: 5,
      fwmark: 0x200000,
      firewallWatch: 'sweep',
      etcd: {
        endpoints: ['https://10.0.0.5:2379', 'https://etcd2.example:2379'],
        ca: '/etc/tsbridge/ca.pem',
        cert: '/etc/tsbridge/host.pem',
        key: '/etc/tsbridge/host-key.pem',
        prefix: '/prod/',
        leaseTtlSec: 5,
        timeoutMs: 1500,
        vtep: '10.0.0.9',
      },
    });
  });

  test.each([
    ['TSBRIDGE_DOCKER_SOCKET', 'docker.sock', /absolute path of Docker's API socket/],
    ['TSBRIDGE_FWMARK', '0x3', /a single bit/],
    ['TSBRIDGE_FWMARK', '0', /a single bit/],
    ['TSBRIDGE_FWMARK', 'mark', /a single bit/],
    ['TSBRIDGE_FIREWALL_WATCH', 'inotify', /monitor or sweep/],
    ['TSBRIDGE_GC_GRACE', '-1', /whole number/],
  ])('%s=%s is refused', (key, value, why) => {
    expect(() => loadConfig({ [key]: value })).toThrow(why);
  });

  test('TSBRIDGE_DOCKER_SOCKET off or empty: the plugin never asks Docker; a decimal mark bit is fine', () => {
    expect(loadConfig({ TSBRIDGE_DOCKER_SOCKET: 'off' }).dockerSocket).toBeNull();
    expect(loadConfig({ TSBRIDGE_DOCKER_SOCKET: '' }).dockerSocket).toBeNull();
    expect(loadConfig({ TSBRIDGE_FWMARK: '16777216' }).fwmark).toBe(0x1000000);
  });

  test.each([
    [{ TSBRIDGE_ETCD_ENDPOINTS: '10.0.0.5:2379' }, /not a URL|must be http/],
    [{ TSBRIDGE_ETCD_ENDPOINTS: 'unix:///run/etcd.sock' }, /must be http:\/\/HOST:PORT or https/],
    [{ TSBRIDGE_ETCD_ENDPOINTS: 'https://10.0.0.5:2379' }, /needs TSBRIDGE_ETCD_CA/],
    [{ TSBRIDGE_ETCD_ENDPOINTS: 'http://10.0.0.5:2379', TSBRIDGE_ETCD_CA: '/ca.pem' }, /use https:\/\/ for every endpoint/],
    [{ TSBRIDGE_ETCD_CERT: '/c.pem' }, /go together/],
    [{ TSBRIDGE_ETCD_LEASE_TTL: '1' }, /at least 2 seconds/],
    [{ TSBRIDGE_ETCD_TIMEOUT_MS: '0' }, /TSBRIDGE_ETCD_TIMEOUT_MS must be a positive integer/],
    [{ TSBRIDGE_VTEP_ADDRESS: 'eth1' }, /TSBRIDGE_VTEP_ADDRESS must be an IPv4 or IPv6 address/],
    [{ TSBRIDGE_ETCD_PREFIX: 'tsbridge' }, /must start with \//],
  ])('the etcd settings %j are refused', (env, why) => {
    expect(() => loadConfig(env)).toThrow(why);
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

describe('the socket and the state directory of an instance', () => {
  test.each(['9000', 'tsbridge.sock', './run/x.sock', 'run/docker/plugins/tsbridge.sock'])('TSBRIDGE_SOCKET=%j (not absolute) is refused before anything listens', (v) => {
    expect(() => loadConfig({ TSBRIDGE_SOCKET: v })).toThrow(/TSBRIDGE_SOCKET must be an absolute path to a Unix socket/);
  });

  test('a socket file name that cannot be an instance name is refused', () => {
    expect(() => loadConfig({ TSBRIDGE_SOCKET: '/run/docker/plugins/a b.sock' })).toThrow(/socket name "a b"/);
  });

  test('the default state directory follows the instance; the default instance keeps /var/lib/tsbridge', () => {
    expect(loadConfig({ TSBRIDGE_SOCKET: '/run/docker/plugins/tsbridge.sock' }).stateDir).toBe('/var/lib/tsbridge');
    expect(loadConfig({ TSBRIDGE_SOCKET: '/run/docker/plugins/lab.sock' })).toMatchObject({ instance: 'lab', stateDir: '/var/lib/tsbridge-lab' });
    expect(loadConfig({ TSBRIDGE_SOCKET: '/run/docker/plugins/lab.sock', TSBRIDGE_STATE_DIR: '/srv/lab' }).stateDir).toBe('/srv/lab');
    expect(defaultStateDir('tsbridge')).toBe('/var/lib/tsbridge');
  });

  test('TSBRIDGE_STATE_DIR must be absolute', () => {
    expect(() => loadConfig({ TSBRIDGE_STATE_DIR: 'state' })).toThrow(/TSBRIDGE_STATE_DIR must be an absolute path/);
  });
});

describe('TSBRIDGE_METRICS_ADDR', () => {
  test.each([
    ['127.0.0.1:9477', { host: '127.0.0.1', port: 9477 }],
    ['0.0.0.0:9477', { host: '0.0.0.0', port: 9477 }],
    ['[::1]:9477', { host: '::1', port: 9477 }],
    ['127.0.0.1:0', { host: '127.0.0.1', port: 0 }],
    ['', null],
    [undefined, null],
  ])('%j → %j', (raw, want) => {
    expect(metricsAddr(raw)).toEqual(want);
  });

  test.each(['9477', ':9477', 'localhost:9477', '127.0.0.1', '127.0.0.1:65536', '::1:9477', '[127.0.0.1]:9477', '1.2.3:80', '127.0.0.1:9477/metrics'])('%j is refused, naming the variable', (raw) => {
    expect(() => loadConfig({ TSBRIDGE_METRICS_ADDR: raw })).toThrow(/TSBRIDGE_METRICS_ADDR must be IPv4:PORT or \[IPv6\]:PORT/);
  });
});

describe('resolveInstance (the tsbridge command)', () => {
  test('nothing set: the default instance', () => {
    expect(resolveInstance({}, {})).toEqual({ instance: 'tsbridge', socket: '/run/docker/plugins/tsbridge.sock', stateDir: '/var/lib/tsbridge' });
  });

  test("the environment an install's wrapper sets: its socket and its state directory", () => {
    const env = { TSBRIDGE_SOCKET: '/run/docker/plugins/0123abcd/tsbridge.sock', TSBRIDGE_STATE_DIR: '/var/lib/tsbridge-plugin' };
    expect(resolveInstance({}, env)).toEqual({ instance: 'tsbridge', socket: env.TSBRIDGE_SOCKET, stateDir: '/var/lib/tsbridge-plugin' });
    expect(resolveInstance({}, { TSBRIDGE_SOCKET: '/run/docker/plugins/lab.sock' }).stateDir).toBe('/var/lib/tsbridge-lab');
  });

  test('--instance wins over the environment, for both', () => {
    const env = { TSBRIDGE_SOCKET: '/run/docker/plugins/x/tsbridge.sock', TSBRIDGE_STATE_DIR: '/var/lib/tsbridge-plugin' };
    expect(resolveInstance({ instance: 'lab' }, env)).toEqual({ instance: 'lab', socket: '/run/docker/plugins/lab.sock', stateDir: '/var/lib/tsbridge-lab' });
    expect(resolveInstance({ instance: 'tsbridge' }, env).stateDir).toBe('/var/lib/tsbridge');
  });

  test('--socket names the instance as --instance does; --state-dir overrides the directory alone', () => {
    expect(resolveInstance({ instance: 'lab', stateDir: '/srv/s' }, {})).toEqual({ instance: 'lab', socket: '/run/docker/plugins/lab.sock', stateDir: '/srv/s' });
    const env = { TSBRIDGE_STATE_DIR: '/var/lib/tsbridge-plugin' };
    expect(resolveInstance({ socket: '/tmp/t/other.sock' }, env)).toEqual({ instance: 'other', socket: '/tmp/t/other.sock', stateDir: '/var/lib/tsbridge-other' });
    expect(resolveInstance({ stateDir: '/srv/s' }, env)).toEqual({ instance: 'tsbridge', socket: '/run/docker/plugins/tsbridge.sock', stateDir: '/srv/s' });
  });

  test('a bad instance name is refused', () => {
    expect(() => resolveInstance({ instance: '../etc' }, {})).toThrow(/instance name/);
  });
});
