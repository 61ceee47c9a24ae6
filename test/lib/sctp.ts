/**
 * SCTP with real packets on a kernel without SCTP sockets: conntrack and NAT handle SCTP
 * (CONFIG_NF_CT_PROTO_SCTP) even where the SCTP protocol itself is not built (no IPPROTO_SCTP
 * sockets). A Python raw IPv4 socket sends one well-formed INIT chunk (CRC32c included, so
 * conntrack accepts it as a new association); another raw socket, in the namespace the packet
 * should reach, records where it arrived. Needs python3 (scripts/install-deps.sh installs it).
 */
import { sh, shOk } from './run.js';

const SENDER = `
import socket, struct, sys, os
host, sport, dport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xffffffff
tag = int.from_bytes(os.urandom(4), 'big') | 1
init = struct.pack('!BBHIIHHI', 1, 0, 20, tag, 65535, 1, 1, tag)
hdr = struct.pack('!HHII', sport, dport, 0, 0)
pkt = bytearray(hdr + init)
pkt[8:12] = struct.pack('<I', crc32c(bytes(pkt)))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
s.sendto(bytes(pkt), (host, 0))
`;

const RECEIVER = `
import socket, struct, sys, json
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
s.settimeout(float(sys.argv[1]))
print(json.dumps({'ready': True}), flush=True)
try:
    data, _ = s.recvfrom(65535)
except socket.timeout:
    print(json.dumps({'timeout': True}), flush=True)
    sys.exit(0)
ihl = (data[0] & 15) * 4
sport, dport = struct.unpack('!HH', data[ihl:ihl + 4])
print(json.dumps({'src': socket.inet_ntoa(data[12:16]), 'dst': socket.inet_ntoa(data[16:20]), 'sport': sport, 'dport': dport, 'chunk': data[ihl + 12]}), flush=True)
`;

export interface SctpArrival {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** Chunk type (1 = INIT). */
  chunk: number;
}

/** Command prefix that runs a program inside a namespace: ['ip','netns','exec',NS] or ['nsenter','-t',PID,'-n']. */
export type NsPrefix = readonly string[];

/** True when python3 can open a raw SCTP socket here (it needs root; SCTP sockets are not needed). */
export async function havePythonRaw(): Promise<boolean> {
  return (await shOk('python3', ['-c', 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)'])).exitCode === 0;
}

/** Sends one SCTP INIT from inside `from` to host:dport. */
export async function sendSctpInit(from: NsPrefix, host: string, dport: number, sport = 40000 + Math.floor(Math.random() * 20000)): Promise<void> {
  const [cmd, ...args] = [...from, 'python3', '-c', SENDER, host, String(sport), String(dport)];
  await sh(cmd!, args);
}

/**
 * Sends an SCTP INIT from `from` to host:dport while a raw receiver listens in `at`; resolves
 * with what arrived there, or null when nothing did within `timeoutMs` after the INIT was sent
 * (the window starts once the sender is done: on a loaded machine starting python alone can
 * take seconds).
 */
export async function sctpProbe(from: NsPrefix, at: NsPrefix, host: string, dport: number, timeoutMs = 2000): Promise<SctpArrival | null> {
  const { execa } = await import('execa');
  // The receiver's own timeout is only a backstop; the window is enforced below.
  const [cmd, ...args] = [...at, 'python3', '-u', '-c', RECEIVER, String(timeoutMs / 1000 + 60)];
  const proc = execa(cmd!, args, { reject: false, buffer: false, stdin: 'ignore' });
  let out = '';
  let err = '';
  let readyResolve!: () => void;
  const ready = new Promise<void>((r) => (readyResolve = r));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('"ready"')) readyResolve();
  });
  await Promise.race([ready, proc.then(() => undefined)]);
  if (!out.includes('"ready"')) throw new Error(`SCTP receiver did not start: ${err}`);
  await sendSctpInit(from, host, dport);
  let timer: NodeJS.Timeout | undefined;
  const windowOver = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
  await Promise.race([proc, windowOver]);
  clearTimeout(timer);
  if (proc.exitCode === null && proc.signalCode === null) {
    proc.kill('SIGKILL');
    await proc;
    return null;
  }
  const last = out.trim().split('\n').pop()!;
  const msg = JSON.parse(last) as SctpArrival | { timeout: true };
  return 'timeout' in msg ? null : msg;
}
