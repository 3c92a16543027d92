import type { Bdf } from '../model/bdf.js';
import { readJournal } from './journal.js';

// What is handed out, to whom, and what each device had before: straight from the journal.

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
  groups: GroupStatus[];
  /** Transactions that did not finish: run recover. */
  unfinished: string[];
}

export const journalStatus = (stateDir: string): StatusResult => {
  const j = readJournal(stateDir);
  const groups = j.entries
    .map((e): GroupStatus => ({
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
    }))
    .sort((a, b) => Number(a.id) - Number(b.id));
  return { groups, unfinished: groups.filter((g) => g.state !== 'assigned').map((g) => g.id) };
};
