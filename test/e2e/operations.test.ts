/**
 * The operator's view against a real dockerd: `tsbridge status` and `tsbridge ports` (the built
 * command) show Docker's network and container names for real networks and containers, `tsbridge
 * health` answers, metrics on TSBRIDGE_METRICS_ADDR are scraped with curl and parsed, and an
 * unknown `--ipam-opt` is refused by name, leaving no network behind.
 */
import path from 'node:path';
import { Cleanup } from '../lib/cleanup.js';
import { docker, dockerOk, removeContainers, removeNetworks, requireDocker, uniqueName } from '../lib/docker.js';
import { parseExposition } from '../lib/http.js';
import { REPO_ROOT, startPlugin, type PluginHandle } from '../lib/plugin.js';
import { sh, shOk } from '../lib/run.js';
import { TEST_IMAGE } from './helpers.js';

const DRIVER = 'tsbridge-e2e-ops';
const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli.js');
const cleanup = new Cleanup();
let plugin: PluginHandle;
let metricsAddr: string;
const net = uniqueName('ops');
const web = uniqueName('web');

/** The built command with the environment an install's wrapper sets for this instance. */
function tsbridge(args: string[]) {
  return shOk(process.execPath, [CLI, ...args], { env: { TSBRIDGE_SOCKET: plugin.socket, TSBRIDGE_STATE_DIR: plugin.stateDir } });
}

beforeAll(async () => {
  await requireDocker();
  plugin = await startPlugin({ name: DRIVER, env: { TSBRIDGE_METRICS_ADDR: '127.0.0.1:0' } });
  cleanup.add(() => plugin.dispose(), 'plugin');
  const line = plugin.logs().map((l) => JSON.parse(l) as Record<string, string>).find((l) => l.message === 'metrics listening');
  metricsAddr = line!.address!;
  cleanup.add(() => removeNetworks([net]), net);
  await docker(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--subnet', '10.212.51.0/24', net]);
  cleanup.add(() => removeContainers([web]), web);
  await docker(['run', '-d', '--network', net, '--name', web, '-p', '21871:80', '-p', '127.0.0.1:21872:53/udp', TEST_IMAGE, 'sleep', '600']);
});

afterAll(async () => {
  await cleanup.run();
});

test('tsbridge ports names the container', async () => {
  const r = await tsbridge(['ports']);
  expect(r.exitCode).toBe(0);
  expect(r.stderr).toBe('');
  const lines = r.stdout.split('\n');
  expect(lines[0]).toMatch(/^NETWORK +BRIDGE +ENDPOINT +NAME +PROTO +HOST +CONTAINER$/);
  expect(lines.filter((l) => l.includes(` ${web} `)).map((l) => l.split(/ +/).slice(4).join(' '))).toEqual([
    'tcp 0.0.0.0:21871 10.212.51.2:80',
    'udp 127.0.0.1:21872 10.212.51.2:53',
  ]);
  const json = JSON.parse((await tsbridge(['ports', '--json'])).stdout) as { networkName: string; containerName: string }[];
  expect(json.map((x) => [x.networkName, x.containerName])).toEqual([[net, web], [net, web]]);
});

test('tsbridge status: the plugin, the network and the container by name', async () => {
  const r = await tsbridge(['status']);
  expect(r.exitCode).toBe(0);
  expect(r.stdout).toMatch(new RegExp(`^instance    ${DRIVER}$`, 'm'));
  expect(r.stdout).toMatch(/^plugin      serving, healthy; pid \d+/m);
  expect(r.stdout).toMatch(/^iptables    (nft|legacy) /m);
  const id = await docker(['network', 'inspect', '-f', '{{.Id}}', net]);
  expect(r.stdout).toContain(`${id.slice(0, 12)}   ${net}   bridge   tsb-${id.slice(0, 11)}   10.212.51.0/24   10.212.51.1`);
  expect(r.stdout).toMatch(new RegExp(`${id.slice(0, 12)}   ${web}   [0-9a-f]{12}   10\\.212\\.51\\.2/24 .*21871->80/tcp, 127\\.0\\.0\\.1:21872->53/udp`));
  const st = JSON.parse((await tsbridge(['status', '--json'])).stdout);
  expect(st.plugin).toMatchObject({ serving: true, healthy: true, instance: DRIVER, networks: 1, endpoints: 1 });
});

test('tsbridge health: exit 0 while serving', async () => {
  const r = await tsbridge(['health']);
  expect(r.exitCode).toBe(0);
  expect(r.stdout).toMatch(new RegExp(`^tsbridge \\(instance ${DRIVER}\\): serving, healthy`));
});

test('metrics, scraped with curl', async () => {
  const text = await sh('curl', ['-sf', `http://${metricsAddr}/metrics`]);
  const m = parseExposition(text);
  expect(m.get(`tsbridge_info{instance="${DRIVER}",version="0.1.0"}`)).toBe(1);
  for (const method of ['NetworkDriver.CreateNetwork', 'NetworkDriver.CreateEndpoint', 'NetworkDriver.Join', 'NetworkDriver.ProgramExternalConnectivity', 'IpamDriver.RequestPool']) {
    expect({ method, n: m.get(`tsbridge_calls_total{method="${method}",outcome="ok"}`) }).toEqual({ method, n: 1 });
  }
  expect(m.get('tsbridge_networks')).toBe(1);
  expect(m.get('tsbridge_endpoints{joined="true"}')).toBe(1);
  expect(m.get('tsbridge_published_ports{proto="tcp"}')).toBe(1);
  expect(m.get('tsbridge_published_ports{proto="udp"}')).toBe(1);
  expect(m.get('tsbridge_kernel_command_duration_seconds_count{command="nft"}')).toBeGreaterThan(0);
});

test('an unknown --ipam-opt is refused by name, and no network is left', async () => {
  const bad = uniqueName('badopt');
  cleanup.add(() => removeNetworks([bad]), bad);
  const r = await dockerOk(['network', 'create', '-d', DRIVER, '--ipam-driver', DRIVER, '--ipam-opt', 'foo=bar', bad]);
  expect(r.exitCode).not.toBe(0);
  expect(r.stderr).toContain('option foo is not supported by tsbridge');
  expect((await dockerOk(['network', 'inspect', bad])).exitCode).not.toBe(0);
  expect(JSON.parse((await tsbridge(['status', '--json'])).stdout).pools).toHaveLength(1);
});
