/**
 * A strict model of nftables for unit tests: applies `nft -f` scripts of the kind tsbridge writes
 * (tables, sets, maps, chains, element adds and deletes) as nft 1.0 would, and refuses what nft
 * refuses. A script is one transaction: on any error nothing of it is applied.
 *
 * Refused like nft: deleting a table, set element or map key that does not exist; adding an
 * element to a set or table that does not exist; an element that does not fit the set's type
 * (an IPv4 address in an IPv6 map, a 16-character interface name); a map key already holding
 * another value; redeclaring a set with another type; a rule naming a set or chain the table does
 * not have; a base chain with an unknown hook, type or priority; any line it cannot parse.
 *
 * `dump()` describes the model in a form `toEqual` can compare (elements sorted, as nft keeps them
 * in no order); `modelOf(script)` is the dump of a script applied to an empty model — so a test
 * compares what a sequence of operations left with what a full ruleset would hold.
 */
import { parseAddress, formatAddress } from '../../src/net/addr.js';

export class NftError extends Error {
  constructor(message: string, readonly line: number, readonly text: string) {
    super(`Error: ${message}\n<cmdline>:${line}: ${text}`);
    this.name = 'NftError';
  }
}

type FieldType = 'ifname' | 'ether_addr' | 'ipv4_addr' | 'ipv6_addr' | 'inet_proto' | 'inet_service' | 'raw128';

interface NftSet {
  kind: 'set' | 'map';
  /** The declaration as written (`type …` or `typeof …`), compared on redeclaration. */
  declared: string;
  key: FieldType[];
  value: FieldType[] | null;
  /** Normalised key → normalised value ('' for a set element). */
  elements: Map<string, string>;
}

interface BaseChain {
  type: string;
  hook: string;
  priority: string;
  policy: string;
}

interface Chain {
  base: BaseChain | null;
  rules: string[];
}

interface Table {
  sets: Map<string, NftSet>;
  chains: Map<string, Chain>;
}

export interface NftSetDump {
  kind: 'set' | 'map';
  type: string;
  /** Sorted: `key` for a set, `key : value` for a map. */
  elements: string[];
}

export interface NftTableDump {
  sets: Record<string, NftSetDump>;
  chains: Record<string, { base: BaseChain | null; rules: string[] }>;
}

/** Table key (`inet tsbridge`) → contents. */
export type NftDump = Record<string, NftTableDump>;

const FAMILIES = new Set(['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev']);
const HOOKS: Record<string, string[]> = {
  inet: ['prerouting', 'input', 'forward', 'output', 'postrouting', 'ingress'],
  ip: ['prerouting', 'input', 'forward', 'output', 'postrouting'],
  ip6: ['prerouting', 'input', 'forward', 'output', 'postrouting'],
  bridge: ['prerouting', 'input', 'forward', 'output', 'postrouting'],
  netdev: ['ingress', 'egress'],
  arp: ['input', 'output'],
};
const PRIORITY_NAMES = new Set(['raw', 'mangle', 'dstnat', 'filter', 'security', 'srcnat', 'out']);
const TYPE_NAMES: Record<string, FieldType> = {
  ifname: 'ifname',
  ether_addr: 'ether_addr',
  ipv4_addr: 'ipv4_addr',
  ipv6_addr: 'ipv6_addr',
  inet_proto: 'inet_proto',
  inet_service: 'inet_service',
};
/** What `typeof` expressions tsbridge uses stand for. */
const TYPEOF_NAMES: Record<string, FieldType> = {
  iifname: 'ifname',
  oifname: 'ifname',
  '@th,64,128': 'raw128',
  'ether saddr': 'ether_addr',
  'ip saddr': 'ipv4_addr',
  'ip daddr': 'ipv4_addr',
  'ip6 saddr': 'ipv6_addr',
  'ip6 daddr': 'ipv6_addr',
};
const PROTOS = new Set(['tcp', 'udp', 'sctp', 'icmp', 'icmpv6', 'udplite', 'dccp']);

/** Normalises one field of an element, or returns null when it does not fit the type. */
function field(type: FieldType, text: string): string | null {
  switch (type) {
    case 'ifname':
      return /^"[^"\s]{1,15}"$/.test(text) ? text : null;
    case 'ether_addr':
      return /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text) ? text.toLowerCase() : null;
    case 'ipv4_addr':
    case 'ipv6_addr':
      try {
        const a = parseAddress(text);
        return a.family === (type === 'ipv4_addr' ? 4 : 6) ? formatAddress(a.family, a.value) : null;
      } catch {
        return null;
      }
    case 'inet_proto':
      return PROTOS.has(text) ? text : null;
    case 'inet_service':
      return /^\d{1,5}$/.test(text) && Number(text) <= 65535 ? String(Number(text)) : null;
    case 'raw128':
      return /^0x[0-9a-fA-F]{1,32}$/.test(text) ? `0x${BigInt(text).toString(16).padStart(32, '0')}` : null;
  }
}

