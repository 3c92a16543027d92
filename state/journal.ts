import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { IsogroupError } from '../errors.js';
import { type Bdf, describeTarget, type GroupTarget, isBdf } from '../model/bdf.js';
import { replaceFileDurably } from './durable-file.js';

// The journal: the single source of truth about which groups are handed out and about any
// transaction that did not finish. Written before the first sysfs write of a transaction and after
// its last, always as a whole file: write a temporary file, fsync it, rename over the old one,
// fsync the directory. A crash leaves either the old or the new journal, never a torn one.

export const JOURNAL_FILE = 'journal.json';

const memberSchema = z.object({
  bdf: z.string().refine(isBdf, 'not a PCI address'),
  /** endpoint: moved to vfio-pci; bridge-kept: left as it was; bridge-unbind: host driver removed. */
  role: z.enum(['endpoint', 'bridge-kept', 'bridge-unbind']),
  originalDriver: z.string().nullable(),
  originalOverride: z.string().nullable(),
  /** Appeared inside the group while it was assigned (the guard claimed it): on release its host driver may probe it. */
  hotAdded: z.boolean().optional(),
});

const entrySchema = z.object({
  groupId: z.string().regex(/^\d+$/),
  owner: z.string().min(1),
  root: z.string(),
  simulate: z.boolean(),
  /** assigning/releasing/rolling-back: a transaction did not finish; recover restores the host drivers. */
  state: z.enum(['assigning', 'assigned', 'releasing', 'rolling-back']),
  time: z.string(),
  members: z.array(memberSchema).min(1),
  notes: z.array(z.string()).default([]),
  lastError: z.object({ code: z.string(), message: z.string() }).optional(),
});

const journalSchema = z.object({
  version: z.literal(1),
  entries: z.array(entrySchema),
});

export type JournalMember = z.infer<typeof memberSchema>;
export type JournalEntry = z.infer<typeof entrySchema>;
export type Journal = z.infer<typeof journalSchema>;

export const emptyJournal = (): Journal => ({ version: 1, entries: [] });

export const journalPath = (stateDir: string): string => path.join(stateDir, JOURNAL_FILE);

/** Read the journal; a missing file is an empty journal, anything unparsable is E_JOURNAL_CORRUPT. */
export const readJournal = (stateDir: string): Journal => {
  const file = journalPath(stateDir);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).code;
    if (errno === 'ENOENT') return emptyJournal();
    if (errno === 'ENOTDIR') throw new IsogroupError('E_STATE_DIR', `state directory ${stateDir} is not a directory`, { stateDir, errno });
    throw new IsogroupError('E_STATE_DIR', `cannot read journal ${file}: ${errno ?? String(error)}`, { file, errno }, { cause: error });
  }
  // The daemon reads the journal on every pass; a text already checked is only parsed again.
  if (lastChecked?.file === file && lastChecked.text === text) return JSON.parse(lastChecked.checked) as Journal;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new IsogroupError(
      'E_JOURNAL_CORRUPT',
      `journal ${file} is not valid JSON (${(error as Error).message}); fix or move it aside, nothing was changed`,
      { file },
      { cause: error },
    );
  }
  const parsed = journalSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new IsogroupError('E_JOURNAL_CORRUPT', `journal ${file} is malformed at ${issue.path.join('.') || '(top)'}: ${issue.message}; nothing was changed`, {
      file,
      path: issue.path.map(String),
    });
  }
  const seen = new Set<string>();
  for (const e of parsed.data.entries) {
    if (seen.has(e.groupId))
      throw new IsogroupError('E_JOURNAL_CORRUPT', `journal ${file} lists group ${e.groupId} twice; nothing was changed`, { file, group: e.groupId });
    seen.add(e.groupId);
  }
  lastChecked = { file, text, checked: JSON.stringify(parsed.data) };
  return parsed.data;
};

// The last journal text that passed the checks, with the checked result (defaults filled in).
let lastChecked: { file: string; text: string; checked: string } | null = null;

/** Replace the journal atomically and durably. */
export const writeJournal = (stateDir: string, journal: Journal): void => {
  const file = journalPath(stateDir);
  try {
    replaceFileDurably(file, `${JSON.stringify(journal, null, 2)}\n`);
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).code;
    throw new IsogroupError('E_STATE_DIR', `cannot write journal ${file}: ${errno ?? String(error)}`, { file, errno }, { cause: error });
  }
};

