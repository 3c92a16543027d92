// What is handed out, to whom, and what each device had before: straight from the journal (the daemon
// adds whether it holds each group).

import type { Bdf } from '../model/bdf.js';
import { readJournal } from '../state/journal.js';
import { openSession, type Session, type SessionOptions } from './session.js';

export interface GroupStatus {
  id: string;
  devices: Bdf[];
  owner: string;
  /** Whether a process holds the group open (filled in by the daemon; false without it). */
  held: boolean;
  state: 'assigning' | 'assigned' | 'releasing' | 'rolling-back';
  since: string;
  originalDrivers: Record<string, string | null>;
  originalOverrides: Record<string, string | null>;
  root: string;
  simulate: boolean;
  notes: string[];
  lastError?: { code: string; message: string };
}

export interface StatusResult {
  stateDir: string;
  groups: GroupStatus[];
  /** Transactions that did not finish: run recover. */
  unfinished: string[];
}

/** The journal as status; under an owner's view (--as, a non-root peer) only that owner's groups. */
export const status = (options: SessionOptions | Session = {}): StatusResult & { owner?: string } => {
  const s = openSession(options);
  const stateDir = s.requireState('status');
  const groups = readJournal(stateDir)
    .entries.map(
      (e): GroupStatus => ({
        id: e.groupId,
        devices: e.members.map((m) => m.bdf as Bdf),
        owner: e.owner,
        held: false,
        state: e.state,
        since: e.time,
        originalDrivers: Object.fromEntries(e.members.map((m) => [m.bdf, m.originalDriver])),
        originalOverrides: Object.fromEntries(e.members.map((m) => [m.bdf, m.originalOverride])),
        root: e.root,
        simulate: e.simulate,
        notes: e.notes,
        ...(e.lastError ? { lastError: e.lastError } : {}),
      }),
    )
    .sort((a, b) => Number(a.id) - Number(b.id));
  const result = { stateDir, groups, unfinished: groups.filter((g) => g.state !== 'assigned').map((g) => g.id) };
  return s.as === null ? result : { ...result, owner: s.as, groups: groups.filter((g) => g.owner === s.as) };
};
