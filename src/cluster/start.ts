/**
 * Puts the cluster together at start-up (main.ts): TLS files, this host's id and underlay, the etcd
 * client and the session. Nothing here waits for etcd: registering and watching go on in the
 * background, so the plugin serves what it has whether etcd answers or not.
 */
import { promises as fs } from 'node:fs';
import type { EtcdConfig } from '../config.js';
import type { Logger } from '../logging.js';
import type { Runner } from '../kernel/real/exec.js';
import { findUnderlay, hostId, type RouteInfo } from './identity.js';
import { ClusterService } from './service.js';
import type { LocalClaims } from './session.js';

/** The kernel's view of the underlay, through iproute2 and sysfs. */
function underlayProbes(runner: Runner) {
  return {
    route: async (to: string): Promise<RouteInfo> => {
      const r = await runner.run('ip', ['-j', 'route', 'get', to]);
      const x = (JSON.parse(r.stdout || '[]') as { dev?: string; prefsrc?: string }[])[0];
      if (!x?.dev) throw new Error(`no route to etcd (${to}) on this host`);
      return { dev: x.dev, prefsrc: x.prefsrc };
    },
    mtuOf: async (dev: string): Promise<number> => Number((await fs.readFile(`/sys/class/net/${dev}/mtu`, 'utf8')).trim()),
    devOf: async (address: string): Promise<string | undefined> => {
      const r = await runner.run('ip', ['-j', 'addr', 'show']);
      const links = JSON.parse(r.stdout || '[]') as { ifname: string; addr_info?: { local?: string }[] }[];
      return links.find((l) => l.addr_info?.some((a) => a.local === address))?.ifname;
    },
  };
}

export async function startCluster(cfg: EtcdConfig, stateDir: string, runner: Runner, log: Logger, claims: () => LocalClaims): Promise<ClusterService> {
  const read = (what: string, file: string) =>
    fs.readFile(file).catch((e: Error) => {
      throw new Error(`${what} ${file}: ${e.message}`);
    });
  const tls = cfg.ca
    ? { ca: await read('TSBRIDGE_ETCD_CA', cfg.ca), cert: cfg.cert ? await read('TSBRIDGE_ETCD_CERT', cfg.cert) : undefined, key: cfg.key ? await read('TSBRIDGE_ETCD_KEY', cfg.key) : undefined }
    : undefined;
  const id = await hostId(stateDir);
  const p = underlayProbes(runner);
  const underlay = await findUnderlay(cfg.vtep, cfg.endpoints[0]!, p.route, p.mtuOf, p.devOf);
  // The etcd client (and gRPC under it, ~30 MiB) is loaded only by a host that joins a cluster.
  const { EtcdStore } = await import('./etcd.js');
  const store = new EtcdStore({ endpoints: cfg.endpoints, tls, callTimeoutMs: cfg.timeoutMs });
  const cluster = new ClusterService(store, {
    hostId: id,
    underlay,
    ttlSec: cfg.leaseTtlSec,
    prefix: cfg.prefix,
    endpoints: cfg.endpoints.join(','),
    timeoutMs: cfg.timeoutMs,
    claims,
    log,
  });
  log.info('cluster', { host: id, vtep: underlay.vtep, underlay: underlay.dev, mtu: underlay.mtu, endpoints: cfg.endpoints, tls: Boolean(tls), ttl: cfg.leaseTtlSec });
  cluster.start();
  return cluster;
}
