/** The one place errors become Docker replies. */
import { isTsbridgeError } from '../errors.js';

/**
 * Any failure is HTTP 500 with the message under both `Err` (what the
 * NetworkDriver client reads) and `Error` (what the IPAM client reads: a 200
 * with only `Err` would count as success there). 404 is kept for unknown calls.
 */
export function errorReply(e: unknown): { status: number; body: { Err: string; Error: string }; message: string; code: string } {
  const message = isTsbridgeError(e) ? e.message : `internal error: ${e instanceof Error ? e.message : String(e)}`;
  const code = isTsbridgeError(e) ? e.code : 'INTERNAL';
  return { status: 500, body: { Err: message, Error: message }, message, code };
}
