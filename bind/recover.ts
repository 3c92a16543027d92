import { IsogroupError, isIsogroupError } from '../errors.js';
import type { Bdf } from '../model/bdf.js';
import { dropEntry, type JournalEntry, journalPath, putEntry, readJournal } from '../state/journal.js';
import type { SysfsPort } from '../sysfs/port.js';
import { restoreMembers, type StepRecord } from './apply.js';

// After a crash (kill -9, power loss) the journal says which transaction did not finish. Whatever
// it was (assigning, releasing, undoing), recovery brings its devices back to the drivers and
// overrides they had before: the one state known to be safe for the host.

export interface RecoveredGroup {
  groupId: string;
  owner: string;
  from: JournalEntry['state'];
  devices: Bdf[];
  done: StepRecord[];
  ok: boolean;
  error?: { code: string; message: string };
}

export interface RecoverResult {
  recovered: RecoveredGroup[];
  /** Groups still assigned (finished transactions), untouched. */
  assigned: string[];
}

export const recoverJournal = (port: SysfsPort, stateDir: string): RecoverResult => {
  const journal = readJournal(stateDir);
  const recovered: RecoveredGroup[] = [];
  for (const entry of journal.entries) {
    if (entry.state === 'assigned') continue;
    const done: StepRecord[] = [];
    const base = { groupId: entry.groupId, owner: entry.owner, from: entry.state, devices: entry.members.map((m) => m.bdf as Bdf), done };
    try {
      restoreMembers(port, entry.members, done);
      dropEntry(stateDir, entry.groupId);
      recovered.push({ ...base, ok: true });
    } catch (error) {
      const e = isIsogroupError(error) ? { code: error.code, message: error.message } : { code: 'E_INTERNAL', message: String(error) };
      putEntry(stateDir, { ...entry, lastError: e });
      recovered.push({ ...base, ok: false, error: e });
    }
  }
  const failed = recovered.filter((r) => !r.ok);
  if (failed.length) {
    throw new IsogroupError(
      'E_ROLLBACK_FAILED',
      `recover could not restore group(s) ${failed.map((f) => `${f.groupId} (${f.error?.message})`).join('; ')}; the journal ${journalPath(stateDir)} is kept`,
      { recovered, journal: journalPath(stateDir) },
    );
  }
  return {
    recovered,
    assigned: readJournal(stateDir)
      .entries.filter((e) => e.state === 'assigned')
      .map((e) => e.groupId),
  };
};
