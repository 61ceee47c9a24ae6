/**
 * Metrics and health without a kernel: the registry's content after calls through the app with
 * fakes, the kernel command observer of ExecRunner, sweep and reconcile results, and the
 * health report. The exposition text is parsed as a scraper would.
 */
import { ExecRunner } from '../../src/kernel/real/exec.js';
import { silentLogger } from '../../src/logging.js';
import { Health } from '../../src/metrics/health.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { createApp } from '../../src/server/app.js';
import { FakeHost } from '../fakes/host.js';
import { EP_1, EP_2, NET_A, makeWorld, type World } from '../fakes/world.js';
import { parseExposition, serveOnSocket, socketRequest } from '../lib/http.js';

let w: World;
let metrics: Metrics;
let srv: Awaited<ReturnType<typeof serveOnSocket>>;
const post = (call: string, body: unknown) => socketRequest(srv.socket, { path: call, body: JSON.stringify(body) });

beforeEach(async () => {
  w = makeWorld({ host: new FakeHost({ ephemeral: [49152, 49160] }) });
  metrics = new Metrics({ state: () => w.db.state, info: { instance: 'tsbridge', version: '9.9.9' } });
  srv = await serveOnSocket(createApp({ driver: w.driver, ipam: w.ipam, log: silentLogger(), metrics }));
});
afterEach(async () => srv.close());

