/**
 * The protocol edge: Express on a Unix socket. Bodies are parsed whatever their Content-Type
 * (Docker sends none). Each route validates, calls one use case and shapes Docker's reply.
 * Errors go through reply.ts — including Express's own (a body too large, a charset it cannot
 * decode), so every answer on the socket is JSON with `Err` and `Error`.
 *
 * Besides Docker's calls (POST), `GET /Plugin.Health` answers how the plugin is doing
 * (src/metrics/health.ts); `tsbridge health` asks it.
 */
import type { Server } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import { TsbridgeError } from '../errors.js';
import type { Logger } from '../logging.js';
import { shortId } from '../logging.js';
import type { DriverService } from '../driver/service.js';
import type { IpamService } from '../ipam/service.js';
import type { HealthReport } from '../metrics/health.js';
import type { Metrics } from '../metrics/metrics.js';
import { parseRequestAddress, parseReleaseAddress, parseReleasePool, parseRequestPool } from '../protocol/ipam.js';
import { parseCreateEndpoint, parseCreateNetwork, parseIds, parsePortBindings } from '../protocol/network.js';
import { dockerId, requireObject } from '../protocol/validate.js';
import { OVERLAY_OPTION } from '../kinds/overlay/settings.js';
import { errorReply } from './reply.js';
import { adminRoutes } from './admin.js';
import type { Convergence } from '../driver/converge.js';
import type { Doctor } from '../driver/doctor.js';

type Handler = (body: Record<string, unknown>) => Promise<unknown>;

export interface Route {
  handler: Handler;
  /**
   * True for calls whose arguments matter: their body must be a JSON object. The others
   * (Activate, capabilities, and the notifications tsbridge ignores) accept an empty body,
   * `null` or an object.
   */
  args: boolean;
}

export interface AppDeps {
  driver: DriverService;
  ipam: IpamService;
  log: Logger;
  /** Implements list for /Plugin.Activate (legacy plugins). */
  implements?: string[];
  metrics?: Metrics;
  health?: () => HealthReport;
  /** Convergence with Docker, fed by `tsbridge gc` through the admin call (src/server/admin.ts). */
  convergence?: Convergence;
  /** `tsbridge doctor` and its `--fix` (src/server/admin.ts). */
  doctor?: Doctor;
  repair?: () => Promise<unknown>;
}

/** Largest body accepted: 10,000 port bindings (the most one call may carry) take under 1 MiB. */
export const BODY_LIMIT = '4mb';
export const HEALTH_PATH = '/Plugin.Health';

