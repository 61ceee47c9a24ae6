/** This host in the cluster: its id (kept in the state directory) and its underlay address. */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { endpointHost, findUnderlay, hostId, vxlanOverhead } from '../../../src/cluster/identity.js';

test('the host id is made once and read back; a damaged file is an error, not a new identity', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'tsb-id-'));
  try {
    const id = await hostId(dir);
    expect(id).toMatch(/^[0-9a-f]{16}$/);
    expect(await hostId(dir)).toBe(id);
    expect((await readFile(path.join(dir, 'cluster-host-id'), 'utf8')).trim()).toBe(id);
    await writeFile(path.join(dir, 'cluster-host-id'), 'garbage');
    await expect(hostId(dir)).rejects.toThrow(/does not hold a host id/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

describe('the underlay', () => {
  const mtuOf = async (dev: string) => (dev === 'eth1' ? 9000 : 1500);
  const devOf = async (a: string) => (a === '10.1.0.5' ? 'eth1' : undefined);

  test('by default, the source address of the route to the first etcd endpoint', async () => {
    const route = async (to: string) => (to === '10.9.0.1' ? { dev: 'eth1', prefsrc: '10.1.0.5' } : { dev: 'eth0' });
    expect(await findUnderlay('', 'http://10.9.0.1:2379', route, mtuOf, devOf)).toEqual({ vtep: '10.1.0.5', dev: 'eth1', mtu: 9000 });
  });

  test('etcd on this host, on its underlay address: the address is the VTEP', async () => {
    const route = async () => ({ dev: 'lo', prefsrc: '10.1.0.5' });
    expect(await findUnderlay('', 'https://10.1.0.5:2379', route, mtuOf, devOf)).toEqual({ vtep: '10.1.0.5', dev: 'eth1', mtu: 9000 });
  });

  test('TSBRIDGE_VTEP_ADDRESS wins, and must be one of this host\'s addresses', async () => {
    const route = async () => ({ dev: 'eth0', prefsrc: '192.0.2.9' });
    expect(await findUnderlay('10.1.0.5', 'http://10.9.0.1:2379', route, mtuOf, devOf)).toEqual({ vtep: '10.1.0.5', dev: 'eth1', mtu: 9000 });
    await expect(findUnderlay('10.1.0.6', 'http://10.9.0.1:2379', route, mtuOf, devOf)).rejects.toThrow(/not an address of this host/);
  });

  test('etcd on loopback gives no usable address', async () => {
    const route = async () => ({ dev: 'lo', prefsrc: '127.0.0.1' });
    await expect(findUnderlay('', 'http://127.0.0.1:2379', route, mtuOf, devOf)).rejects.toThrow(/set TSBRIDGE_VTEP_ADDRESS/);
  });

  test('endpoint hosts and VXLAN overhead', () => {
    expect(endpointHost('http://[fd00::1]:2379')).toBe('fd00::1');
    expect(endpointHost('https://etcd.example:2379')).toBe('etcd.example');
    expect(vxlanOverhead('10.0.0.1')).toBe(50);
    expect(vxlanOverhead('fd00::1')).toBe(70);
  });
});
