// Preloaded with `node --import` before dist/src/main.js inside the managed plugin.
//
// tsbridge's forward shim must go through the same iptables variant (nft or legacy) as the
// host's dockerd, but a plugin cannot see the host's `update-alternatives` choice. The rootfs
// carries both variants, each as a directory of links (iptables, ip6tables, *-restore, *-save)
// under /opt/tsbridge/xtables/<variant>; this module puts the chosen one first on PATH, so every
// `iptables` the plugin runs is that variant.
//
// TSBRIDGE_IPTABLES (settable with `docker plugin set`):
//   auto    (default) the variant that holds more of Docker's chains; on a tie (none at all:
//           dockerd --iptables=false, or not started yet), the one /usr/sbin/iptables points
//           to in the rootfs (the build host's choice; nft for the Dockerfile's Debian)
//   nft | legacy  that variant, no detection
import { execFileSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';

const ROOT = process.env.TSBRIDGE_XTABLES_DIR || '/opt/tsbridge/xtables';
const VARIANTS = ['nft', 'legacy'];

function log(level, message, fields) {
  process.stdout.write(JSON.stringify({ level, message, ...fields, timestamp: new Date().toISOString() }) + '\n');
}

/** Lines of `iptables-save` (v4) mentioning Docker's chains; -1 when that variant cannot be read. */
function dockerRules(variant) {
  try {
    const out = execFileSync(`${ROOT}/${variant}/iptables-save`, [], {
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
      encoding: 'utf8',
      env: { ...process.env, LC_ALL: 'C' },
    });
    return out.split('\n').filter((l) => /\bDOCKER\b|DOCKER-USER|DOCKER-ISOLATION/.test(l)).length;
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

const wanted = (process.env.TSBRIDGE_IPTABLES || 'auto').trim().toLowerCase();
let variant;
let why;
if (VARIANTS.includes(wanted)) {
  variant = wanted;
  why = 'TSBRIDGE_IPTABLES';
} else if (wanted === 'auto') {
  const nft = dockerRules('nft');
  const legacy = dockerRules('legacy');
  // Both can hold rules after a host switched variants: the one with more of Docker's wins.
  if (legacy > 0 && legacy > nft) [variant, why] = ['legacy', `Docker's chains are in iptables-legacy (${legacy} lines; nft ${nft})`];
  else if (nft > 0 && nft > legacy) [variant, why] = ['nft', `Docker's chains are in iptables-nft (${nft} lines; legacy ${legacy})`];
  else [variant, why] = [builtDefault(), `no clear answer (nft ${nft}, legacy ${legacy} lines): rootfs default`];
} else {
  console.error(`tsbridge: TSBRIDGE_IPTABLES must be auto, nft or legacy (got "${process.env.TSBRIDGE_IPTABLES}")`);
  process.exit(2);
}

const dir = `${ROOT}/${variant}`;
if (!existsSync(`${dir}/iptables`)) {
  console.error(`tsbridge: ${dir}/iptables is missing from the plugin's rootfs`);
  process.exit(2);
}
process.env.PATH = `${dir}:${process.env.PATH || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'}`;
log('info', 'iptables variant', { variant, why });
