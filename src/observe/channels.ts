// Diagnostics channels: made once, published only when someone listens (observe/ and tests).
import { channel } from 'node:diagnostics_channel';

export const channels = {
  flowOpen: channel('holdfast:flow:open'),
  flowClose: channel('holdfast:flow:close'),
  egressCut: channel('holdfast:egress:cut'),
} as const;
