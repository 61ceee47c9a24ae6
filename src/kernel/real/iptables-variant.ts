/**
 * Which iptables variant the forward shim must use: the one holding Docker's chains.
 *
 * iptables comes in two variants that do not see each other's rules: iptables-nft (rules in
 * nftables tables `ip filter`, …) and iptables-legacy (the old x_tables). Docker's FORWARD
 * DROP policy lives in whichever variant dockerd ran, and tsbridge's accept must be in the same
 * one: an accept in the other variant is another base chain, and cannot undo that drop.
 *
 * TSBRIDGE_IPTABLES:
 *   auto    (default) the variant whose `iptables-save` holds more of Docker's chains; when
 *           neither holds any (dockerd --iptables=false, or not started yet), the variant of
 *           the host's own `iptables` command (what dockerd would pick, as it runs `iptables`)
 *   nft | legacy   that variant, no detection
 *
 * Detection only reads: `iptables-nft-save`, `iptables-legacy-save` (all tables, which never
 * loads a kernel module or creates a table) and `iptables --version`.
 */
import type { Runner } from './exec.js';

export type IptablesVariant = 'nft' | 'legacy';
export type IptablesSetting = IptablesVariant | 'auto';

export const IPTABLES_ENV = 'TSBRIDGE_IPTABLES';

export interface IptablesChoice {
  variant: IptablesVariant;
  /** Commands for IPv4 and IPv6 (their `-restore` siblings are `${v4}-restore`, `${v6}-restore`). */
  v4: string;
  v6: string;
  /** One sentence for the log: why this variant. */
  why: string;
}

/** TSBRIDGE_IPTABLES → setting; throws naming the variable on anything else. */
export function iptablesSetting(env: NodeJS.ProcessEnv = process.env): IptablesSetting {
  const raw = (env[IPTABLES_ENV] ?? '').trim().toLowerCase();
  if (raw === '') return 'auto';
  if (raw === 'auto' || raw === 'nft' || raw === 'legacy') return raw;
  throw new Error(`${IPTABLES_ENV} must be auto, nft or legacy (got "${env[IPTABLES_ENV]}")`);
}

/** Lines of an `iptables-save` listing that belong to Docker (its chains and the jumps to them). */
export function dockerLines(save: string): number {
  return save.split('\n').filter((l) => !l.startsWith('#') && /\bDOCKER(\b|-)/.test(l)).length;
}

/** The variant an `iptables --version` line names: `iptables v1.8.9 (nf_tables)` / `(legacy)`; before 1.8 there was only legacy. */
export function versionVariant(version: string): IptablesVariant | null {
  if (!/iptables v\d/.test(version)) return null;
  return version.includes('nf_tables') ? 'nft' : 'legacy';
}

/**
 * The pure decision. `docker` counts Docker's lines per variant (-1: that variant cannot be
 * read); `hostDefault` is the variant of the plain `iptables` command (null: none).
 */
export function chooseVariant(
  setting: IptablesSetting,
  docker: Record<IptablesVariant, number>,
  hostDefault: IptablesVariant | null,
): { variant: IptablesVariant; why: string } {
  if (setting !== 'auto') return { variant: setting, why: `${IPTABLES_ENV}=${setting}` };
  const { nft, legacy } = docker;
  if (legacy > 0 && legacy > nft) return { variant: 'legacy', why: `Docker's chains are in iptables-legacy (${legacy} lines; nft ${nft})` };
  if (nft > 0 && nft > legacy) return { variant: 'nft', why: `Docker's chains are in iptables-nft (${nft} lines; legacy ${legacy})` };
  if (hostDefault) return { variant: hostDefault, why: `no clear answer from Docker's chains (nft ${nft}, legacy ${legacy} lines): the host's iptables is ${hostDefault}` };
  return { variant: 'nft', why: `no clear answer from Docker's chains (nft ${nft}, legacy ${legacy} lines) and no plain iptables: nft` };
}

async function tryRun(runner: Runner, cmd: string, args: string[]): Promise<{ ok: boolean; stdout: string }> {
  try {
    const r = await runner.run(cmd, args, { allowFail: true });
    return { ok: r.exitCode === 0, stdout: r.stdout };
  } catch {
    return { ok: false, stdout: '' }; // not installed
  }
}

/**
 * Detects (or takes) the variant and the commands that run it: `iptables-nft` /
 * `iptables-legacy` where those names exist (Debian, Fedora, the managed plugin's rootfs), else
 * the plain `iptables` when it is that variant.
 */
export async function detectIptables(runner: Runner, setting: IptablesSetting): Promise<IptablesChoice> {
  const version = await tryRun(runner, 'iptables', ['--version']);
  const hostDefault = version.ok ? versionVariant(version.stdout) : null;
  const docker = { nft: -1, legacy: -1 };
  if (setting === 'auto') {
    for (const v of ['nft', 'legacy'] as const) {
      const save = await tryRun(runner, `iptables-${v}-save`, []);
      if (save.ok) docker[v] = dockerLines(save.stdout);
      else if (hostDefault === v) {
        const plain = await tryRun(runner, 'iptables-save', []);
        if (plain.ok) docker[v] = dockerLines(plain.stdout);
      }
    }
  }
  const { variant, why } = chooseVariant(setting, docker, hostDefault);
  const named = await tryRun(runner, `iptables-${variant}`, ['--version']);
  if (named.ok) return { variant, v4: `iptables-${variant}`, v6: `ip6tables-${variant}`, why };
  if (hostDefault === variant) return { variant, v4: 'iptables', v6: 'ip6tables', why };
  // Nothing runs that variant: the shim will find iptables unusable and say so.
  return { variant, v4: `iptables-${variant}`, v6: `ip6tables-${variant}`, why: `${why}; but iptables-${variant} does not run here` };
}
