// Where a transaction's sysfs writes run. The CLI (and a library caller) run them in this process; the
// daemon runs them on its action thread (a driver's probe or remove can take seconds inside the write,
// and meanwhile hints must still be decided and the socket answered). Either way the same functions
// do the work, so the result, the journal and every error are the same.

import { type ApplyContext, type AssignApplied, applyPlan, applyRelease, type TransactionResult } from '../bind/apply.js';
import type { AssignPlan } from '../bind/plan.js';
import { type RecoverResult, recoverJournal } from '../bind/recover.js';
import type { JournalEntry } from '../state/journal.js';
import type { SysfsPort } from '../sysfs/port.js';

export interface TransactionRunner {
  /** Journal the plan, carry out every step, verify; undone device by device on any failure. */
  assign(plan: AssignPlan, ctx: ApplyContext): Promise<AssignApplied>;
  /** Give a journaled group's devices back to the drivers and overrides recorded. */
  release(entry: JournalEntry, ctx: ApplyContext): Promise<TransactionResult>;
  /** Finish what a crash interrupted. */
  recover(stateDir: string): Promise<RecoverResult>;
}

/** On this thread, through the session's port. */
export const inlineRunner = (port: SysfsPort): TransactionRunner => ({
  assign: async (plan, ctx) => applyPlan(port, plan, ctx),
  release: async (entry, ctx) => applyRelease(port, entry, ctx),
  recover: async (stateDir) => recoverJournal(port, stateDir),
});

/** What the daemon does around a transaction: hold a group once assigned, let go of it for a release. */
export interface Holder {
  /** The group is assigned (journaled): hold it, guard it. */
  hold(entry: JournalEntry): void;
  /** The group is about to be released: stop holding and guarding it (its devices leave vfio-pci now). */
  unhold(groupId: string): void;
  /** The release finished: the group is the host's again. */
  released(groupId: string): void;
}

/** How a pipeline runs: where the writes go, and who holds the groups (nobody, for a direct CLI run). */
export interface PipelineEnv {
  runner: TransactionRunner;
  holder?: Holder;
}
