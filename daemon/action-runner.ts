import { Worker } from 'node:worker_threads';
import { inlineRunner, type TransactionRunner } from '../api/runner.js';
import type { SessionWire } from '../api/session.js';
import type { AssignApplied, TransactionResult } from '../bind/apply.js';
import type { GuardAction } from '../bind/guard.js';
import { applyGuardAction, type GuardActionResult } from '../bind/guard-apply.js';
import type { RecoverResult } from '../bind/recover.js';
import { fromWireError, IsogroupError, toWireError, type WireError } from '../errors.js';
import { workerScript } from '../os/worker-script.js';
import type { SysfsPort } from '../sysfs/port.js';

// Where the daemon's sysfs writes run: the guard's actions and the transactions it runs for socket
// clients. A write to drivers_probe or unbind runs the driver's probe or remove inside the write(2) (a
// NIC's remove can take seconds), and on the fixture kernel each write costs milliseconds of JS; done on
// the daemon's own thread they would sit between every later hint and its decision, and between socket
// clients and their answers. The worker runs requests one at a time in the order given (two writes to
// one device never interleave); the daemon only decides and hands over.

const CLOSE_GRACE_MS = 10_000;
/** How long a thread that finished its requests may take to leave (it may still be starting). */
const STOP_WAIT_MS = 10_000;

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

export type ActionWorkerRequest =
  | { id: number; kind: 'guard'; action: GuardAction }
  | { id: number; kind: 'assign'; plan: Parameters<TransactionRunner['assign']>[0]; ctx: Parameters<TransactionRunner['assign']>[1] }
  | { id: number; kind: 'release'; entry: Parameters<TransactionRunner['release']>[0]; ctx: Parameters<TransactionRunner['release']>[1] }
  | { id: number; kind: 'recover'; stateDir: string };

/** Sent when the daemon stops: leave once the requests before it are done. */
export interface ActionWorkerStop {
  kind: 'stop';
}

export type ActionWorkerReply = { id: number; result: unknown } | { id: number; error: WireError };

type Job = { [K in ActionWorkerRequest['kind']]: Omit<Extract<ActionWorkerRequest, { kind: K }>, 'id'> }[ActionWorkerRequest['kind']];

/** Carry out one request with a port; the worker and the inline fallback both run this. */
export const runJob = async (port: SysfsPort, job: Job): Promise<unknown> => {
  const tx = inlineRunner(port);
  switch (job.kind) {
    case 'guard':
      try {
        return applyGuardAction(port, job.action);
      } catch (error) {
        // applyGuardAction reports failures itself; this is a read of the driver link failing after one.
        return { action: job.action, ok: false, steps: [], driverAfter: null, error: toWireError(error) } satisfies GuardActionResult;
      }
    case 'assign':
      return tx.assign(job.plan, job.ctx);
    case 'release':
      return tx.release(job.entry, job.ctx);
    case 'recover':
      return tx.recover(job.stateDir);
  }
};

export interface ActionRunner {
  /** Where actions run now (for status): a worker that died leaves 'inline'. */
  readonly kind: 'worker' | 'inline';
  run(action: GuardAction): Promise<GuardActionResult>;
  /** The transactions of socket clients, on the same thread as the guard's actions. */
  readonly transactions: TransactionRunner;
  /** Requests handed over and not answered yet. */
  readonly pending: number;
  /** Resolves once nothing is pending. */
  idle(): Promise<void>;
  close(graceMs?: number): Promise<void>;
}

const transactionsVia = (submit: (job: Job) => Promise<unknown>): TransactionRunner => ({
  assign: (plan, ctx) => submit({ kind: 'assign', plan, ctx }) as Promise<AssignApplied>,
  release: (entry, ctx) => submit({ kind: 'release', entry, ctx }) as Promise<TransactionResult>,
  recover: (stateDir) => submit({ kind: 'recover', stateDir }) as Promise<RecoverResult>,
});

/** On the daemon's thread (a daemon given its own port object: tests with failing ports). */
export class InlineActionRunner implements ActionRunner {
  readonly kind = 'inline';
  readonly pending = 0;
  readonly transactions: TransactionRunner;
  constructor(private readonly port: SysfsPort) {
    this.transactions = inlineRunner(port);
  }
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

interface Waiting {
  job: Job;
  resolve: (result: unknown) => void;
  reject: (error: unknown) => void;
}

/** In one worker thread with the same session (its own port on the same root; the fixture kernel shares its state through files under a lock). */
export class WorkerActionRunner implements ActionRunner {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, Waiting>();
  private idlers: (() => void)[] = [];
  private nextId = 1;
  private dead: Error | null = null;
  readonly transactions: TransactionRunner;

  // `port` serves requests on this thread once the worker is gone.
  constructor(
    session: SessionWire,
    private readonly port: SysfsPort,
    onDeath: (error: Error) => void,
  ) {
    this.transactions = transactionsVia((job) => this.submit(job));
    this.worker = new Worker(workerScript('./action-worker.js', import.meta.url), { workerData: session });
    this.worker.unref();
    this.worker.on('message', (m: ActionWorkerReply) => this.settle(m));
    const die = (error: Error): void => {
      if (this.dead) return;
      this.dead = error;
      onDeath(error);
      for (const [id, w] of [...this.waiting]) {
        // A guard action is decided again from fresh state, so it can run here; a transaction cut
        // short is not repeated: its journal entry says what recover must undo.
        if (w.job.kind === 'guard') void runJob(port, w.job).then((result) => this.settle({ id, result }));
        else
          this.settle({
            id,
            error: { code: 'E_INTERNAL', message: `the action thread died during the ${w.job.kind} (${error.message}); run \`isogroup recover\`` },
          });
      }
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

  private submit(job: Job): Promise<unknown> {
    if (this.dead) return runJob(this.port, job);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { job, resolve, reject });
      this.worker.postMessage({ id, ...job } as ActionWorkerRequest);
    });
  }

  run(action: GuardAction): Promise<GuardActionResult> {
    return this.submit({ kind: 'guard', action }) as Promise<GuardActionResult>;
  }

  private settle(reply: ActionWorkerReply): void {
    const w = this.waiting.get(reply.id);
    if (!w) return;
    this.waiting.delete(reply.id);
    if ('error' in reply) w.reject(fromWireError(reply.error));
    else w.resolve(reply.result);
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

  /** Let pending requests finish, but not forever: a write stuck in a driver must not keep the daemon from stopping. */
  async close(graceMs = CLOSE_GRACE_MS): Promise<void> {
    const finished = await settlesWithin(this.idle(), graceMs);
    this.dead ??= new IsogroupError('E_DAEMON', 'closed', {});
    // Asked to stop, the thread leaves between requests (after its start, which loads native code:
    // terminating a thread inside koffi's initialisation aborts the whole process).
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.postMessage({ kind: 'stop' } satisfies ActionWorkerStop);
    if (finished && (await settlesWithin(exited, STOP_WAIT_MS))) return;
    void this.worker.terminate(); // a write stuck in a driver: returns once the write does; the process may exit before
  }
}
