// Preloaded with `node --import` before dist/src/main.js inside the managed plugin.
//
// tsbridge's forward shim must go through the same iptables variant (nft or legacy) as the
// host's dockerd, but a plugin cannot see the host's `update-alternatives` choice. The rootfs
// carries both variants, each as a directory of links (iptables, ip6tables, *-restore, *-save)
// under /opt/tsbridge/xtables/<variant>; this module puts the chosen one first on PATH, so every
// `iptables` the plugin runs is that variant, and hands its choice to the core in
// TSBRIDGE_IPTABLES so both agree.
//
// The decision itself is the core's (dist/src/kernel/real/iptables-variant.js, the same code
// a tsbridge outside a plugin runs); only how the two variants are reached is the plugin's.
//
// TSBRIDGE_IPTABLES (settable with `docker plugin set`):
//   auto    (default) the variant that holds more of Docker's chains; on a tie (none at all:
//           dockerd --iptables=false, or not started yet), the one /usr/sbin/iptables points
//           to in the rootfs (the build host's choice; nft for the Dockerfile's Debian)
//   nft | legacy  that variant, no detection
import { execFileSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';

const core = await import(new URL('../dist/src/kernel/real/iptables-variant.js', import.meta.url).href);

const ROOT = process.env.TSBRIDGE_XTABLES_DIR || '/opt/tsbridge/xtables';

function log(level, message, fields) {
  process.stdout.write(JSON.stringify({ level, message, ...fields, timestamp: new Date().toISOString() }) + '\n');
}

/** Lines of `iptables-save` (v4, all tables) mentioning Docker's chains; -1 when that variant cannot be read. */
function dockerRules(variant) {
  try {
    const out = execFileSync(`${ROOT}/${variant}/iptables-save`, [], {
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
      encoding: 'utf8',
      env: { ...process.env, LC_ALL: 'C' },
    });
    return core.dockerLines(out);
  } catch {
    return -1;
  }
}

/** The variant /usr/sbin/iptables points to in this rootfs. */
function builtDefault() {
  try {
    return realpathSync('/usr/sbin/iptables').includes('legacy') ? 'legacy' : 'nft';
  } catch {
    return 'nft';
  }
}

let setting;
try {
  setting = core.iptablesSetting(process.env);
} catch (e) {
  console.error(`tsbridge: ${e.message}`);
  process.exit(2);
}
const counts = setting === 'auto' ? { nft: dockerRules('nft'), legacy: dockerRules('legacy') } : { nft: -1, legacy: -1 };
const { variant, why } = core.chooseVariant(setting, counts, builtDefault());

const dir = `${ROOT}/${variant}`;
if (!existsSync(`${dir}/iptables`)) {
  console.error(`tsbridge: ${dir}/iptables is missing from the plugin's rootfs`);
  process.exit(2);
}
process.env.PATH = `${dir}:${process.env.PATH || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'}`;
process.env[core.IPTABLES_ENV] = variant;
log('info', 'iptables variant', { variant, why });
