/**
 * A small client of Docker's Engine API: names of networks and of the containers on them (the
 * `tsbridge` command), and Docker's networks as they are (convergence: `tsbridge gc`, and the
 * plugin's optional sweep, src/docker/observe.ts). Node's http over Docker's Unix socket
 * (/var/run/docker.sock, or DOCKER_HOST when it is unix://…), a deadline on every request, GET
 * only. The plugin's request handlers never ask Docker (dockerd waits for the plugin while it
 * starts: asking it back from a handler could deadlock); its sweep does, off the state lock.
 */
import http from 'node:http';

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

/** A container on a network, as `docker network inspect` lists it. */
export interface DockerEndpoint {
  endpointId: string;
  containerId: string;
  /** The container's name, without Docker's leading "/". */
  name: string;
}

export interface DockerNetwork {
  id: string;
  name: string;
  driver: string;
  containers: DockerEndpoint[];
}

export interface DockerApi {
  /** Describes each network; null for one Docker does not have. Throws DockerUnreachable. */
  networks(ids: string[]): Promise<Map<string, DockerNetwork | null>>;
}

export class DockerUnreachable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DockerUnreachable';
  }
}

/** Docker's socket per DOCKER_HOST; an error message when DOCKER_HOST is not a Unix socket. */
export function dockerSocket(env: NodeJS.ProcessEnv): { socket: string } | { error: string } {
  const host = env.DOCKER_HOST?.trim();
  if (!host) return { socket: DEFAULT_DOCKER_SOCKET };
  if (host.startsWith('unix://')) return { socket: host.slice('unix://'.length) };
  return { error: `DOCKER_HOST=${host} is not a unix:// socket; tsbridge asks Docker only over its Unix socket` };
}

/** Docker's networks as the Engine API returns them (JSON, unchecked: observe.ts reads them). */
export interface DockerEngine {
  /** `GET /networks`: every network, without its containers. Throws DockerUnreachable. */
  listNetworks(): Promise<unknown[]>;
  /** `GET /networks/ID`: one network with its endpoints; null when Docker does not have it. */
  inspectNetwork(id: string): Promise<unknown | null>;
}

/** Engine API over a Unix socket, each request bounded by `timeoutMs`. */
export class DockerClient implements DockerApi, DockerEngine {
  constructor(private readonly socket: string, private readonly timeoutMs = 3000) {}

  async listNetworks(): Promise<unknown[]> {
    const r = await this.get('/networks');
    if (r.status !== 200) throw new DockerUnreachable(`Docker answered ${r.status} to GET /networks: ${r.text.slice(0, 200)}`);
    const list = parseJson(r.text, 'GET /networks');
    if (!Array.isArray(list)) throw new DockerUnreachable("Docker's answer to GET /networks is not a list");
    return list;
  }

  async inspectNetwork(id: string): Promise<unknown | null> {
    const r = await this.get(`/networks/${encodeURIComponent(id)}`);
    if (r.status === 404) return null;
    if (r.status !== 200) throw new DockerUnreachable(`Docker answered ${r.status} to GET /networks/${id.slice(0, 12)}: ${r.text.slice(0, 200)}`);
    return parseJson(r.text, `GET /networks/${id.slice(0, 12)}`);
  }

  async networks(ids: string[]): Promise<Map<string, DockerNetwork | null>> {
    const out = new Map<string, DockerNetwork | null>();
    // One inspect per network: the list endpoint leaves Containers empty.
    const answers = await Promise.all(ids.map((id) => this.get(`/networks/${encodeURIComponent(id)}`).then((r) => [id, r] as const)));
    for (const [id, r] of answers) {
      if (r.status === 404) {
        out.set(id, null);
        continue;
      }
      if (r.status !== 200) throw new DockerUnreachable(`Docker answered ${r.status} to GET /networks/${id.slice(0, 12)}: ${r.text.slice(0, 200)}`);
      out.set(id, parseNetwork(r.text, id));
    }
    return out;
  }

  private get(path: string): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: this.socket, path, method: 'GET', agent: false, headers: { Accept: 'application/json' } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, text });
        });
        res.on('error', (e) => fail(e));
      });
      const fail = (e: Error) => {
        clearTimeout(timer);
        req.destroy();
        reject(e instanceof DockerUnreachable ? e : new DockerUnreachable(describe(e, this.socket)));
      };
      const timer = setTimeout(() => fail(new DockerUnreachable(`no answer from Docker on ${this.socket} within ${this.timeoutMs} ms`)), this.timeoutMs);
      req.on('error', fail);
      req.end();
    });
  }
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new DockerUnreachable(`Docker's answer to ${what} is not JSON`);
  }
}

function describe(e: NodeJS.ErrnoException, socket: string): string {
  if (e.code === 'ENOENT') return `no Docker socket at ${socket}`;
  if (e.code === 'EACCES') return `no permission to use ${socket} (root or the docker group)`;
  if (e.code === 'ECONNREFUSED') return `nothing listens on ${socket}`;
  return `${socket}: ${e.message}`;
}

export function parseNetwork(text: string, id: string): DockerNetwork {
  let o: { Id?: unknown; Name?: unknown; Driver?: unknown; Containers?: Record<string, { Name?: unknown; EndpointID?: unknown }> | null };
  try {
    o = JSON.parse(text);
  } catch {
    throw new DockerUnreachable(`Docker's answer for network ${id.slice(0, 12)} is not JSON`);
  }
  const containers: DockerEndpoint[] = [];
  for (const [containerId, c] of Object.entries(o.Containers ?? {})) {
    if (typeof c?.EndpointID !== 'string') continue;
    containers.push({ endpointId: c.EndpointID, containerId, name: String(c.Name ?? '').replace(/^\//, '') });
  }
  return { id: typeof o.Id === 'string' ? o.Id : id, name: typeof o.Name === 'string' ? o.Name : '', driver: typeof o.Driver === 'string' ? o.Driver : '', containers };
}

/** What the command knows of Docker's names: network ID → name, endpoint ID → container name. */
export interface Names {
  networks: Map<string, string>;
  containers: Map<string, string>;
  /** Why there are no names (Docker not reachable), or null. */
  unavailable: string | null;
}

export function noNames(why: string | null): Names {
  return { networks: new Map(), containers: new Map(), unavailable: why };
}

/** Asks Docker about these networks; never throws — unreachable Docker gives no names and a reason. */
export async function namesFor(docker: DockerApi | null, networkIds: string[], why = 'not asked'): Promise<Names> {
  if (!docker) return noNames(why);
  if (networkIds.length === 0) return noNames(null);
  try {
    const nets = await docker.networks(networkIds);
    const names = noNames(null);
    for (const [id, n] of nets) {
      if (!n) continue;
      names.networks.set(id, n.name);
      for (const c of n.containers) names.containers.set(c.endpointId, c.name);
    }
    return names;
  } catch (e) {
    return noNames(e instanceof Error ? e.message : String(e));
  }
}
