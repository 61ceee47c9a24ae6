/**
 * The multi-host rig itself (test/lib/rig.ts): three Docker 28 hosts, one of them behind a router,
 * each with its own daemons, /sys, plugin directory and tsbridge; killing one takes everything of
 * it; the teardown leaves nothing on the machine.
 * Needs root, etcd-server and Docker 28 (scripts/engine.sh install 28); run under /run/tsbridge-e2e.lock.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createRig, RIG_ROOT, type Rig } from '../lib/rig.js';
import { listNetns } from '../lib/netns.js';
import { sh, shOk } from '../lib/run.js';
import { TEST_IMAGE } from '../lib/docker.js';


let rig: Rig;

beforeAll(async () => {
  rig = await createRig({ hosts: 3, routed: 1 });
  console.log(`rig up in ${rig.timings.total} ms: ${JSON.stringify(rig.timings)}`);
});

afterAll(async () => {
  await rig?.destroy();
});

function cgroupDirs(parent: string): string[] {
  return readdirSync('/sys/fs/cgroup')
    .map((h) => `/sys/fs/cgroup/${h}${parent}`)
    .filter((d) => existsSync(d));
}

describe('the multi-host rig', () => {
  test('every host runs its own Docker 28 engine on its own socket', async () => {
    const infos = await Promise.all(rig.hosts.map((h) => h.docker(['info', '--format', '{{.ID}} {{.ServerVersion}} {{.DockerRootDir}}'])));
    const ids = new Set<string>();
    infos.forEach((line, i) => {
      const [id, version, root] = line.split(' ');
      expect(version).toMatch(/^28\./);
      expect(root).toBe(`${rig.hosts[i]!.dir}/docker`);
      ids.add(id!);
    });
    expect(ids.size).toBe(3);
  });

  test('each host sees its own interfaces in /sys and only its own plugin socket', async () => {
    for (const h of rig.hosts) {
      const sys = await sh('nsenter', ['--target', String(h.initPid), '--mount', '--net', 'ls', '/sys/class/net']);
      expect(sys.split('\n')).toEqual(expect.arrayContaining(['eth0', 'lo']));
      const plugins = await sh('nsenter', ['--target', String(h.initPid), '--mount', 'ls', '/run/docker/plugins']);
      expect(plugins.split('\n')).toEqual(['tsbridge.sock']);
      expect((await h.pluginCall('Plugin.Activate')).body).toEqual({ Implements: expect.arrayContaining(['NetworkDriver', 'IpamDriver']) });
    }
    // Their plugin directories are not the machine's (a tmpfs of each host's own).
    const devOf = (init: number) => sh('nsenter', ['--target', String(init), '--mount', 'stat', '-c', '%d', '/run/docker/plugins']);
    const devs = new Set(await Promise.all(rig.hosts.map((h) => devOf(h.initPid))));
    devs.add(await sh('stat', ['-c', '%d', '/run/docker/plugins']).catch(() => 'none'));
    expect(devs.size).toBe(4);
  });

  test('the underlay is routed: a host in the other subnet reaches the first host and etcd', async () => {
    const [h1, , h3] = rig.hosts;
    expect(h3!.subnet).not.toBe(h1!.subnet);
    await h3!.exec('busybox', ['ping', '-c', '1', '-W', '2', h1!.addr]);
    await h1!.exec('busybox', ['ping', '-c', '1', '-W', '2', h3!.addr]);
    const route = await h3!.exec('ip', ['-4', 'route', 'get', rig.underlayAddr]);
    expect(route).toContain(`via ${h3!.router}`);
    // Nothing leaves the rig: no host has a route to the machine's nameserver beyond the router.
    expect((await h1!.execOk('busybox', ['ping', '-c', '1', '-W', '1', '10.255.255.53'])).exitCode).not.toBe(0);
  });

  test('containers run on every host, on a tsbridge network of that host', async () => {
    await Promise.all(
      rig.hosts.map(async (h) => {
        const net = `rig-${h.name}`;
        await h.docker(['network', 'create', '-d', 'tsbridge', '--ipam-driver', 'tsbridge', net]);
        try {
          const out = await h.docker(['run', '--rm', '--network', net, TEST_IMAGE, 'sh', '-c', 'ip -4 route | grep default && echo ran']);
          expect(out).toContain('ran');
        } finally {
          await h.docker(['network', 'rm', net]);
        }
      }),
    );
  });

  test('killing a host takes its plugin, daemons and containers with it', async () => {
    const h2 = rig.hosts[1]!;
    await h2.docker(['run', '-d', '--name', 'sleeper', TEST_IMAGE, 'sleep', '1000']);
    const containerProcess = await h2.containerPid('sleeper');
    const pluginPid = h2.plugin!.pid;
    const init = h2.initPid;
    await h2.kill();
    // Gone, and reaped: no zombie left behind either.
    expect(existsSync(`/proc/${init}`)).toBe(false);
    expect(existsSync(`/proc/${pluginPid}`)).toBe(false);
    expect(existsSync(`/proc/${containerProcess}`)).toBe(false);
    expect(await listNetns()).not.toContain(h2.netns);
    // Nothing in the machine's process table still runs from that host's directory.
    const ps = await sh('ps', ['-eo', 'args']);
    expect(ps.split('\n').filter((l) => l.includes(h2.dir))).toEqual([]);
    // The others go on.
    await rig.hosts[0]!.docker(['run', '--rm', TEST_IMAGE, 'true']);
  });

  test('the teardown leaves nothing: processes, namespaces, links, cgroups, directories', async () => {
    const dir = rig.dir;
    const manifest = readFileSync(`${dir}/manifest`, 'utf8');
    const pids = [...manifest.matchAll(/^pid (\d+) (\d+)/gm)].map((m) => ({ pid: m[1]!, start: m[2]! }));
    expect(pids.length).toBeGreaterThanOrEqual(7); // etcd, 3 hosts, 3 plugins
    const namespaces = [...manifest.matchAll(/^netns (\S+)/gm)].map((m) => m[1]!);
    const cgroups = [...manifest.matchAll(/^cgroup (\S+)/gm)].map((m) => m[1]!);
    const t = Date.now();
    await rig.destroy();
    console.log(`rig torn down in ${Date.now() - t} ms`);
    for (const { pid, start } of pids) {
      const stat = existsSync(`/proc/${pid}/stat`) ? readFileSync(`/proc/${pid}/stat`, 'utf8') : '';
      expect(stat && stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[19] === start).toBeFalsy();
    }
    const left = await listNetns();
    for (const ns of namespaces) expect(left).not.toContain(ns);
    expect((await shOk('ip', ['link', 'show', 'dev', `tsbr${rig.id}`])).exitCode).not.toBe(0);
    for (const cg of cgroups) expect(cgroupDirs(cg)).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(RIG_ROOT) ? readdirSync(RIG_ROOT) : []).not.toContain(rig.id);
  });
});