function fields(types: FieldType[], text: string): string | null {
  const parts = text.split(' . ').map((p) => p.trim());
  if (parts.length !== types.length) return null;
  const out: string[] = [];
  for (let i = 0; i < parts.length; i++) {
    const f = field(types[i]!, parts[i]!);
    if (f === null) return null;
    out.push(f);
  }
  return out.join(' . ');
}

/** Splits `{ a, b : c, d }` contents on commas (no element of tsbridge's holds a comma). */
function elementList(inner: string): string[] {
  const items = inner.split(',').map((x) => x.trim());
  return items.length === 1 && items[0] === '' ? [] : items;
}

function clone(t: Table): Table {
  return {
    sets: new Map([...t.sets].map(([k, s]) => [k, { ...s, elements: new Map(s.elements) }])),
    chains: new Map([...t.chains].map(([k, c]) => [k, { base: c.base ? { ...c.base } : null, rules: [...c.rules] }])),
  };
}

export class NftModel {
  private tables = new Map<string, Table>();
  /** Every script applied successfully, in order. */
  readonly applied: string[] = [];

  /** Applies a script as one transaction; throws NftError (and changes nothing) when nft would refuse it. */
  apply(script: string): void {
    const work = new Map([...this.tables].map(([k, t]) => [k, clone(t)]));
    new Transaction(work, script).run();
    this.tables = work;
    this.applied.push(script);
  }

  /** True when the table (`inet tsbridge`) exists. */
  hasTable(key: string): boolean {
    return this.tables.has(key);
  }

  /** Normalised elements of a set (`key`) or map (`key : value`), sorted; [] when the set or table is missing. */
  elements(table: string, set: string): string[] {
    const s = this.tables.get(table)?.sets.get(set);
    return s ? dumpElements(s) : [];
  }

  /**
   * `nft -j list table FAMILY NAME` as JSON, in nft's shape where the firewall reads it (one
   * object per table, set or map — with `elem` when it has elements —, chain and rule, each with
   * a handle); null when the table does not exist. A rule's expression is its text.
   */
  listJson(family: string, name: string): string | null {
    const t = this.tables.get(`${family} ${name}`);
    if (!t) return null;
    let handle = 1;
    const out: Record<string, unknown>[] = [{ metainfo: { version: 'fake', json_schema_version: 1 } }, { table: { family, name, handle: handle++ } }];
    for (const [set, s] of t.sets) {
      const elem = dumpElements(s);
      out.push({ [s.kind]: { family, name: set, table: name, type: s.declared, handle: handle++, ...(elem.length ? { elem } : {}) } });
    }
    for (const [chain, c] of t.chains) {
      out.push({ chain: { family, table: name, name: chain, handle: handle++, ...(c.base ?? {}) } });
      for (const r of c.rules) out.push({ rule: { family, table: name, chain, handle: handle++, expr: r } });
    }
    return JSON.stringify({ nftables: out });
  }

  /** Another program's hands: removes a rule of a chain (by its index), as `nft delete rule … handle N` does. */
  deleteRule(table: string, chain: string, index: number): void {
    const c = this.tables.get(table)?.chains.get(chain);
    if (!c || index >= c.rules.length) throw new Error(`no rule ${index} in ${table} ${chain}`);
    c.rules.splice(index, 1);
  }

  /** Another program's hands: empties a set or map (`nft flush set …`). */
  flushSet(table: string, set: string): void {
    const s = this.tables.get(table)?.sets.get(set);
    if (!s) throw new Error(`no set ${set} in ${table}`);
    s.elements.clear();
  }

  dump(): NftDump {
    const out: NftDump = {};
    for (const key of [...this.tables.keys()].sort()) {
      const t = this.tables.get(key)!;
      const sets: Record<string, NftSetDump> = {};
      for (const name of [...t.sets.keys()].sort()) {
        const s = t.sets.get(name)!;
        sets[name] = { kind: s.kind, type: s.declared, elements: dumpElements(s) };
      }
      const chains: NftTableDump['chains'] = {};
      for (const name of [...t.chains.keys()].sort()) {
        const c = t.chains.get(name)!;
        chains[name] = { base: c.base ? { ...c.base } : null, rules: [...c.rules] };
      }
      out[key] = { sets, chains };
    }
    return out;
  }
}

function dumpElements(s: NftSet): string[] {
  return [...s.elements].map(([k, v]) => (s.kind === 'map' ? `${k} : ${v}` : k)).sort();
}

