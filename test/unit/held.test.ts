/**
 * Held addresses and routes: read from `ip -j` output (as iproute2 6.1 prints it), written back
 * as `ip -batch` arguments on another interface, compared — and nothing but checked values ever
 * reaches a batch line.
 */
import { addressArgs, addressKeyArgs, routeArgs, routeKeyArgs, sameRoute } from '../../src/kernel/held.js';
import { parseAddresses, parseRoutes } from '../../src/kernel/real/links.js';

test('addresses from ip -j addr: IPv4 with its details, IPv6 but link-local; a peer address cannot move', () => {
  const link = {
    ifname: 'lan0',
    addr_info: [
      { family: 'inet', local: '10.231.9.5', prefixlen: 24, metric: 77, broadcast: '10.231.9.255', scope: 'global', noprefixroute: true },
      { family: 'inet', local: '10.231.8.5', prefixlen: 24, scope: 'global' },
      { family: 'inet', local: '10.9.9.1', prefixlen: 32, address: '10.9.9.2', scope: 'global' },
      { family: 'inet6', local: 'FD5A:1:0::5', prefixlen: 64, scope: 'global' },
      { family: 'inet6', local: 'fe80::4862:c1ff:fec2:9c6', prefixlen: 64, scope: 'link' },
    ],
  };
  expect(parseAddresses(link)).toEqual({
    addresses: [
      { cidr: '10.231.9.5/24', broadcast: '10.231.9.255', noprefixroute: true, metric: 77 },
      { cidr: '10.231.8.5/24' },
      { cidr: 'fd5a:1::5/64' },
    ],
    unmovable: ['address 10.9.9.1/32 peer 10.9.9.2'],
  });
});

test('routes from ip -j route show table all dev X: the kernel\'s own and the local table left out, multipath unmovable', () => {
  const v4 = [
    { dst: '10.233.0.0/16', gateway: '10.231.0.2', table: '100', flags: [] },
    { dst: 'default', gateway: '10.231.0.1', flags: [] },
    { dst: '10.231.0.0/24', protocol: 'kernel', scope: 'link', prefsrc: '10.231.0.5', flags: [] },
    { dst: '10.232.0.0/16', gateway: '10.231.0.2', protocol: 'static', metric: 50, flags: ['onlink'] },
    { dst: '10.240.0.0/16', protocol: 'boot', scope: 'link', prefsrc: '10.231.0.5', flags: [] },
    { type: 'local', dst: '10.231.0.5', table: 'local', protocol: 'kernel', scope: 'host', prefsrc: '10.231.0.5', flags: [] },
    { type: 'broadcast', dst: '10.231.0.255', table: 'local', protocol: 'kernel', scope: 'link', flags: [] },
    { type: 'blackhole', dst: '10.250.0.0/16', flags: [] },
    { dst: '10.241.0.0/16', nexthops: [{ gateway: '10.231.0.2' }, { gateway: '10.231.0.3' }], flags: [] },
    { dst: '10.242.0.1', gateway: '10.231.0.2', table: 'weird', flags: [] },
  ];
  const v6 = [
    { dst: 'fd5a:1::/64', protocol: 'kernel', metric: 256, flags: [], pref: 'medium' },
    { dst: 'fe80::/64', protocol: 'kernel', metric: 256, flags: [], pref: 'medium' },
    { dst: 'default', gateway: 'fd5a:1::1', protocol: 'ra', metric: 1024, flags: [], pref: 'medium', expires: '1790sec' },
    { type: 'multicast', dst: 'ff00::/8', table: 'local', protocol: 'kernel', metric: 256, flags: [] },
  ];
  expect(parseRoutes(v4, 4)).toEqual({
    routes: [
      { to: '10.233.0.0/16', via: '10.231.0.2', table: 100 },
      { to: '0.0.0.0/0', via: '10.231.0.1' },
      { to: '10.232.0.0/16', via: '10.231.0.2', proto: 'static', metric: 50, onlink: true },
      { to: '10.240.0.0/16', scope: 'link', src: '10.231.0.5' },
    ],
    unmovable: ['10.241.0.0/16', '10.242.0.1 via 10.231.0.2 table weird'],
  });
  expect(parseRoutes(v6, 6)).toEqual({ routes: [{ to: '::/0', via: 'fd5a:1::1', proto: 'ra', metric: 1024 }], unmovable: [] });
});

