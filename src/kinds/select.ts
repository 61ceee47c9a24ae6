/** How a network's options pick its kind, over a list of kinds (src/kinds/registry.ts holds the list). */
import { fail } from '../errors.js';
import type { Kind, KindOptions, KindRegistry } from './types.js';

/** The option naming a network's kind: `docker network create -d tsbridge -o io.tsbridge.mode=NAME`. */
export const MODE_OPTION = 'io.tsbridge.mode';

/** A registry over these kinds; the first is the fallback when the options name none. */
export function makeRegistry(kinds: readonly Kind[]): KindRegistry {
  if (kinds.length === 0) throw new Error('no kinds of network registered');
  const byName = new Map<string, Kind>();
  for (const k of kinds) {
    if (byName.has(k.name)) throw new Error(`two kinds of network named "${k.name}"`);
    byName.set(k.name, k);
  }
  const names = () => [...byName.keys()].join(', ');
  return {
    fallback: kinds[0]!,
    all: kinds,
    get(name) {
      const k = byName.get(name);
      if (!k) fail('STATE', { detail: `a network of kind "${name}", which this tsbridge does not know (known: ${names()}); refusing to start — was it written by a newer version?` });
      return k;
    },
    select(options: KindOptions) {
      const mode = options[MODE_OPTION];
      if (mode !== undefined) {
        const k = byName.get(mode);
        if (!k) fail('BAD_OPTION', { option: MODE_OPTION, value: mode, detail: `the modes are ${names()}` });
        return k;
      }
      const claiming = kinds.filter((k) => k.claims?.(options));
      if (claiming.length > 1) {
        fail('BAD_OPTION', { option: MODE_OPTION, value: '', detail: `these options fit modes ${claiming.map((k) => k.name).join(' and ')}: name one` });
      }
      return claiming[0] ?? kinds[0]!;
    },
  };
}
