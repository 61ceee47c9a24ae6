/**
 * Reading the host from /proc text: routes (IPv4 little-endian hex, IPv6
 * plain hex), nameservers, listening sockets (IPv6 as four little-endian
 * 32-bit words), and ProcHost over a fake /proc directory.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isTsbridgeError } from '../../src/errors.js';
import { allocatePorts } from '../../src/driver/ports.js';
import { canonicalPrefix } from '../../src/net/addr.js';
import { pickFreePool } from '../../src/ipam/pools.js';
import { ProcHost, parseNameservers, parseRoutes, parseSockets } from '../../src/kernel/real/host.js';

const ROUTE4 = [
  'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
  'eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0',
  'eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0',
  'docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0',
  'wg0\t0A00000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0',
  '',
].join('\n');

const ROUTE6 = [
  'fd000097000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0',
  '00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0',
  'fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0',
  '00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo',
  '',
].join('\n');

const RESOLV = ['# written by systemd', 'nameserver 127.0.0.53', 'nameserver fe80::1%eth0', 'search example.com', 'options edns0', '   nameserver    10.0.0.2   ', 'nameserver', ''].join('\n');

const HEADER4 = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
const HEADER6 = '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
const TAIL = '00000000:00000000 00:00000000 00000000     0        0 20393 1 0000000000000000 100 0 0 10 0';

const TCP4 = [
  HEADER4,
  `   0: 3500007F:0035 00000000:0000 0A ${TAIL}`, // 127.0.0.53:53 LISTEN
  `   1: 00000000:0016 00000000:0000 0A ${TAIL}`, // 0.0.0.0:22 LISTEN
  `   2: 0F02000A:0016 0202000A:C350 01 ${TAIL}`, // 10.0.2.15:22 ESTABLISHED: not a listener
  '',
].join('\n');

const TCP6 = [
  HEADER6,
  `   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A ${TAIL}`, // [::]:22
  `   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A ${TAIL}`, // [::1]:8080
  `   2: 0000000000000000FFFF00000100007F:0CEA 00000000000000000000000000000000:0000 0A ${TAIL}`, // [::ffff:127.0.0.1]:3306
  `   3: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A ${TAIL}`, // [2001:db8::1]:443
  `   4: 00000000000000000000000001000000:1F91 00000000000000000000000001000000:D431 01 ${TAIL}`, // established
  '',
].join('\n');

const UDP4 = [HEADER4, `  10: 00000000:14E9 00000000:0000 07 ${TAIL}`, `  11: 3500007F:0035 00000000:0000 07 ${TAIL}`, ''].join('\n');
const UDP6 = [HEADER6, `  12: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 ${TAIL}`, ''].join('\n');

describe('parseRoutes', () => {
  test('IPv4: little-endian destination and mask, default route skipped', () => {
    expect(parseRoutes(ROUTE4, '')).toEqual(['192.168.0.0/24', '172.17.0.0/16', '10.0.0.10/32']);
  });

  test('IPv6: plain hex destination and hex prefix length, default route skipped', () => {
    expect(parseRoutes('', ROUTE6).map((c) => canonicalPrefix(c))).toEqual(['fd00:97::/64', 'fe80::/64', '::1/128']);
  });

  test('empty or header-only input gives nothing', () => {
    expect(parseRoutes('', '')).toEqual([]);
    expect(parseRoutes(ROUTE4.split('\n')[0]!, '\n')).toEqual([]);
  });

  test('an automatic pool steers clear of what the routes cover', () => {
    const taken = parseRoutes('Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\nbr0\t0000D20A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n', '');
    expect(taken).toEqual(['10.210.0.0/16']);
    expect(pickFreePool([{ base: '10.210.0.0/16', size: 24 }, { base: '10.211.0.0/16', size: 24 }], 4, taken)).toBe('10.211.0.0/24');
  });
});

describe('parseNameservers', () => {
  test('nameserver lines only, zone ids dropped, whitespace tolerated', () => {
    expect(parseNameservers(RESOLV)).toEqual(['127.0.0.53', 'fe80::1', '10.0.0.2']);
  });

  test('no resolv.conf content, no nameservers', () => {
    expect(parseNameservers('')).toEqual([]);
  });
});

describe('parseSockets', () => {
  test('IPv4 TCP: only LISTEN sockets, little-endian addresses, 0.0.0.0 kept as the IPv4 wildcard', () => {
    expect(parseSockets(TCP4, 'tcp', false)).toEqual([
      { proto: 'tcp', ip: '127.0.0.53', port: 53 },
      { proto: 'tcp', ip: '0.0.0.0', port: 22 },
    ]);
  });

  test('IPv6 TCP: four little-endian words, written canonically; [::] is every address', () => {
    expect(parseSockets(TCP6, 'tcp', true)).toEqual([
      { proto: 'tcp', ip: '', port: 22 },
      { proto: 'tcp', ip: '::1', port: 8080 },
      { proto: 'tcp', ip: '::ffff:127.0.0.1', port: 3306 },
      { proto: 'tcp', ip: '2001:db8::1', port: 443 },
    ]);
  });

  test('UDP: every bound socket counts', () => {
    expect(parseSockets(UDP4, 'udp', false)).toEqual([
      { proto: 'udp', ip: '0.0.0.0', port: 5353 },
      { proto: 'udp', ip: '127.0.0.53', port: 53 },
    ]);
    expect(parseSockets(UDP6, 'udp', true)).toEqual([{ proto: 'udp', ip: '', port: 5353 }]);
  });

  test('a host process on [2001:db8::1]:443 blocks publishing on 2001:db8::1 port 443', () => {
    const listening = parseSockets(TCP6, 'tcp', true);
    let code = '';
    try {
      allocatePorts([{ proto: 'tcp', containerPort: 80, hostIp: '2001:db8::1', hostPort: 443, hostPortEnd: 443 }], { taken: [], listening, ephemeral: [49152, 49160], defaultHostIp: '' });
    } catch (e) {
      if (isTsbridgeError(e)) code = e.code;
    }
    expect(code).toBe('PORT_IN_USE');
  });

  test('a dual-stack [::]:22 listener blocks publishing port 22 on IPv4 too', () => {
    const listening = parseSockets(TCP6, 'tcp', true);
    expect(() =>
      allocatePorts([{ proto: 'tcp', containerPort: 22, hostIp: '127.0.0.1', hostPort: 22, hostPortEnd: 22 }], { taken: [], listening, ephemeral: [49152, 49160], defaultHostIp: '' }),
    ).toThrow(/already allocated/);
  });
});

describe('ProcHost over a fake /proc', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'tsbridge-proc-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function writeProc(files: Record<string, string>): void {
    for (const [rel, text] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
      writeFileSync(path.join(dir, rel), text);
    }
  }

  test('reads routes, nameservers, sockets and the ephemeral range', async () => {
    writeProc({
      'proc/net/route': ROUTE4,
      'proc/net/ipv6_route': ROUTE6,
      'proc/net/tcp': TCP4,
      'proc/net/tcp6': TCP6,
      'proc/net/udp': UDP4,
      'proc/net/udp6': UDP6,
      'proc/sys/net/ipv4/ip_local_port_range': '40000\t40100\n',
      'resolv.conf': RESOLV,
    });
    const host = new ProcHost(path.join(dir, 'proc'), path.join(dir, 'resolv.conf'));
    const taken = await host.takenPrefixes();
    expect(taken).toEqual(expect.arrayContaining(['192.168.0.0/24', '172.17.0.0/16', '127.0.0.53', '10.0.0.2']));
    expect(taken).toHaveLength(3 + 3 + 3);
    const listening = await host.listening();
    expect(listening).toHaveLength(2 + 4 + 2 + 1);
    expect(listening).toContainEqual({ proto: 'udp', ip: '0.0.0.0', port: 5353 });
    expect(await host.ephemeralRange()).toEqual([40000, 40100]);
  });

  test('missing files: nothing taken, nothing listening, the kernel default ephemeral range', async () => {
    const host = new ProcHost(path.join(dir, 'nothing'), path.join(dir, 'no-resolv.conf'));
    expect(await host.takenPrefixes()).toEqual([]);
    expect(await host.listening()).toEqual([]);
    expect(await host.ephemeralRange()).toEqual([32768, 60999]);
  });
});
