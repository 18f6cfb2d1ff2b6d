// Diagnostics channels: an outside tap only (as undici keeps lib/core/diagnostics.js). Nothing in
// holdfast subscribes to them; a debugger, an APM agent or a test may. The flow table publishes
// here beside its own change feed (FlowTable.onChange, which is what holdfast's views use), and
// only when someone listens. A leaf: imports nothing of holdfast.
import { channel } from 'node:diagnostics_channel';

export const channels = {
  /** a Flow, when it is pinned (again, if the plain-HTTP forwarder retries it elsewhere) */
  flowOpen: channel('holdfast:flow:open'),
  /** a Flow, once, when it ends */
  flowClose: channel('holdfast:flow:close'),
  /** { egress, flows, downForMs, why }: flows cut because their interface was lost */
  egressCut: channel('holdfast:egress:cut'),
} as const;
