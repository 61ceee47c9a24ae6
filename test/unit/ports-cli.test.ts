/**
 * `tsbridge ports`: rows from a state document, the table, --json, and the command line over a
 * state file in a temporary directory (read-only: the file is left byte for byte).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCli } from '../../src/cli.js';
import { DockerUnreachable, type DockerApi, type DockerNetwork } from '../../src/docker/client.js';
import { formatTable, portRows } from '../../src/cli/ports.js';
import { encodeState } from '../../src/state/disk.js';
import { emptyState, type Endpoint, type Network, type State } from '../../src/state/types.js';

const NET = 'aaaa000000000000000000000000000000000000000000000000000000000001';
const NET2 = 'bbbb000000000000000000000000000000000000000000000000000000000002';
const EP1 = '1111000000000000000000000000000000000000000000000000000000000001';
const EP2 = '2222000000000000000000000000000000000000000000000000000000000002';

function net(id: string, bridge: string): Network {
  return {
    id, kind: 'bridge', phase: 'ready', mtu: 1500, internal: false, ifacePrefix: 'eth', enableIpv6: true, ipv4: [], ipv6: [],
    settings: { bridge, bridgeNamedByUser: false, icc: true, masquerade: true, hostBindingIpv4: '', snatIpv4: '', inhibitIpv4: false },
  };
}

/** The state as its file holds it. */
const file = (s: State) => JSON.stringify(encodeState(s));

function ep(over: Partial<Endpoint> & { id: string; networkId: string }): Endpoint {
  return { phase: 'ready', hostVeth: 'tsv' + over.id.slice(0, 12), peerVeth: 'tsc' + over.id.slice(0, 12), mac: '02:00:00:00:00:01', ipv4: null, ipv6: null, joined: true, ports: [], ...over };
}

function state(): State {
  const s = emptyState();
  s.networks[NET] = net(NET, 'tsb-aaaa0000000');
  s.networks[NET2] = net(NET2, 'tsb-bbbb0000000');
  s.endpoints[EP1] = ep({
    id: EP1, networkId: NET, ipv4: '10.216.1.2/24', ipv6: 'fd5e:1::2/64',
    ports: [
      { proto: 'tcp', hostIp: '', hostPort: 8080, containerPort: 80 },
      { proto: 'udp', hostIp: '127.0.0.1', hostPort: 5353, containerPort: 53 },
    ],
  });
  s.endpoints[EP2] = ep({
    id: EP2, networkId: NET2, ipv4: '10.216.2.2/24',
    ports: [
      { proto: 'sctp', hostIp: '0.0.0.0', hostPort: 3868, containerPort: 3868 },
      { proto: 'tcp', hostIp: '::', hostPort: 8443, containerPort: 443 },
    ],
  });
  s.endpoints['3333'] = ep({ id: '3333', networkId: NET, ipv4: '10.216.1.3/24' }); // nothing published
  return s;
}

describe('portRows', () => {
  test('one row per forwarded family, with the container address of that family', () => {
    expect(portRows(state()).map((r) => `${r.networkId.slice(0, 4)} ${r.endpointId.slice(0, 4)} ${r.proto} [${r.hostIp}]:${r.hostPort} v${r.family} ${r.containerIp}:${r.containerPort}`)).toEqual([
      'aaaa 1111 udp [127.0.0.1]:5353 v4 10.216.1.2:53',
      'aaaa 1111 tcp []:8080 v4 10.216.1.2:80',
      'aaaa 1111 tcp []:8080 v6 fd5e:1::2:80',
      'bbbb 2222 sctp [0.0.0.0]:3868 v4 10.216.2.2:3868',
      'bbbb 2222 tcp [::]:8443 vnull :443', // asked for IPv6, the container has none
    ]);
  });

  test('an empty state has no rows', () => {
    expect(portRows(emptyState())).toEqual([]);
  });
});

