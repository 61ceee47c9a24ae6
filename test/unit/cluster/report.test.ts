/** `tsbridge status`'s cluster section: what the plugin reports of the cluster, and how it is printed. */
import { silentLogger } from '../../../src/logging.js';
import { clusterReport } from '../../../src/cluster/report.js';
import { ClusterService } from '../../../src/cluster/service.js';
import { formatCluster } from '../../../src/cli/status.js';
import { MemoryEtcd } from '../../fakes/memory-etcd.js';
import { eventually } from '../../lib/store-contract.js';

test('this host, its overlays, their hosts and endpoints — and a host that is not registered says so', async () => {
  const etcd = new MemoryEtcd();
  const mk = (i: number) =>
    new ClusterService(etcd.client(`h${i}`), {
      hostId: `0000000000000${i}${i}${i}`,
      underlay: { vtep: `192.168.9.${i}`, dev: 'eth0', mtu: 1500 },
      ttlSec: 5,
      endpoints: 'memory',
      timeoutMs: 500,
      reconcileSec: 0,
      retryMs: 10,
      claims: () => ({ overlays: [], addresses: [] }),
      log: silentLogger(),
      hostname: `node${i}`,
    });
  const [a, b] = [mk(1), mk(2)];
  try {
    a.start();
    b.start();
    await eventually(() => a.registered && b.registered);
    await a.join('blue', '10.40.0.0/24');
    await b.join('blue', '10.40.0.0/24');
    const ip = await b.allocate('blue');
    await b.attach('blue', ip, '02:42:0a:28:00:02', 'ab'.repeat(32));
    await eventually(() => a.view('blue').endpoints.length === 1 && a.view('blue').hosts.length === 2);
    const r = clusterReport(a, ['blue', 'blue']);
    expect(r).toMatchObject({ hostId: a.hostId, vtep: '192.168.9.1', registered: true, loaded: true, conflicts: [] });
    expect(r.overlays).toHaveLength(1);
    const text = formatCluster(r);
    expect(text).toContain(`CLUSTER     host ${a.hostId}, VTEP 192.168.9.1, registered in etcd`);
    expect(text).toMatch(/OVERLAYS \(1\)\nOVERLAY\s+VNI\s+SUBNET\s+GATEWAY\s+HOSTS\s+ENDPOINTS\nblue\s+4096\s+10\.40\.0\.0\/24\s+10\.40\.0\.1\s+2\s+1\n/);
    expect(text).toMatch(new RegExp(`${a.hostId} \\(this host\\)\\s+node1\\s+192\\.168\\.9\\.1\\s+member\\s+0`));
    expect(text).toMatch(new RegExp(`blue\\s+${ip.replace(/\./g, '\\.')}\\s+${b.hostId}\\s+02:42:0a:28:00:02\\s+abababababab`));
    etcd.stop();
    await a.session.stop();
    expect(formatCluster(clusterReport(a, ['blue']))).toContain('NOT registered in etcd');
  } finally {
    await a.stop();
    await b.stop();
  }
});
