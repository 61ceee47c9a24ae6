/**
 * Every kind of network tsbridge knows — one line each. The first is the kind of a network whose
 * options name none (`-o io.tsbridge.mode=NAME` names one).
 */
import { bridgeKind } from './bridge/index.js';
import { p2pKind } from './p2p/index.js';
import { overlayKind } from './overlay/index.js';
import { makeRegistry } from './select.js';
import { uplinkKind } from './uplink/index.js';

export const KINDS = makeRegistry([
  bridgeKind,
  p2pKind,
  uplinkKind,
  overlayKind,
]);