test('written back as ip -batch arguments on another interface', () => {
  expect(addressArgs({ cidr: '10.231.9.5/24', broadcast: '10.231.9.255', noprefixroute: true, metric: 77 }, 'br0')).toBe(
    '10.231.9.5/24 dev br0 broadcast 10.231.9.255 metric 77 noprefixroute',
  );
  expect(addressArgs({ cidr: 'fd5a:1::5/64' }, 'br0')).toBe('fd5a:1::5/64 dev br0 nodad');
  expect(addressKeyArgs({ cidr: 'fd5a:1::5/64', metric: 3 }, 'br0')).toBe('fd5a:1::5/64 dev br0');
  expect(routeArgs({ to: '0.0.0.0/0', via: '10.231.0.1' }, 'br0')).toBe('0.0.0.0/0 via 10.231.0.1 dev br0');
  expect(routeArgs({ to: '10.232.0.0/16', via: '10.231.0.2', table: 100, metric: 50, proto: 'static', scope: 'link', src: '10.231.0.5', onlink: true }, 'br0')).toBe(
    '10.232.0.0/16 via 10.231.0.2 dev br0 table 100 metric 50 proto static scope link src 10.231.0.5 onlink',
  );
  expect(routeKeyArgs({ to: '::/0', via: 'fd5a:1::1', metric: 1024, proto: 'ra' }, 'lan0')).toBe('::/0 via fd5a:1::1 dev lan0 metric 1024');
});

test.each([
  ['an address with a second line', () => addressArgs({ cidr: '10.0.0.1/24\nlink del eth0' }, 'br0')],
  ['a broadcast that is not an address', () => addressArgs({ cidr: '10.0.0.1/24', broadcast: '+ dev eth0' }, 'br0')],
  ['a scope with a space', () => addressArgs({ cidr: '10.0.0.1/24', scope: 'host dev eth0' }, 'br0')],
  ['a destination with host bits', () => routeArgs({ to: '10.0.0.1/24' }, 'br0')],
  ['a next hop that is not an address', () => routeArgs({ to: '0.0.0.0/0', via: '10.0.0.1 dev eth0' }, 'br0')],
  ['a protocol with a newline', () => routeArgs({ to: '0.0.0.0/0', proto: 'static\nlink del eth0' }, 'br0')],
  ['a table that is not a number', () => routeArgs({ to: '0.0.0.0/0', table: 1.5 }, 'br0')],
])('%s is refused, never written', (_what, fn) => {
  expect(fn).toThrow(/refusing to write/);
});

test('routes are the same route when destination, next hop, table and metric are (IPv4 metric 0 and IPv6 1024 are the defaults)', () => {
  expect(sameRoute({ to: '0.0.0.0/0', via: '10.0.0.1' }, { to: '0.0.0.0/0', via: '10.0.0.1', metric: 0, table: 254, proto: 'dhcp' })).toBe(true);
  expect(sameRoute({ to: '::/0', via: 'fd00::1' }, { to: '::/0', via: 'FD00:0::1', metric: 1024 })).toBe(true);
  expect(sameRoute({ to: '0.0.0.0/0', via: '10.0.0.1' }, { to: '0.0.0.0/0', via: '10.0.0.1', table: 100 })).toBe(false);
  expect(sameRoute({ to: '0.0.0.0/0', via: '10.0.0.1' }, { to: '0.0.0.0/0', via: '10.0.0.2' })).toBe(false);
});
