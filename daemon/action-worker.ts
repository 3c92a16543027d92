import { parentPort, workerData } from 'node:worker_threads';
import { openSession, type SessionWire } from '../api/session.js';
import { toWireError } from '../errors.js';
import { type ActionWorkerReply, type ActionWorkerRequest, type ActionWorkerStop, runJob } from './action-runner.js';

// The daemon's action thread (see action-runner.ts): one request at a time, in arrival order, through
// the daemon's own session opened again here (its port on the same root).

const wire = workerData as SessionWire;
const session = openSession({ root: wire.root, simulate: wire.simulate, ...(wire.stateDir !== null ? { stateDir: wire.stateDir } : {}) });
const port = session.port();

// Requests that arrive while one runs wait in the port: one at a time, in order.
let queue = Promise.resolve();
parentPort!.on('message', (m: ActionWorkerRequest | ActionWorkerStop) => {
  if (m.kind === 'stop') {
    queue = queue.then(() => process.exit(0));
    return;
  }
  queue = queue.then(async () => {
    let reply: ActionWorkerReply;
    try {
      const { id: _id, ...job } = m;
      reply = { id: m.id, result: await runJob(port, job) };
    } catch (error) {
      reply = { id: m.id, error: toWireError(error) };
    }
    parentPort!.postMessage(reply);
  });
});
