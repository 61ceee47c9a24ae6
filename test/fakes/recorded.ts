/**
 * Requests recorded from live Docker daemons, kept in the repository so a fresh clone replays
 * them: 20.10 (test/fixtures/docker/20.10-requests.jsonl, the default) and 28.5
 * (test/fixtures/docker/28.5-requests.jsonl, re-recorded by scripts/record-requests.sh 28).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const RECORDED_FILE = path.resolve(REPO_ROOT, 'test', 'fixtures', 'docker', '20.10-requests.jsonl');
export const RECORDED_28_FILE = path.resolve(REPO_ROOT, 'test', 'fixtures', 'docker', '28.5-requests.jsonl');

export interface RecordedCall {
  /** 0-based line number in the file. */
  line: number;
  scenario: string;
  call: string;
  request: Record<string, any> | null;
}

export function loadRecorded(file: string = RECORDED_FILE): RecordedCall[] {
  if (!existsSync(file)) {
    throw new Error(`recorded Docker requests not found at ${file}: these tests replay them and cannot run without`);
  }
  return readFileSync(file, 'utf8')
    .split('\n')
    .map((text, line) => ({ text, line }))
    .filter(({ text }) => text.trim() !== '')
    .map(({ text, line }) => {
      const o = JSON.parse(text) as { scenario: string; call: string; request: Record<string, any> | null };
      return { line, scenario: o.scenario, call: o.call, request: o.request };
    });
}

export function recordedOf(call: string, file: string = RECORDED_FILE): RecordedCall[] {
  const all = loadRecorded(file).filter((r) => r.call === call);
  if (all.length === 0) throw new Error(`no recorded ${call} in ${file}`);
  return all;
}