test('calls by method and outcome, their durations, and the live objects read from the state', async () => {
  const net = { NetworkID: NET_A, Options: { 'com.docker.network.generic': {} }, IPv4Data: [{ Pool: '10.77.0.0/24', Gateway: '10.77.0.1/24' }] };
  expect((await post('/NetworkDriver.CreateNetwork', net)).status).toBe(200);
  for (const [id, addr] of [[EP_1, '10.77.0.2/24'], [EP_2, '10.77.0.3/24']] as const) {
    expect((await post('/NetworkDriver.CreateEndpoint', { NetworkID: NET_A, EndpointID: id, Interface: { Address: addr } })).status).toBe(200);
  }
  expect((await post('/NetworkDriver.Join', { NetworkID: NET_A, EndpointID: EP_1 })).status).toBe(200);
  const portmap = (HostPort: number, Proto = 6) => ({ 'com.docker.network.portmap': [{ Proto, Port: 80, HostPort }, { Proto: 17, Port: 53, HostPort: HostPort + 1 }] });
  expect((await post('/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET_A, EndpointID: EP_1, Options: portmap(8080) })).status).toBe(200);
  expect((await post('/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET_A, EndpointID: EP_2, Options: portmap(8080) })).status).toBe(500);
  expect((await post('/IpamDriver.RequestPool', null)).status).toBe(500);
  expect((await socketRequest(srv.socket, { path: '/Nope', body: '{}' })).status).toBe(404);

  const m = parseExposition(await metrics.text());
  expect(m.get('tsbridge_info{instance="tsbridge",version="9.9.9"}')).toBe(1);
  expect(m.get('tsbridge_calls_total{method="NetworkDriver.CreateNetwork",outcome="ok"}')).toBe(1);
  expect(m.get('tsbridge_calls_total{method="NetworkDriver.CreateEndpoint",outcome="ok"}')).toBe(2);
  expect(m.get('tsbridge_calls_total{method="NetworkDriver.ProgramExternalConnectivity",outcome="ok"}')).toBe(1);
  expect(m.get('tsbridge_calls_total{method="NetworkDriver.ProgramExternalConnectivity",outcome="PORT_IN_USE"}')).toBe(1);
  expect(m.get('tsbridge_calls_total{method="IpamDriver.RequestPool",outcome="BAD_REQUEST"}')).toBe(1);
  expect(m.get('tsbridge_calls_total{method="unknown",outcome="UNKNOWN_CALL"}')).toBe(1);
  expect(m.get('tsbridge_call_duration_seconds_count{method="NetworkDriver.CreateEndpoint"}')).toBe(2);
  expect(m.get('tsbridge_call_duration_seconds_bucket{le="+Inf",method="NetworkDriver.CreateEndpoint"}')).toBe(2);
  expect(m.get('tsbridge_call_duration_seconds_sum{method="NetworkDriver.CreateEndpoint"}')).toBeGreaterThan(0);
  expect(m.get('tsbridge_networks')).toBe(1);
  expect(m.get('tsbridge_endpoints{joined="true"}')).toBe(1);
  expect(m.get('tsbridge_endpoints{joined="false"}')).toBe(1);
  expect(m.get('tsbridge_published_ports{proto="tcp"}')).toBe(1);
  expect(m.get('tsbridge_published_ports{proto="udp"}')).toBe(1);
  expect(m.get('tsbridge_published_ports{proto="sctp"}')).toBe(0);
  expect(m.get('tsbridge_pools')).toBe(0);
  // Read at scrape time: the state changes, the next scrape says so.
  await w.driver.revokeExternalConnectivity(NET_A, EP_1);
  expect(parseExposition(await metrics.text()).get('tsbridge_published_ports{proto="tcp"}')).toBe(0);
});

test('kernel commands: durations by program, failures and timeouts counted apart; an allowed non-zero exit is no failure', async () => {
  // A generous deadline for the commands that must finish (a loaded host can take over 300 ms
  // to start one), a short one for the command that must time out.
  const runner = new ExecRunner(60_000, (e) => metrics.command(e));
  const hasty = new ExecRunner(300, (e) => metrics.command(e));
  await runner.run('true', []);
  await runner.run('/bin/true', []);
  await runner.run('false', [], { allowFail: true });
  await expect(runner.run('false', [])).rejects.toThrow(/failed/);
  await expect(hasty.run('sh', ['-c', 'sleep 5'])).rejects.toThrow(/timed out/);
  await expect(runner.run('/nonexistent/tsbridge-cmd', [])).rejects.toThrow(/failed/);
  const m = parseExposition(await metrics.text());
  expect(m.get('tsbridge_kernel_command_duration_seconds_count{command="true"}')).toBe(2);
  expect(m.get('tsbridge_kernel_command_duration_seconds_count{command="false"}')).toBe(2);
  expect(m.get('tsbridge_kernel_command_failures_total{command="false",reason="failed"}')).toBe(1);
  expect(m.get('tsbridge_kernel_command_failures_total{command="sh",reason="timeout"}')).toBe(1);
  expect(m.get('tsbridge_kernel_command_failures_total{command="tsbridge-cmd",reason="failed"}')).toBe(1);
  expect(m.get('tsbridge_kernel_command_failures_total{command="true",reason="failed"}')).toBeUndefined();
});

test('sweeps, the start-up reconciliation and rule re-applications', async () => {
  metrics.reconcile({ ok: true, seconds: 0.25, counts: { networksRestored: 2, networksDropped: 0, endpointsDropped: 1, vethsRecreated: 0, staleLinksRemoved: 3 } });
  metrics.sweep({ ok: true, seconds: 0.01, endpointsRemoved: 2 });
  metrics.sweep({ ok: false, seconds: 0.01, endpointsRemoved: 0 });
  metrics.rulesReapplied('table_missing');
  const m = parseExposition(await metrics.text());
  expect(m.get('tsbridge_reconciles_total{outcome="ok"}')).toBe(1);
  expect(m.get('tsbridge_reconcile_duration_seconds')).toBe(0.25);
  expect(m.get('tsbridge_reconcile_objects{action="networks_restored"}')).toBe(2);
  expect(m.get('tsbridge_reconcile_objects{action="stale_links_removed"}')).toBe(3);
  expect(m.get('tsbridge_sweeps_total{outcome="ok"}')).toBe(1);
  expect(m.get('tsbridge_sweeps_total{outcome="failed"}')).toBe(1);
  expect(m.get('tsbridge_sweep_endpoints_removed_total')).toBe(2);
  expect(m.get('tsbridge_sweep_last_success')).toBe(0);
  expect(m.get('tsbridge_sweep_last_timestamp_seconds')).toBeGreaterThan(1.6e9);
  expect(m.get('tsbridge_rules_reapplied_total{reason="table_missing"}')).toBe(1);
});

test('state writes: a journal line written without a sync is a write; the sync that follows alone is a sync, not a write', async () => {
  metrics.stateWrite({ kind: 'journal', bytes: 440, syncs: 0 });
  metrics.stateWrite({ kind: 'journal', bytes: 0, syncs: 1 });
  metrics.stateWrite({ kind: 'journal', bytes: 110, syncs: 1 });
  const m = parseExposition(await metrics.text());
  expect(m.get('tsbridge_state_writes_total{kind="journal"}')).toBe(2);
  expect(m.get('tsbridge_state_written_bytes_total{kind="journal"}')).toBe(550);
  expect(m.get('tsbridge_state_syncs_total')).toBe(2);
});

test('process metrics only when asked (the plugin asks)', async () => {
  expect(await metrics.text()).not.toContain('process_cpu_seconds_total');
  const withProcess = new Metrics({ state: () => w.db.state, info: { instance: 'x', version: '1' }, processMetrics: true });
  const m = parseExposition(await withProcess.text());
  expect(m.get('process_cpu_seconds_total')).toBeGreaterThan(0);
  expect(m.has('nodejs_eventloop_lag_seconds')).toBe(true);
});

describe('Health', () => {
  const info = { instance: 'lab', version: '1.2.3', socket: '/run/docker/plugins/lab.sock', stateDir: '/var/lib/tsbridge-lab', sweepIntervalSeconds: 30 };
  let now = Date.parse('2025-01-01T00:00:00Z');
  const health = () => new Health(info, () => ({ callsInFlight: 0, networks: 2, endpoints: 5 }), () => now);

  test('a fresh plugin is healthy; the report says who and since when', () => {
    const h = health();
    h.reconciled({ ok: true, seconds: 0.2, counts: { networksRestored: 2 } });
    now += 10_000;
    expect(h.report()).toEqual({
      serving: true, healthy: true, problems: [], instance: 'lab', version: '1.2.3', pid: process.pid,
      socket: info.socket, stateDir: info.stateDir, startedAt: '2025-01-01T00:00:00.000Z', uptimeSeconds: 10, iptables: null, sweepIntervalSeconds: 30,
      lastReconcile: { at: '2025-01-01T00:00:00.000Z', ok: true, ms: 200, counts: { networksRestored: 2 } }, lastSweep: null,
      callsInFlight: 0, networks: 2, endpoints: 5,
    });
  });

  test('a failed last sweep makes it unhealthy until a sweep succeeds', () => {
    const h = health();
    h.swept({ ok: false, seconds: 0.1, endpointsRemoved: 0, error: 'nft: command not found' });
    expect(h.report()).toMatchObject({ healthy: false, problems: ['the last sweep failed: nft: command not found'], lastSweep: { ok: false, error: 'nft: command not found' } });
    h.swept({ ok: true, seconds: 0.1, endpointsRemoved: 1 });
    expect(h.report()).toMatchObject({ healthy: true, lastSweep: { ok: true, endpointsRemoved: 1 } });
  });

  test('no sweep ended for three intervals (and 30 s): stuck', () => {
    const h = health();
    now += 119_000;
    expect(h.report().healthy).toBe(true);
    now += 2000;
    expect(h.report().problems).toEqual(['no sweep has ended for 121 s (interval 30 s): a call or a sweep may be stuck']);
    expect(new Health({ ...info, sweepIntervalSeconds: 0 }, () => ({ callsInFlight: 0, networks: 0, endpoints: 0 }), () => now + 1e9).report().healthy).toBe(true);
  });
});
