/**
 * Host-side TCP/UDP clients for tests: talk to a container, a namespace or the outside world and
 * return what the server answered (the peer recorder and udp-echo answer with the address they saw).
 */
import dgram from 'node:dgram';
import net from 'node:net';

export interface ProbeOptions {
  timeoutMs?: number;
  /** Source address to bind to. */
  localAddress?: string;
}

/** Connects over TCP, optionally sends `data`, and resolves with everything read until the server closes. */
export function tcpRequest(host: string, port: number, data = '', opts: ProbeOptions = {}): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    let got = '';
    const sock = net.connect({ host, port, localAddress: opts.localAddress });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`tcp ${host}:${port}: no answer within ${timeoutMs} ms (got ${JSON.stringify(got)})`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => (data ? sock.end(data) : undefined));
    sock.on('data', (d: string) => (got += d));
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`tcp ${host}:${port}: ${e.message}`));
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}

/** Sends one UDP datagram and resolves with the first reply. */
export function udpRequest(host: string, port: number, payload: string, opts: ProbeOptions = {}): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`udp ${host}:${port}: no reply within ${timeoutMs} ms`)), timeoutMs);
    const finish = (f: () => void) => {
      clearTimeout(timer);
      f();
    };
    sock.on('error', (e) => finish(() => reject(new Error(`udp ${host}:${port}: ${e.message}`))));
    sock.on('message', (m) => finish(() => resolve(m.toString())));
    sock.bind({ address: opts.localAddress, port: 0 }, () => sock.send(payload, port, host));
  }).finally(() => sock.close());
}

/** Splits an "ip:port rest" answer (udp-echo, peer recorder) at the last ':' before the first space. */
export function parsePeerReply(reply: string): { address: string; port: number; payload: string } {
  const trimmed = reply.replace(/\n$/, '');
  const sp = trimmed.indexOf(' ');
  const head = sp < 0 ? trimmed : trimmed.slice(0, sp);
  const colon = head.lastIndexOf(':');
  return { address: head.slice(0, colon), port: Number(head.slice(colon + 1)), payload: sp < 0 ? '' : trimmed.slice(sp + 1) };
}
