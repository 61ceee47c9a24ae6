/**
 * One running tsbridge per state directory. Two instances writing one state.json would each
 * overwrite the other's networks, so the plugin takes this lock before it reads its state and
 * holds it until it exits; a second one on the same directory refuses to start, naming the first.
 *
 * The lock is a listening Unix socket in Linux's abstract namespace, named after the directory's
 * device and inode (the same through a bind mount, so the managed plugin and a service on the
 * host's directory see each other). Binding a name is atomic, and the kernel releases it when
 * the process ends in any way, SIGKILL included: no stale lock to clean after a crash, no race
 * between two starts. The holder answers a connection with who it is; the same answer, with a
 * random token, is in `.tsbridge.lock` in the directory (mode 0600), which is how a newcomer
 * tells a genuine holder from another program squatting the name (abstract names carry no
 * permissions): against such a squatter, tsbridge starts with a warning rather than not at all.
 * Abstract names belong to a network namespace: both install ways use the host's.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const LOCK_FILE = '.tsbridge.lock';

export interface LockHolder {
  pid: number;
  instance: string;
  socket: string;
  stateDir: string;
  /** ISO time the holder took the lock. */
  since: string;
}

export interface StateLock {
  /** The abstract socket name (without the leading NUL), for logs. */
  name: string;
  /** Set when the name was held by something that is not tsbridge: the lock is not held. */
  warning?: string;
  release(): Promise<void>;
}

export class LockedError extends Error {
  constructor(readonly stateDir: string, readonly holder: LockHolder) {
    super(
      `state directory ${stateDir} is in use by another tsbridge: pid ${holder.pid}, instance "${holder.instance}", socket ${holder.socket}, since ${holder.since}. ` +
        'Each instance needs its own state directory (TSBRIDGE_STATE_DIR); stop the other one first to take over its state.',
    );
    this.name = 'LockedError';
  }
}

/** Takes the lock of `stateDir` (created if missing) or throws LockedError naming the holder. */
export async function lockStateDir(stateDir: string, me: Omit<LockHolder, 'stateDir' | 'since'>): Promise<StateLock> {
  await fs.mkdir(stateDir, { recursive: true, mode: 0o700 });
  const st = await fs.stat(stateDir);
  const name = `tsbridge-state-lock/${st.dev}:${st.ino}`;
  const token = randomBytes(16).toString('hex');
  const holder: LockHolder = { ...me, stateDir: path.resolve(stateDir), since: new Date().toISOString() };
  const answer = JSON.stringify({ ...holder, token }) + '\n';
  for (let attempt = 0; ; attempt++) {
    const server = net.createServer((c) => {
      c.on('error', () => undefined);
      c.end(answer);
    });
    server.unref(); // never what keeps the process alive
    const bound = await new Promise<boolean>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' ? resolve(false) : reject(e)));
      server.once('listening', () => resolve(true));
      server.listen(`\0${name}`);
    });
    if (bound) {
      server.removeAllListeners('error');
      await writeLockFile(stateDir, answer);
      return { name, release: () => release(server, stateDir, token) };
    }
    // Someone holds the name: tsbridge (its answer matches the lock file) or a squatter.
    const theirs = await ask(name);
    const file = await readLockFile(stateDir);
    if (theirs && file && theirs.token === file.token) {
      const { token: _t, ...who } = theirs;
      throw new LockedError(path.resolve(stateDir), who);
    }
    // A holder that has just bound the name writes its file a moment later: ask again, then
    // conclude that whatever holds the name is not a tsbridge of this directory.
    if (attempt < 10) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const warning = `the lock name of ${stateDir} is held by a process that is not tsbridge${theirs ? ` (it claims pid ${theirs.pid})` : ''}: running without the lock`;
    await writeLockFile(stateDir, answer);
    return { name, warning, release: () => release(null, stateDir, token) };
  }
}

interface Answer extends LockHolder {
  token: string;
}

/** What the holder of an abstract name answers, or null (no answer within a second, or not ours). */
async function ask(name: string): Promise<Answer | null> {
  return new Promise((resolve) => {
    let text = '';
    const c = net.connect(`\0${name}`);
    const done = (v: Answer | null) => {
      clearTimeout(timer);
      c.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(null), 1000);
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      text += d;
      if (text.length > 4096) done(null);
    });
    c.on('end', () => done(parseAnswer(text)));
    c.on('error', () => done(null));
  });
}

function parseAnswer(text: string): Answer | null {
  try {
    const o = JSON.parse(text) as Answer;
    return typeof o === 'object' && o !== null && typeof o.token === 'string' && typeof o.pid === 'number' ? o : null;
  } catch {
    return null;
  }
}

async function readLockFile(stateDir: string): Promise<Answer | null> {
  try {
    return parseAnswer(await fs.readFile(path.join(stateDir, LOCK_FILE), 'utf8'));
  } catch {
    return null;
  }
}

/** Replaces the lock file atomically (a reader sees the old or the new one, whole). */
async function writeLockFile(stateDir: string, text: string): Promise<void> {
  const tmp = path.join(stateDir, `${LOCK_FILE}.${process.pid}.tmp`);
  await fs.writeFile(tmp, text, { mode: 0o600 });
  await fs.rename(tmp, path.join(stateDir, LOCK_FILE));
}

async function release(server: net.Server | null, stateDir: string, token: string): Promise<void> {
  const file = await readLockFile(stateDir);
  if (file?.token === token) await fs.rm(path.join(stateDir, LOCK_FILE), { force: true });
  if (server) await new Promise<void>((r) => server.close(() => r()));
}

/** Who holds the lock of `stateDir`, as its lock file says (for `tsbridge status`); null if no file. */
export async function lockHolder(stateDir: string): Promise<LockHolder | null> {
  const a = await readLockFile(stateDir);
  if (!a) return null;
  const { token: _t, ...who } = a;
  return who;
}