export function routes(d: AppDeps): Map<string, Route> {
  const none = (handler: Handler): Route => ({ handler, args: false });
  const withArgs = (handler: Handler): Route => ({ handler, args: true });
  const empty = async () => ({});
  return new Map<string, Route>([
    ['/Plugin.Activate', none(async () => ({ Implements: d.implements ?? ['NetworkDriver', 'IpamDriver'] }))],

    ['/NetworkDriver.GetCapabilities', none(async () => ({ Scope: 'local', ConnectivityScope: 'local' }))],
    ['/NetworkDriver.CreateNetwork', withArgs(async (b) => {
      await d.driver.createNetwork(parseCreateNetwork(b));
      return {};
    })],
    ['/NetworkDriver.DeleteNetwork', withArgs(async (b) => {
      await d.driver.deleteNetwork(dockerId(b.NetworkID, 'NetworkID'));
      return {};
    })],
    ['/NetworkDriver.CreateEndpoint', withArgs(async (b) => {
      const spec = parseCreateEndpoint(b);
      const { mac } = await d.driver.createEndpoint(spec);
      // Only fields Docker left empty may be returned; echoing a set one fails the call.
      return { Interface: spec.mac ? null : { MacAddress: mac } };
    })],
    ['/NetworkDriver.DeleteEndpoint', withArgs(async (b) => {
      const { networkId, endpointId } = parseIds(b);
      await d.driver.deleteEndpoint(networkId, endpointId);
      return {};
    })],
    ['/NetworkDriver.EndpointOperInfo', withArgs(async (b) => {
      const { networkId, endpointId } = parseIds(b);
      return { Value: d.driver.endpointInfo(networkId, endpointId) };
    })],
    ['/NetworkDriver.Join', withArgs(async (b) => {
      const { networkId, endpointId } = parseIds(b);
      const j = await d.driver.join(networkId, endpointId);
      const reply: Record<string, unknown> = {
        InterfaceName: { SrcName: j.srcName, DstPrefix: j.dstPrefix },
        StaticRoutes: j.staticRoutes.map((r) => ({ Destination: r.destination, RouteType: r.type === 'via' ? 0 : 1, NextHop: r.nextHop })),
        DisableGatewayService: false,
      };
      if (j.gateway) reply.Gateway = j.gateway;
      if (j.gatewayIpv6) reply.GatewayIPv6 = j.gatewayIpv6;
      return reply;
    })],
    ['/NetworkDriver.Leave', withArgs(async (b) => {
      const { networkId, endpointId } = parseIds(b);
      await d.driver.leave(networkId, endpointId);
      return {};
    })],
    ['/NetworkDriver.ProgramExternalConnectivity', withArgs(async (b) => {
      const { networkId, endpointId } = parseIds(b);
      await d.driver.programExternalConnectivity(networkId, endpointId, parsePortBindings(b.Options));
      return {};
    })],
    ['/NetworkDriver.RevokeExternalConnectivity', withArgs(async (b) => {
      const { networkId, endpointId } = parseIds(b);
      await d.driver.revokeExternalConnectivity(networkId, endpointId);
      return {};
    })],
    ['/NetworkDriver.DiscoverNew', none(empty)],
    ['/NetworkDriver.DiscoverDelete', none(empty)],
    ['/NetworkDriver.AllocateNetwork', none(async () => ({ Options: {} }))],
    ['/NetworkDriver.FreeNetwork', none(empty)],

    ['/IpamDriver.GetCapabilities', none(async () => ({ RequiresMACAddress: false, RequiresRequestReplay: false }))],
    ['/IpamDriver.GetDefaultAddressSpaces', none(async () => ({ LocalDefaultAddressSpace: 'local', GlobalDefaultAddressSpace: 'global' }))],
    ['/IpamDriver.RequestPool', withArgs(async (b) => {
      const { pool, subPool, v6, options } = parseRequestPool(b);
      const r = await d.ipam.requestPool({ pool, subPool, v6, overlay: options[OVERLAY_OPTION] ?? '' });
      return { PoolID: r.poolId, Pool: r.pool, Data: {} };
    })],
    ['/IpamDriver.ReleasePool', withArgs(async (b) => {
      await d.ipam.releasePool(parseReleasePool(b));
      return {};
    })],
    ['/IpamDriver.RequestAddress', withArgs(async (b) => {
      const { poolId, address, kind } = parseRequestAddress(b);
      return { Address: await d.ipam.requestAddress(poolId, address, kind), Data: {} };
    })],
    ['/IpamDriver.ReleaseAddress', withArgs(async (b) => {
      const { poolId, address } = parseReleaseAddress(b);
      await d.ipam.releaseAddress(poolId, address);
      return {};
    })],
    // tsbridge's own calls on the same socket (Docker never makes them): src/server/admin.ts.
    ...adminRoutes(d).map(([path, handler]) => [path, withArgs(handler)] as [string, Route]),
  ]);
}

/** Calls logged at debug level only: Docker asks them often and they change nothing. */
const QUIET = /(EndpointOperInfo|GetCapabilities)$/;

export function createApp(d: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  const table = routes(d);
  const observe = (path: string, outcome: string, started: bigint) => d.metrics?.call(table.has(path) ? path.slice(1) : 'unknown', outcome, secondsSince(started));

  app.use((_req, res, next) => {
    res.locals.started = process.hrtime.bigint();
    res.locals.cpu = process.cpuUsage();
    next();
  });
  app.get(HEALTH_PATH, (_req, res) => sendHealth(d, res));
  app.post(HEALTH_PATH, (_req, res) => sendHealth(d, res));
  // Docker sends no Content-Type: take every body as text and parse it ourselves. No inflating:
  // Docker never compresses, and a compressed body could be a bomb.
  app.use(express.text({ type: () => true, limit: BODY_LIMIT, inflate: false }));
  app.post(/.*/, async (req: Request, res: Response) => {
    const started = res.locals.started as bigint;
    const route = table.get(req.path);
    if (!route) {
      observe(req.path, 'UNKNOWN_CALL', started);
      res.status(404).json(errorBody(`unknown call ${req.path}`));
      return;
    }
    const fields: Record<string, unknown> = { call: req.path.slice(1) };
    try {
      const body = parseBody(req.body, route.args);
      for (const k of ['NetworkID', 'EndpointID', 'PoolID', 'Pool', 'Address'] as const) {
        if (typeof body[k] === 'string' && body[k]) fields[k] = k.endsWith('ID') && k !== 'PoolID' ? shortId(body[k] as string) : (body[k] as string).slice(0, 100);
      }
      const out = await route.handler(body);
      fields.ms = msSince(started);
      // The whole process's CPU meanwhile (calls rarely overlap): beside `ms`, it tells the
      // plugin's own work from waiting — for the state lock, a command, the disk, or a CPU.
      fields.cpuMs = cpuMsSince(res.locals.cpu as NodeJS.CpuUsage);
      if (QUIET.test(req.path)) d.log.debug('ok', fields);
      else d.log.info('ok', fields);
      observe(req.path, 'ok', started);
      res.status(200).json(out);
    } catch (e) {
      const { status, body: errBody, message, code } = errorReply(e);
      fields.ms = msSince(started);
      d.log.error('failed', { ...fields, code, error: message });
      observe(req.path, code, started);
      res.status(status).json(errBody);
    }
  });
  app.all(/.*/, (req, res) => {
    const started = res.locals.started as bigint;
    if (table.has(req.path)) {
      observe(req.path, 'BAD_METHOD', started);
      res.status(405).set('Allow', 'POST').json(errorBody(`${req.path} is called with POST, not ${req.method}`));
      return;
    }
    observe(req.path, 'UNKNOWN_CALL', started);
    res.status(404).json(errorBody(`unknown call ${req.method} ${req.path}`));
  });
  // Express's own failures (the body parser's above all) as JSON, never its HTML page.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const started = (res.locals.started as bigint | undefined) ?? process.hrtime.bigint();
    const { status, message } = expressError(err);
    const e = new TsbridgeError('BAD_REQUEST', { detail: message });
    d.log.error('failed', { call: req.path.slice(1, 100), code: e.code, error: e.message, status, ms: msSince(started) });
    observe(req.path, e.code, started);
    if (res.headersSent) return;
    res.status(status).json(errorBody(e.message));
  });
  return app;
}

