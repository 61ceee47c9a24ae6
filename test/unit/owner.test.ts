import { instanceFromSocket, ownerFor } from '../../src/kernel/owner.js';

test('the default instance keeps the plain names', () => {
  expect(ownerFor(instanceFromSocket('/run/docker/plugins/tsbridge.sock'))).toEqual({
    instance: 'tsbridge', table: 'tsbridge', forwardChain: 'TSBRIDGE-FORWARD', linkAlias: 'tsbridge',
  });
});

test('another instance gets its own table, chain and link alias', () => {
  const o = ownerFor(instanceFromSocket('/run/docker/plugins/tsbt-e2e.sock'));
  expect(o.table).toBe('tsbridge_tsbt_e2e');
  expect(o.forwardChain).toMatch(/^TSBRIDGE-FWD-[0-9a-f]{8}$/);
  expect(o.forwardChain.length).toBeLessThanOrEqual(28);
  expect(o.linkAlias).toBe('tsbridge:tsbt-e2e');
  expect(ownerFor('tsbt-other').forwardChain).not.toBe(o.forwardChain);
});

test('a socket name that cannot be an instance name is refused', () => {
  expect(() => instanceFromSocket('/run/x/bad name.sock')).toThrow(/must be 1-64 letters/);
});
