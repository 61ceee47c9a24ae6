/**
 * The protocol edge: Express on a Unix socket. Bodies are parsed whatever their
 * Content-Type (Docker sends none); an empty body is `{}`. Each route validates,
 * calls one use case and shapes Docker's reply. Errors go through reply.ts.
 */
import express, { type Request, type Response } from 'express';
import { TsbridgeError } from '../errors.js';
import type { Logger } from '../logging.js';
import { shortId } from '../logging.js';
import type { DriverService } from '../driver/service.js';
import type { IpamService } from '../ipam/service.js';
import { parseCreateEndpoint, parseCreateNetwork, parseIds, parsePortBindings } from '../protocol/network.js';
import { dockerId, optionalString, requireObject } from '../protocol/validate.js';
import { GATEWAY_REQUEST } from '../protocol/wire.js';
import { errorReply } from './reply.js';

type Handler = (body: Record<string, unknown>) => Promise<unknown>;

export interface AppDeps {
  driver: DriverService;
  ipam: IpamService;
  log: Logger;
  /** Implements list for /Plugin.Activate (legacy plugins). */
  implements?: string[];
}

export function routes(d: AppDeps): Record<string, Handler> {
  const empty = async () => ({});
  return {
    '/Plugin.Activate': async () => ({ Implements: d.implements ?? ['NetworkDriver', 'IpamDriver'] }),

    '/NetworkDriver.GetCapabilities': async () => ({ Scope: 'local', ConnectivityScope: 'local' }),
    '/NetworkDriver.CreateNetwork': async (b) => {
      await d.driver.createNetwork(parseCreateNetwork(b));
      return {};
    },
    '/NetworkDriver.DeleteNetwork': async (b) => {
      await d.driver.deleteNetwork(dockerId(b.NetworkID, 'NetworkID'));
      return {};
    },
    '/NetworkDriver.CreateEndpoint': async (b) => {
      const spec = parseCreateEndpoint(b);
      const { mac } = await d.driver.createEndpoint(spec);
      // Only fields Docker left empty may be returned; echoing a set one fails the call.
      return { Interface: spec.mac ? null : { MacAddress: mac } };
    },
    '/NetworkDriver.DeleteEndpoint': async (b) => {
      const { networkId, endpointId } = parseIds(b);
      await d.driver.deleteEndpoint(networkId, endpointId);
      return {};
    },
    '/NetworkDriver.EndpointOperInfo': async (b) => {
      const { networkId, endpointId } = parseIds(b);
      return { Value: d.driver.endpointInfo(networkId, endpointId) };
    },
    '/NetworkDriver.Join': async (b) => {
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
    },
    '/NetworkDriver.Leave': async (b) => {
      const { networkId, endpointId } = parseIds(b);
      await d.driver.leave(networkId, endpointId);
      return {};
    },
    '/NetworkDriver.ProgramExternalConnectivity': async (b) => {
      const { networkId, endpointId } = parseIds(b);
      await d.driver.programExternalConnectivity(networkId, endpointId, parsePortBindings(b.Options));
      return {};
    },
    '/NetworkDriver.RevokeExternalConnectivity': async (b) => {
      const { networkId, endpointId } = parseIds(b);
      await d.driver.revokeExternalConnectivity(networkId, endpointId);
      return {};
    },
    '/NetworkDriver.DiscoverNew': empty,
    '/NetworkDriver.DiscoverDelete': empty,
    '/NetworkDriver.AllocateNetwork': async () => ({ Options: {} }),
    '/NetworkDriver.FreeNetwork': empty,

    '/IpamDriver.GetCapabilities': async () => ({ RequiresMACAddress: false, RequiresRequestReplay: false }),
    '/IpamDriver.GetDefaultAddressSpaces': async () => ({ LocalDefaultAddressSpace: 'local', GlobalDefaultAddressSpace: 'global' }),
    '/IpamDriver.RequestPool': async (b) => {
      const opts = b.Options === undefined || b.Options === null ? {} : requireObject(b.Options);
      const r = await d.ipam.requestPool({
        pool: optionalString(b.Pool, 'Pool'),
        subPool: optionalString(b.SubPool, 'SubPool'),
        v6: b.V6 === true,
        overlay: optionalString(opts['io.tsbridge.overlay'], 'Options.io.tsbridge.overlay'),
      });
      return { PoolID: r.poolId, Pool: r.pool, Data: {} };
    },
    '/IpamDriver.ReleasePool': async (b) => {
      await d.ipam.releasePool(optionalString(b.PoolID, 'PoolID'));
      return {};
    },
    '/IpamDriver.RequestAddress': async (b) => {
      const opts = (b.Options ?? {}) as Record<string, unknown>;
      const kind = opts.RequestAddressType === GATEWAY_REQUEST ? 'gateway' : 'endpoint';
      const address = await d.ipam.requestAddress(optionalString(b.PoolID, 'PoolID'), optionalString(b.Address, 'Address'), kind);
      return { Address: address, Data: {} };
    },
    '/IpamDriver.ReleaseAddress': async (b) => {
      await d.ipam.releaseAddress(optionalString(b.PoolID, 'PoolID'), optionalString(b.Address, 'Address'));
      return {};
    },
  };
}


export function createApp(d: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // Docker sends no Content-Type: take every body as text and parse it ourselves.
  app.use(express.text({ type: () => true, limit: '4mb' }));
  const table = routes(d);
  app.post(/.*/, async (req: Request, res: Response) => {
    const handler = table[req.path];
    if (!handler) {
      res.status(404).json({ Err: `unknown call ${req.path}`, Error: `unknown call ${req.path}` });
      return;
    }
    const started = process.hrtime.bigint();
    let body: Record<string, unknown> = {};
    const fields: Record<string, unknown> = { call: req.path.slice(1) };
    try {
      body = parseBody(req.body);
      for (const k of ['NetworkID', 'EndpointID', 'PoolID', 'Pool', 'Address'] as const) {
        if (typeof body[k] === 'string' && body[k]) fields[k] = k.endsWith('ID') && k !== 'PoolID' ? shortId(body[k] as string) : body[k];
      }
      const out = await handler(body);
      fields.ms = msSince(started);
      if (!req.path.endsWith('EndpointOperInfo') && !req.path.endsWith('GetCapabilities')) d.log.info('ok', fields);
      else d.log.debug('ok', fields);
      res.status(200).json(out);
    } catch (e) {
      const { status, body: errBody, message, code } = errorReply(e);
      fields.ms = msSince(started);
      d.log.error('failed', { ...fields, code, error: message });
      res.status(status).json(errBody);
    }
  });
  app.all(/.*/, (req, res) => {
    res.status(404).json({ Err: `unknown call ${req.method} ${req.path}`, Error: `unknown call ${req.method} ${req.path}` });
  });
  return app;
}

function parseBody(raw: unknown): Record<string, unknown> {
  if (raw === undefined || raw === null || (typeof raw === 'string' && raw.trim() === '') || (typeof raw === 'object' && Object.keys(raw as object).length === 0)) {
    return {};
  }
  if (typeof raw !== 'string') return requireObject(raw);
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw new TsbridgeError('BAD_REQUEST', { detail: `body is not JSON: ${(e as Error).message}` });
  }
  return parsed === null ? {} : requireObject(parsed);
}

function msSince(t: bigint): number {
  return Number((process.hrtime.bigint() - t) / 1000n) / 1000;
}
