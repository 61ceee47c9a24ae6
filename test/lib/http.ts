/**
 * HTTP over a Unix socket, byte for byte as a test wants it (any method, path, headers and body),
 * and an app served on a socket in a temporary directory.
 */
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface RawReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  raw: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  body: any;
}

export interface RawRequest {
  method?: string;
  path: string;
  /** undefined sends no body (and no Content-Length). */
  body?: string | Buffer;
  headers?: Record<string, string | number>;
}

/** Like dockerd by default: POST, its Accept header, no Content-Type. */
export function socketRequest(socketPath: string, r: RawRequest): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { Accept: 'application/vnd.docker.plugins.v1.2+json', ...r.headers };
    if (r.body !== undefined && headers['Content-Length'] === undefined) headers['Content-Length'] = Buffer.byteLength(r.body);
    const req = http.request({ socketPath, path: r.path, method: r.method ?? 'POST', headers, agent: false }, (res) => {
      let raw = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (raw += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, raw, body: parseJson(raw) }));
    });
    req.on('error', reject);
    if (r.body !== undefined) req.write(r.body);
    req.end();
  });
}

/** Sends bytes as they are (for requests Node's client would not write) and reads the raw reply. */
export function rawExchange(socketPath: string, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socketPath);
    let out = '';
    c.setEncoding('utf8');
    c.on('connect', () => c.end(bytes));
    c.on('data', (d: string) => (out += d));
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
}

export function parseJson(raw: string): any {
  try {
    return JSON.parse(raw);
  } catch {
    return undefined;
  }
}

/** Listens with `app` on a fresh socket; `close` stops it and removes the directory. */
export async function serveOnSocket(app: (req: http.IncomingMessage, res: http.ServerResponse) => void, prepare?: (s: http.Server) => void): Promise<{ socket: string; server: http.Server; close: () => Promise<void> }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'tsbridge-http-'));
  const socket = path.join(dir, 'tsbridge.sock');
  const server = http.createServer(app);
  prepare?.(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => resolve());
  });
  return {
    socket,
    server,
    close: async () => {
      await new Promise<void>((r) => server.close(() => r()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Exposition text → `name{labels}` → value (labels sorted, as written). */
export function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}
