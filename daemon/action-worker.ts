import { parentPort, workerData } from 'node:worker_threads';
import type { GuardAction } from '../bind/guard.js';
import { applyGuardAction, type GuardActionResult } from '../bind/guard-apply.js';
import { NodeSysfsPort, type SysfsPort } from '../sysfs/port.js';

// The guard's action thread (see action-runner.ts): one action at a time, in arrival order.

export interface ActionWorkerData {
  root: string;
  simulate: boolean;
}
export interface ActionWorkerRequest {
  id: number;
  action: GuardAction;
}
export interface ActionWorkerReply {
  id: number;
  result: GuardActionResult;
}

const data = workerData as ActionWorkerData;
// The fixture kernel's modules load only under --simulate (a live host's daemon starts this thread faster).
// Requests that arrive meanwhile wait in the port until the listener below is attached.
const port: SysfsPort = data.simulate ? new (await import('../sim/kernel.js')).SimKernel(data.root).port() : new NodeSysfsPort(data.root);

parentPort!.on('message', (m: ActionWorkerRequest) => {
  let result: GuardActionResult;
  try {
    result = applyGuardAction(port, m.action);
  } catch (error) {
    // applyGuardAction reports failures itself; this is a read of the driver link failing after one.
    result = { action: m.action, ok: false, steps: [], driverAfter: null, error: { code: 'E_INTERNAL', message: String(error) } };
  }
  parentPort!.postMessage({ id: m.id, result } satisfies ActionWorkerReply);
});