/**
 * Requests Node's HTTP parser rejects before Express sees them (a malformed request line or
 * header, a body longer than its Content-Length, headers too large) get the same JSON error, then
 * the connection is closed.
 */
export function jsonClientErrors(server: Server, log?: Logger): void {
  server.on('clientError', (err: NodeJS.ErrnoException & { code?: string }, socket) => {
    if (!socket.writable || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    const body = JSON.stringify(errorBody(new TsbridgeError('BAD_REQUEST', { detail: `unreadable HTTP request (${err.code ?? err.message})` }).message));
    log?.error('failed', { code: 'BAD_REQUEST', error: `unreadable HTTP request (${err.code ?? err.message})`, status });
    socket.end(`HTTP/1.1 ${status} Bad Request\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
}

function errorBody(message: string): { Err: string; Error: string } {
  return { Err: message, Error: message };
}

function sendHealth(d: AppDeps, res: Response): void {
  if (!d.health) {
    res.status(404).json(errorBody('no health report in this plugin'));
    return;
  }
  res.status(200).json(d.health());
}

/** What went wrong in Express or its body parser, in words a Docker user can act on. */
function expressError(err: unknown): { status: number; message: string } {
  const e = (err ?? {}) as { status?: number; statusCode?: number; type?: string; message?: string; length?: number; limit?: number; charset?: string; encoding?: string };
  const status = typeof e.status === 'number' && e.status >= 400 && e.status < 600 ? e.status : 500;
  switch (e.type) {
    case 'entity.too.large':
      return { status, message: `the body${e.length !== undefined ? ` (${e.length} bytes)` : ''} is larger than ${BODY_LIMIT.replace('mb', ' MiB')}` };
    case 'charset.unsupported':
      return { status, message: `unsupported charset "${e.charset}": the body must be JSON in UTF-8` };
    case 'encoding.unsupported':
      return { status, message: `unsupported Content-Encoding "${e.encoding}": the body must not be compressed` };
    case 'request.aborted':
      return { status, message: 'the client aborted the request' };
    case 'request.size.invalid':
      return { status, message: 'the body is not as long as its Content-Length says' };
    default:
      return { status, message: e.message ?? String(err) };
  }
}

/**
 * The body as an object. An empty body or `null` is accepted only by calls without arguments;
 * any other JSON that is not an object (an array, a string, a number) is refused by all.
 */
export function parseBody(raw: unknown, args: boolean): Record<string, unknown> {
  const text = typeof raw === 'string' ? raw : raw === undefined || raw === null ? '' : null;
  if (text === null) return requireObject(raw);
  if (text.trim() === '') {
    if (args) throw new TsbridgeError('BAD_REQUEST', { detail: 'this call needs a JSON object, the body is empty' });
    return {};
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new TsbridgeError('BAD_REQUEST', { detail: `body is not JSON: ${(e as Error).message}` });
  }
  if (parsed === null && !args) return {};
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    const what = parsed === null ? 'null' : Array.isArray(parsed) ? 'an array' : `a ${typeof parsed}`;
    throw new TsbridgeError('BAD_REQUEST', { detail: `body must be a JSON object, got ${what}` });
  }
  return parsed as Record<string, unknown>;
}

function msSince(t: bigint): number {
  return Number((process.hrtime.bigint() - t) / 1000n) / 1000;
}

function cpuMsSince(from: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(from);
  return Math.round((d.user + d.system) / 10) / 100;
}

function secondsSince(t: bigint): number {
  return Number(process.hrtime.bigint() - t) / 1e9;
}
