import { Worker } from 'node:worker_threads';
import type { GuardAction } from '../bind/guard.js';
import { applyGuardAction, type GuardActionResult } from '../bind/guard-apply.js';
import type { SysfsPort } from '../sysfs/port.js';
import { workerScript } from '../os/worker-script.js';
import type { ActionWorkerData, ActionWorkerReply, ActionWorkerRequest } from './action-worker.js';

// Where the guard's sysfs writes run. A write to drivers_probe or unbind runs the driver's probe or
// remove inside the write(2) (a NIC's remove can take seconds), and on the fixture kernel each write
// costs milliseconds of JS; either way, done on the daemon's own thread they would sit between every
// later hint and its decision, and between socket clients and their answers. The worker runs the
// actions one at a time in the order given (so two actions on one device never interleave); the daemon
// only decides and hands over.

const CLOSE_GRACE_MS = 10_000;

/** Wait for `p` at most `ms`: true when it settled in time (its outcome is not looked at). */
export const settlesWithin = async (p: Promise<unknown>, ms: number): Promise<boolean> => {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
};

export interface ActionRunner {
  /** Where actions run now (for status): a worker that died leaves 'inline'. */
  readonly kind: 'worker' | 'inline';
  run(action: GuardAction): Promise<GuardActionResult>;
  /** Actions handed over and not answered yet. */
  readonly pending: number;
  /** Resolves once nothing is pending. */
  idle(): Promise<void>;
  close(graceMs?: number): Promise<void>;
}

/** On the daemon's thread (a daemon given its own port object: tests with failing ports). */
export class InlineActionRunner implements ActionRunner {
  readonly kind = 'inline';
  readonly pending = 0;
  constructor(private readonly port: SysfsPort) {}
  run(action: GuardAction): Promise<GuardActionResult> {
    return Promise.resolve(applyGuardAction(this.port, action));
  }
  idle(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** In one worker thread with its own port on the same root (the fixture kernel shares its state through files under a lock). */
export class WorkerActionRunner implements ActionRunner {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, { action: GuardAction; resolve: (r: GuardActionResult) => void }>();
  private idlers: (() => void)[] = [];
  private nextId = 1;
  private dead: Error | null = null;
  private fallback: InlineActionRunner;

  constructor(data: ActionWorkerData, port: SysfsPort, onDeath: (error: Error) => void) {
    // If the worker dies, what it had not answered is retried on the daemon's thread: an action must
    // never be lost silently (the reconcile would catch it, but later).
    this.fallback = new InlineActionRunner(port);
    this.worker = new Worker(workerScript('./action-worker.js', import.meta.url), { workerData: data });
    this.worker.unref();
    this.worker.on('message', (m: ActionWorkerReply) => this.settle(m.id, m.result));
    const die = (error: Error): void => {
      if (this.dead) return;
      this.dead = error;
      onDeath(error);
      for (const [id, w] of [...this.waiting]) void this.fallback.run(w.action).then((r) => this.settle(id, r));
    };
    this.worker.on('error', die);
    this.worker.on('exit', (code) => die(new Error(`action worker exited (code ${code})`)));
  }

  get pending(): number {
    return this.waiting.size;
  }

  get kind(): 'worker' | 'inline' {
    return this.dead ? 'inline' : 'worker';
  }

  run(action: GuardAction): Promise<GuardActionResult> {
    if (this.dead) return this.fallback.run(action);
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, { action, resolve });
      this.worker.postMessage({ id, action } satisfies ActionWorkerRequest);
    });
  }

  private settle(id: number, result: GuardActionResult): void {
    const w = this.waiting.get(id);
    if (!w) return;
    this.waiting.delete(id);
    w.resolve(result);
    if (this.waiting.size === 0) {
      const idlers = this.idlers;
      this.idlers = [];
      for (const f of idlers) f();
    }
  }

  idle(): Promise<void> {
    if (this.waiting.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idlers.push(resolve));
  }

  /** Let pending actions finish, but not forever: a write stuck in a driver must not keep the daemon from stopping. */
  async close(graceMs = CLOSE_GRACE_MS): Promise<void> {
    const finished = await settlesWithin(this.idle(), graceMs);
    this.dead ??= new Error('closed');
    if (finished) await this.worker.terminate();
    else void this.worker.terminate(); // returns once the stuck write does; the process may exit before
  }
}