/** Insert or replace the entry of a group. */
export const putEntry = (stateDir: string, entry: JournalEntry): Journal => {
  const j = readJournal(stateDir);
  j.entries = [...j.entries.filter((e) => e.groupId !== entry.groupId), entry];
  writeJournal(stateDir, j);
  return j;
};

export const dropEntry = (stateDir: string, groupId: string): Journal => {
  const j = readJournal(stateDir);
  j.entries = j.entries.filter((e) => e.groupId !== groupId);
  writeJournal(stateDir, j);
  return j;
};

/** Groups the journal says are handed out (finished assignments). */
export const assignedGroups = (stateDir: string): JournalEntry[] => readJournal(stateDir).entries.filter((e) => e.state === 'assigned');

/**
 * Record devices that joined assigned groups (hot-added) and drop hot-added members that left, for
 * every group in `present` at once (one journal write); under the state lock. Returns the entries
 * that changed.
 */
export const updateMembers = (stateDir: string, present: ReadonlyMap<string, readonly Bdf[]>): JournalEntry[] => {
  const journal = readJournal(stateDir);
  const changed: JournalEntry[] = [];
  const entries = journal.entries.map((entry) => {
    const now = entry.state === 'assigned' ? present.get(entry.groupId) : undefined;
    if (now === undefined) return entry;
    const known = new Set(entry.members.map((m) => m.bdf));
    const still = new Set(now);
    const added = now.filter((b) => !known.has(b));
    const kept = entry.members.filter((m) => still.has(m.bdf) || !m.hotAdded);
    if (added.length === 0 && kept.length === entry.members.length) return entry;
    const next: JournalEntry = {
      ...entry,
      members: [...kept, ...added.map((bdf) => ({ bdf, role: 'endpoint' as const, originalDriver: null, originalOverride: null, hotAdded: true }))],
    };
    changed.push(next);
    return next;
  });
  if (changed.length > 0) writeJournal(stateDir, { ...journal, entries });
  return changed;
};

const unfinished = (e: JournalEntry): IsogroupError =>
  new IsogroupError('E_GROUP_BUSY', `group ${e.groupId} has an unfinished ${e.state} transaction; run \`isogroup recover\` first`, {
    group: e.groupId,
    state: e.state,
  });

/** Refuse a new assignment of a group (or of any of its devices) the journal already holds, or any group while a transaction is unfinished. */
export const checkNotAssigned = (journal: Journal, groupId: string, members: readonly Bdf[]): void => {
  for (const e of journal.entries) {
    if (e.state !== 'assigned') throw unfinished(e);
    if (e.groupId === groupId)
      throw new IsogroupError('E_ALREADY_ASSIGNED', `group ${groupId} is already assigned to ${e.owner} (since ${e.time})`, { group: groupId, owner: e.owner });
    const shared = e.members.map((m) => m.bdf).filter((b) => members.includes(b as Bdf));
    if (shared.length) {
      throw new IsogroupError(
        'E_ALREADY_ASSIGNED',
        `devices ${shared.join(' ')} of group ${groupId} are already assigned to ${e.owner} as group ${e.groupId}`,
        { group: groupId, other: e.groupId, owner: e.owner },
      );
    }
  }
};

/** The journal entry a GROUP|BDF target names (a BDF: the entry listing it as a member), or null. */
export const entryFor = (journal: Journal, target: GroupTarget): JournalEntry | null =>
  ('groupId' in target
    ? journal.entries.find((e) => e.groupId === target.groupId)
    : journal.entries.find((e) => e.members.some((m) => m.bdf === target.bdf))) ?? null;

/** The finished assignment a target names: E_NOT_ASSIGNED when there is none, E_GROUP_BUSY when its transaction did not finish. */
export const assignedEntry = (journal: Journal, target: GroupTarget): JournalEntry => {
  const e = entryFor(journal, target);
  if (!e) throw new IsogroupError('E_NOT_ASSIGNED', `${describeTarget(target)} is not assigned (see \`isogroup status\`)`, { ...target });
  if (e.state !== 'assigned') throw unfinished(e);
  return e;
};
