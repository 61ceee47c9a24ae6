/**
 * Requests recorded from a live Docker 20.10 daemon, kept in the repository
 * (test/fixtures/docker/20.10-requests.jsonl) so a fresh clone replays them.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const RECORDED_FILE = path.resolve(REPO_ROOT, 'test', 'fixtures', 'docker', '20.10-requests.jsonl');

export interface RecordedCall {
  /** 0-based line number in the file. */
  line: number;
  scenario: string;
  call: string;
  request: Record<string, any> | null;
}

export function loadRecorded(): RecordedCall[] {
  if (!existsSync(RECORDED_FILE)) {
    throw new Error(`recorded Docker requests not found at ${RECORDED_FILE}: these tests replay them and cannot run without`);
  }
  return readFileSync(RECORDED_FILE, 'utf8')
    .split('\n')
    .map((text, line) => ({ text, line }))
    .filter(({ text }) => text.trim() !== '')
    .map(({ text, line }) => {
      const o = JSON.parse(text) as { scenario: string; call: string; request: Record<string, any> | null };
      return { line, scenario: o.scenario, call: o.call, request: o.request };
    });
}

export function recordedOf(call: string): RecordedCall[] {
  const all = loadRecorded().filter((r) => r.call === call);
  if (all.length === 0) throw new Error(`no recorded ${call} in ${RECORDED_FILE}`);
  return all;
}