describe('formatTable', () => {
  test('columns aligned, short IDs, host side as users write it', () => {
    expect(formatTable(portRows(state()))).toBe(
      [
        'NETWORK        BRIDGE            ENDPOINT       PROTO   HOST             CONTAINER',
        'aaaa00000000   tsb-aaaa0000000   111100000000   udp     127.0.0.1:5353   10.216.1.2:53',
        'aaaa00000000   tsb-aaaa0000000   111100000000   tcp     0.0.0.0:8080     10.216.1.2:80',
        'aaaa00000000   tsb-aaaa0000000   111100000000   tcp     [::]:8080        [fd5e:1::2]:80',
        'bbbb00000000   tsb-bbbb0000000   222200000000   sctp    0.0.0.0:3868     10.216.2.2:3868',
        'bbbb00000000   tsb-bbbb0000000   222200000000   tcp     [::]:8443        (no IPv6 address):443',
        '',
      ].join('\n'),
    );
  });

  test('--full keeps the 64-digit IDs', () => {
    expect(formatTable(portRows(state()), { full: true })).toContain(`${NET}   tsb-aaaa0000000   ${EP1}   udp`);
  });
});

describe('runCli', () => {
  let dir: string;
  let out: string;
  let err: string;
  // Docker is not asked unless a test gives one (the machine's own dockerd must not matter).
  const io = (docker: DockerApi | null = null) => ({ out: (s: string) => void (out += s), err: (s: string) => void (err += s), env: { TSBRIDGE_STATE_DIR: dir }, docker });

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'tsbridge-cli-'));
    out = '';
    err = '';
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  test('ports: the table from $TSBRIDGE_STATE_DIR/state.json, which stays untouched', async () => {
    const text = file(state());
    writeFileSync(path.join(dir, 'state.json'), text);
    expect(await runCli(['ports'], io())).toBe(0);
    expect(out).toBe(formatTable(portRows(state())));
    expect(err).toBe('');
    expect(readFileSync(path.join(dir, 'state.json'), 'utf8')).toBe(text);
  });

  test('a version 1 state file (older tsbridge) is read as is, and nothing is written beside it', async () => {
    const v1 = readFileSync(new URL('../fixtures/state/v1-state.json', import.meta.url), 'utf8');
    writeFileSync(path.join(dir, 'state.json'), v1);
    expect(await runCli(['ports'], io())).toBe(0);
    expect(out).toContain('tsb-aaaa0000000');
    expect(out).toContain('127.0.0.1:5353');
    expect(readFileSync(path.join(dir, 'state.json'), 'utf8')).toBe(v1);
    expect(readdirSync(dir)).toEqual(['state.json']);
  });

  test('--json: the rows with full IDs; --network filters by ID prefix', async () => {
    writeFileSync(path.join(dir, 'state.json'), file(state()));
    expect(await runCli(['ports', '--json', '--network', 'bbbb'], io())).toBe(0);
    const rows = JSON.parse(out) as unknown[];
    expect(rows).toEqual(portRows(state()).filter((r) => r.networkId === NET2).map((r) => ({ ...r, networkName: null, containerName: null })));
    expect(rows[0]).toEqual({
      networkId: NET2, bridge: 'tsb-bbbb0000000', endpointId: EP2, proto: 'sctp', hostIp: '0.0.0.0', hostPort: 3868, family: 4, containerIp: '10.216.2.2', containerPort: 3868,
      networkName: null, containerName: null,
    });
  });

  test('--state-dir wins over the environment', async () => {
    const other = mkdtempSync(path.join(tmpdir(), 'tsbridge-cli-'));
    try {
      writeFileSync(path.join(other, 'state.json'), file(state()));
      expect(await runCli(['ports', `--state-dir=${other}`], io())).toBe(0);
      expect(out).toContain('127.0.0.1:5353');
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  test('no state file: no ports, and a hint on stderr', async () => {
    expect(await runCli(['ports'], io())).toBe(0);
    expect(out).toBe('no published ports\n');
    expect(err).toContain(`no state file at ${path.join(dir, 'state.json')}`);
  });

  test('a corrupt state file: exit 1 with the reason', async () => {
    writeFileSync(path.join(dir, 'state.json'), '{ not json');
    expect(await runCli(['ports'], io())).toBe(1);
    expect(err).toMatch(/not valid JSON/);
  });

  test('bad usage: exit 2 with the usage', async () => {
    expect(await runCli(['ports', '--frobnicate'], io())).toBe(2);
    expect(err).toMatch(/unknown option '--frobnicate'[^]*Usage: tsbridge ports/);
    err = '';
    expect(await runCli(['portz'], io())).toBe(2);
    expect(err).toMatch(/unknown command 'portz'/);
    expect(await runCli(['ports', '--network'], io())).toBe(2);
    expect(await runCli(['ports', '--instance', '../x'], io())).toBe(2);
    err = '';
    expect(await runCli([], io())).toBe(2);
    expect(err).toMatch(/^Usage: tsbridge \[options\] \[command\][^]*ports/);
    out = '';
    expect(await runCli(['--help'], io())).toBe(0);
    expect(out).toMatch(/^Usage: tsbridge [^]*status[^]*ports[^]*health[^]*Exit codes: 0 ok, 1 a problem found or a failure, 2 bad usage/);
    out = '';
    expect(await runCli(['ports', '--help'], io())).toBe(0);
    expect(out).toMatch(/^Usage: tsbridge ports \[options\][^]*--json[^]*--full[^]*--network <id>[^]*--no-docker[^]*--instance <name>[^]*--state-dir <dir>/);
  });

  const dockerKnowing = (nets: DockerNetwork[]): DockerApi & { asked: string[][] } => {
    const asked: string[][] = [];
    return {
      asked,
      async networks(ids) {
        asked.push(ids);
        return new Map(ids.map((id) => [id, nets.find((n) => n.id === id) ?? null]));
      },
    };
  };

  test('container names from Docker: a NAME column, and names in --json; one question per network', async () => {
    writeFileSync(path.join(dir, 'state.json'), JSON.stringify(encodeState(state())));
    const docker = dockerKnowing([{ id: NET, name: 'web', driver: 'tsbridge', containers: [{ endpointId: EP1, containerId: 'c1', name: 'shop' }] }]);
    expect(await runCli(['ports'], io(docker))).toBe(0);
    expect(docker.asked).toEqual([[NET, NET2]]);
    expect(err).toBe('');
    expect(out.split('\n').slice(0, 2)).toEqual([
      'NETWORK        BRIDGE            ENDPOINT       NAME   PROTO   HOST             CONTAINER',
      'aaaa00000000   tsb-aaaa0000000   111100000000   shop   udp     127.0.0.1:5353   10.216.1.2:53',
    ]);
    expect(out).toContain('222200000000   -      sctp');
    out = '';
    expect(await runCli(['ports', '--json'], io(docker))).toBe(0);
    expect((JSON.parse(out) as { containerName: string | null; networkName: string | null }[]).map((r) => [r.networkName, r.containerName])).toEqual([
      ['web', 'shop'], ['web', 'shop'], ['web', 'shop'], [null, null], [null, null],
    ]);
  });

  test('Docker not reachable: IDs, and the reason once on stderr', async () => {
    writeFileSync(path.join(dir, 'state.json'), JSON.stringify(encodeState(state())));
    const docker: DockerApi = { networks: async () => { throw new DockerUnreachable('no Docker socket at /var/run/docker.sock'); } };
    expect(await runCli(['ports'], io(docker))).toBe(0);
    expect(out).toBe(formatTable(portRows(state())));
    expect(err).toBe('tsbridge ports: no container names: no Docker socket at /var/run/docker.sock; showing endpoint IDs\n');
    out = '';
    err = '';
    expect(await runCli(['ports', '--no-docker'], io(docker))).toBe(0);
    expect(err).toBe('');
  });
});