/** The model a script leaves when applied to an empty ruleset. */
export function modelOf(script: string): NftDump {
  const m = new NftModel();
  m.apply(script);
  return m.dump();
}

class Transaction {
  private n = 0;
  private text = '';
  /** Rules whose set and chain references are checked once the whole script is in (nft resolves forward references in one file). */
  private readonly refs: { table: string; line: number; text: string }[] = [];

  constructor(private readonly tables: Map<string, Table>, private readonly script: string) {}

  private fail(message: string): never {
    throw new NftError(message, this.n, this.text);
  }

  run(): void {
    const lines = this.script.split('\n');
    let i = 0;
    const next = (): string | null => {
      while (i < lines.length) {
        this.n = i + 1;
        this.text = lines[i]!;
        const t = lines[i++]!.trim();
        if (t !== '' && !t.startsWith('#')) return t;
      }
      return null;
    };
    for (let line = next(); line !== null; line = next()) {
      let m: RegExpExecArray | null;
      if ((m = /^table (\w+) ([\w-]+)( \{)?$/.exec(line))) {
        const key = this.tableKey(m[1]!, m[2]!);
        if (!this.tables.has(key)) this.tables.set(key, { sets: new Map(), chains: new Map() });
        if (m[3]) this.tableBlock(key, next);
      } else if (line === 'flush ruleset') {
        this.tables.clear();
      } else if ((m = /^delete table (\w+) ([\w-]+)$/.exec(line))) {
        const key = this.tableKey(m[1]!, m[2]!);
        if (!this.tables.delete(key)) this.fail(`Could not process rule: No such file or directory (table ${key})`);
      } else if ((m = /^(add|delete) element (\w+) ([\w-]+) (\w+) \{ (.*) \}$/.exec(line))) {
        const set = this.setOf(this.tableKey(m[2]!, m[3]!), m[4]!);
        for (const e of elementList(m[5]!)) {
          if (m[1] === 'add') this.addElement(set, e);
          else this.deleteElement(set, e);
        }
      } else {
        this.fail(`syntax error, unexpected statement: ${line}`);
      }
    }
    for (const r of this.refs) this.checkRefs(r.table, r.text, r.line);
  }

  private tableKey(family: string, name: string): string {
    if (!FAMILIES.has(family)) this.fail(`unknown family ${family}`);
    return `${family} ${name}`;
  }

  private setOf(tableKey: string, name: string): NftSet {
    const t = this.tables.get(tableKey);
    if (!t) this.fail(`Could not process rule: No such file or directory (table ${tableKey})`);
    const s = t.sets.get(name);
    if (!s) this.fail(`Could not process rule: No such file or directory (set ${name} in table ${tableKey})`);
    return s;
  }

  private addElement(set: NftSet, text: string): void {
    if (set.kind === 'map') {
      const parts = text.split(' : ');
      if (parts.length !== 2) this.fail(`syntax error: map element "${text}" needs key : value`);
      const key = fields(set.key, parts[0]!);
      const value = fields(set.value!, parts[1]!);
      if (key === null || value === null) this.fail(`Error: datatype mismatch: "${text}" does not fit the map's type`);
      const have = set.elements.get(key);
      if (have !== undefined && have !== value) this.fail(`Could not process rule: File exists (map key ${key} already maps to ${have})`);
      set.elements.set(key, value);
    } else {
      const key = fields(set.key, text);
      if (key === null) this.fail(`Error: datatype mismatch: "${text}" does not fit the set's type`);
      set.elements.set(key, '');
    }
  }

  private deleteElement(set: NftSet, text: string): void {
    const key = fields(set.key, text);
    if (key === null) this.fail(`Error: datatype mismatch: "${text}" is not a key of this set`);
    if (!set.elements.delete(key)) this.fail(`Could not process rule: No such file or directory (element ${key})`);
  }

  private tableBlock(key: string, next: () => string | null): void {
    const table = this.tables.get(key)!;
    for (;;) {
      const line = next();
      if (line === null) this.fail('syntax error, unexpected end of file (table block not closed)');
      if (line === '}') return;
      let m: RegExpExecArray | null;
      if ((m = /^(set|map) (\w+) \{$/.exec(line))) this.setBlock(table, m[1] as 'set' | 'map', m[2]!, next);
      else if ((m = /^chain ([\w-]+) \{$/.exec(line))) this.chainBlock(key, table, m[1]!, next);
      else this.fail(`syntax error, unexpected ${line}`);
    }
  }

  private setBlock(table: Table, kind: 'set' | 'map', name: string, next: () => string | null): void {
    let declared: string | null = null;
    const elements: string[] = [];
    for (;;) {
      const line = next();
      if (line === null) this.fail(`syntax error, unexpected end of file (${kind} ${name} not closed)`);
      if (line === '}') break;
      let m: RegExpExecArray | null;
      if (/^(type|typeof) /.test(line) && declared === null) declared = line;
      else if ((m = /^elements = \{ (.*) \}$/.exec(line))) elements.push(...elementList(m[1]!));
      else this.fail(`syntax error, unexpected ${line} in ${kind} ${name}`);
    }
    if (declared === null) this.fail(`${kind} ${name} has no type`);
    const have = table.sets.get(name);
    if (have && (have.declared !== declared || have.kind !== kind)) this.fail(`Could not process rule: File exists (${kind} ${name} declared with another type)`);
    const set = have ?? { kind, declared, ...this.types(kind, declared), elements: new Map<string, string>() };
    table.sets.set(name, set);
    for (const e of elements) this.addElement(set, e);
  }

  private types(kind: 'set' | 'map', declared: string): { key: FieldType[]; value: FieldType[] | null } {
    const parse = (text: string, typeOf: boolean): FieldType[] =>
      text.split(' . ').map((part) => {
        const t = typeOf ? TYPEOF_NAMES[part.trim()] : TYPE_NAMES[part.trim()];
        if (!t) this.fail(`unknown ${typeOf ? 'expression' : 'datatype'} ${part.trim()}`);
        return t;
      });
    const typeOf = declared.startsWith('typeof ');
    const body = declared.slice(typeOf ? 'typeof '.length : 'type '.length);
    const [k, v, ...rest] = body.split(' : ');
    if (rest.length > 0 || (kind === 'map') !== (v !== undefined)) this.fail(`bad ${kind} type ${body}`);
    return { key: parse(k!, typeOf), value: v === undefined ? null : parse(v, typeOf) };
  }

  private chainBlock(tableKey: string, table: Table, name: string, next: () => string | null): void {
    const family = tableKey.split(' ')[0]!;
    let chain = table.chains.get(name);
    const fresh = !chain;
    chain ??= { base: null, rules: [] };
    let first = true;
    for (;;) {
      const line = next();
      if (line === null) this.fail(`syntax error, unexpected end of file (chain ${name} not closed)`);
      if (line === '}') break;
      if (first && line.startsWith('type ')) {
        const base = this.baseChain(family, line);
        if (!fresh && JSON.stringify(chain.base) !== JSON.stringify(base)) this.fail(`Could not process rule: chain ${name} exists with another hook`);
        chain.base = base;
      } else {
        this.rule(line);
        chain.rules.push(line);
        this.refs.push({ table: tableKey, line: this.n, text: line });
      }
      first = false;
    }
    table.chains.set(name, chain);
  }

  private baseChain(family: string, line: string): BaseChain {
    const m = /^type (\w+) hook (\w+) priority ([\w +-]+?|-?\d+); policy (accept|drop);$/.exec(line);
    if (!m) this.fail(`syntax error in base chain declaration: ${line}`);
    const [, type, hook, priority, policy] = m as unknown as [string, string, string, string, string];
    if (!['filter', 'nat', 'route'].includes(type)) this.fail(`unknown chain type ${type}`);
    if (type === 'nat' && family === 'bridge') this.fail('Could not process rule: Operation not supported (nat chains in the bridge family)');
    if (!HOOKS[family]?.includes(hook)) this.fail(`unknown hook ${hook} for family ${family}`);
    const p = /^(?:(-?\d+)|(\w+)(?: ([+-]) (\d+))?)$/.exec(priority);
    if (!p || (p[2] !== undefined && !PRIORITY_NAMES.has(p[2]))) this.fail(`bad priority ${priority}`);
    return { type, hook, priority, policy };
  }

  /** What can be checked of a rule without an nft parser: balanced braces, no stray characters. */
  private rule(line: string): void {
    let depth = 0;
    for (const ch of line) {
      if (ch === '{') depth++;
      if (ch === '}' && --depth < 0) this.fail('syntax error, unbalanced }');
    }
    if (depth !== 0) this.fail('syntax error, unbalanced {');
    if (/[;\\`$]/.test(line)) this.fail(`syntax error, unexpected character in ${line}`);
  }

  private checkRefs(tableKey: string, text: string, line: number): void {
    const table = this.tables.get(tableKey);
    if (!table) return; // the table was deleted later in the same script: its rules went with it
    for (const m of text.matchAll(/@(\w+)\b(?!,)/g)) {
      if (!table.sets.has(m[1]!)) throw new NftError(`Could not process rule: No such file or directory (set ${m[1]} does not exist)`, line, text);
    }
    for (const m of text.matchAll(/\b(?:jump|goto) ([\w-]+)/g)) {
      if (!table.chains.has(m[1]!)) throw new NftError(`Could not process rule: No such file or directory (chain ${m[1]} does not exist)`, line, text);
    }
  }
}
