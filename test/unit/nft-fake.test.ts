/**
 * The strict nftables model the fake kernel runs tsbridge's scripts through: it must accept what
 * tsbridge really writes, and refuse — atomically — what nft refuses, or the unit tests built on
 * it would prove nothing.
 */
import { readFileSync } from 'node:fs';
import { NftError, NftModel, modelOf } from '../fakes/nft.js';

const RULESET = readFileSync(new URL('../fixtures/state/v1-ruleset.nft', import.meta.url), 'utf8');

/** A small table with one set, two maps and chains using them (real nft 1.0.6 loads it). */
const BASE = [
  'table inet t',
  'delete table inet t',
  'table inet t {',
  '  set names {',
  '    type ifname',
  '    elements = { "a", "b" }',
  '  }',
  '  map ports {',
  '    type inet_proto . inet_service : ipv4_addr . inet_service',
  '    elements = { tcp . 80 : 10.0.0.2 . 8080 }',
  '  }',
  '  map ports6 {',
  '    type inet_proto . inet_service : ipv6_addr . inet_service',
  '  }',
  '  chain c {',
  '    type nat hook prerouting priority dstnat; policy accept;',
  '    iifname @names accept',
  '    jump d',
  '  }',
  '  chain d {',
  '    dnat ip to meta l4proto . th dport map @ports',
  '  }',
  '}',
  '',
].join('\n');

function model(script = BASE): NftModel {
  const m = new NftModel();
  m.apply(script);
  return m;
}

/** Applies a script that must fail; returns the error and checks the model did not change. */
function refused(m: NftModel, script: string): NftError {
  const before = m.dump();
  let error: unknown;
  try {
    m.apply(script);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(NftError);
  expect(m.dump()).toEqual(before);
  return error as NftError;
}

describe('what tsbridge writes is accepted', () => {
  test('a full ruleset (the one rendered for the v1 state fixture) loads, and loading it again changes nothing', () => {
    const m = model(RULESET);
    const once = m.dump();
    expect(Object.keys(once)).toEqual(['bridge tsbridge', 'inet tsbridge']);
    expect(once['inet tsbridge']!.sets.ports4!.elements).toEqual(['tcp . 49152 : 10.10.0.2 . 9000', 'tcp . 8080 : 10.10.0.2 . 80']);
    expect(once['bridge tsbridge']!.chains.prerouting!.base).toEqual({ type: 'filter', hook: 'prerouting', priority: 'filter', policy: 'accept' });
    m.apply(RULESET);
    expect(m.dump()).toEqual(once);
  });

  test('the delete-safe idiom: declaring a table before deleting it works whether it exists or not', () => {
    const m = new NftModel();
    m.apply('table inet t\ndelete table inet t\n');
    expect(m.dump()).toEqual({});
  });

  test('adding an element before deleting it works whether it was there or not', () => {
    const m = model();
    m.apply('add element inet t names { "c" }\ndelete element inet t names { "c" }\n');
    m.apply('add element inet t names { "a" }\ndelete element inet t names { "a" }\n');
    expect(m.elements('inet t', 'names')).toEqual(['"b"']);
  });

  test('a map key added again with the same value is no change', () => {
    const m = model();
    m.apply('add element inet t ports { tcp . 80 : 10.0.0.2 . 8080 }\n');
    expect(m.elements('inet t', 'ports')).toEqual(['tcp . 80 : 10.0.0.2 . 8080']);
  });

  test('addresses compare canonically', () => {
    const m = model();
    m.apply('add element inet t ports6 { tcp . 80 : fd00:0:0::0002 . 80 }\ndelete element inet t ports6 { tcp . 80 }\n');
    expect(m.elements('inet t', 'ports6')).toEqual([]);
  });

  test('modelOf is the model a script leaves on an empty ruleset', () => {
    expect(modelOf(BASE)).toEqual(model().dump());
  });
});

describe('what nft refuses is refused, and the whole script with it', () => {
  test('deleting a table that does not exist, without declaring it first', () => {
    refused(new NftModel(), 'delete table inet t\n');
  });

  test('deleting an element that is not there', () => {
    expect(refused(model(), 'delete element inet t names { "zz" }\n').message).toContain('No such file or directory');
  });

  test('adding to a set or table that does not exist', () => {
    const m = model();
    refused(m, 'add element inet t nothing { "a" }\n');
    refused(m, 'add element inet other names { "a" }\n');
    refused(m, 'add element bridge t names { "a" }\n');
  });

  test('a map key that already maps to another value', () => {
    const m = model();
    expect(refused(m, 'add element inet t ports { tcp . 80 : 10.0.0.3 . 8080 }\n').message).toContain('File exists');
    refused(new NftModel(), BASE.replace('tcp . 80 : 10.0.0.2 . 8080', 'tcp . 80 : 10.0.0.2 . 8080, tcp . 80 : 10.0.0.9 . 1'));
  });

  test.each([
    ['an IPv4 address in an IPv6 map', 'add element inet t ports6 { tcp . 80 : 10.0.0.2 . 80 }'],
    ['an IPv6 address in an IPv4 map', 'add element inet t ports { tcp . 80 : fd00::2 . 80 }'],
    ['a port out of range', 'add element inet t ports { tcp . 70000 : 10.0.0.2 . 80 }'],
    ['an unknown protocol', 'add element inet t ports { tpc . 80 : 10.0.0.2 . 80 }'],
    ['a 16-character interface name', 'add element inet t names { "abcdefghijklmnop" }'],
    ['an unquoted interface name', 'add element inet t names { a }'],
    ['a map element without a value', 'add element inet t ports { tcp . 80 }'],
    ['a key with a field missing', 'add element inet t ports { tcp : 10.0.0.2 . 80 }'],
  ])('%s', (_what, line) => {
    expect(refused(model(), `${line}\n`).message).toMatch(/datatype mismatch|syntax error/);
  });

  test('a malformed line', () => {
    refused(model(), 'add elemnt inet t names { "c" }\n');
    refused(model(), 'add element inet t names { "c" \n');
    refused(new NftModel(), 'table inet t {\n  chain c {\n    accept\n');
  });

  test('one bad statement undoes the good ones before it', () => {
    const m = model();
    refused(m, 'add element inet t names { "c" }\ndelete element inet t names { "a" }\ndelete element inet t names { "zz" }\n');
    expect(m.elements('inet t', 'names')).toEqual(['"a"', '"b"']);
  });

  test('a rule naming a set or a chain the table does not have', () => {
    refused(new NftModel(), BASE.replace('iifname @names accept', 'iifname @nosuch accept'));
    refused(new NftModel(), BASE.replace('jump d', 'jump e'));
  });

  test('a set redeclared with another type', () => {
    const m = model();
    refused(m, 'table inet t {\n  set names {\n    type ipv4_addr\n  }\n}\n');
  });

  test.each([
    ['an unknown hook', 'type filter hook sideways priority filter; policy accept;'],
    ['an unknown priority name', 'type filter hook forward priority first; policy accept;'],
    ['a nat chain in the bridge family', 'type nat hook prerouting priority dstnat; policy accept;'],
    ['a missing policy', 'type filter hook forward priority filter;'],
  ])('a base chain with %s', (_what, header) => {
    const family = header.includes('nat') ? 'bridge' : 'inet';
    refused(new NftModel(), `table ${family} t {\n  chain c {\n    ${header}\n  }\n}\n`);
  });
});
