import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { Bdf } from '../../model/bdf.js';
import { type JournalEntry, journalPath, readJournal, updateMembers, writeJournal } from '../../state/journal.js';
import { tmpDir } from '../helpers/tmp.js';

const entry = (groupId: string, bdfs: string[], state: JournalEntry['state'] = 'assigned'): JournalEntry => ({
  groupId,
  owner: 'alice',
  root: '/',
  simulate: true,
  state,
  time: '2026-11-22T00:00:00.000Z',
  members: bdfs.map((bdf) => ({ bdf: bdf as Bdf, role: 'endpoint', originalDriver: 'e1000', originalOverride: null })),
  notes: [],
});

describe('journal', () => {
  it('reads the same text again as fresh objects, and checks any changed text again', () => {
    const dir = tmpDir();
    writeJournal(dir, { version: 1, entries: [entry('7', ['0000:03:00.0'])] });
    const first = readJournal(dir);
    first.entries[0]!.owner = 'mallory';
    first.entries.push(entry('8', ['0000:04:00.0']));
    const second = readJournal(dir);
    expect(second.entries.map((e) => [e.groupId, e.owner])).toEqual([['7', 'alice']]);
    // Defaults the checks fill in are there on a repeated read too.
    const { notes: _, ...withoutNotes } = entry('7', ['0000:03:00.0']);
    const text = JSON.stringify({ version: 1, entries: [withoutNotes] });
    fs.writeFileSync(journalPath(dir), text);
    expect(readJournal(dir).entries[0]!.notes).toEqual([]);
    expect(readJournal(dir).entries[0]!.notes).toEqual([]);
    fs.writeFileSync(journalPath(dir), text.replace('"alice"', '""'));
    expect(() => readJournal(dir)).toThrow(/malformed at entries\.0\.owner/);
  });

  it('records the members of several groups in one write, and leaves unchanged groups alone', () => {
    const dir = tmpDir();
    writeJournal(dir, { version: 1, entries: [entry('7', ['0000:03:00.0']), entry('8', ['0000:04:00.0']), entry('9', ['0000:05:00.0'], 'releasing')] });
    const before = fs.statSync(journalPath(dir)).ino;
    const present = new Map<string, Bdf[]>([
      ['7', ['0000:03:00.0', '0000:03:01.0'] as Bdf[]],
      ['8', ['0000:04:00.0'] as Bdf[]],
      ['9', ['0000:05:00.0', '0000:05:01.0'] as Bdf[]],
    ]);
    const changed = updateMembers(dir, present);
    expect(changed.map((e) => e.groupId)).toEqual(['7']);
    const j = readJournal(dir);
    expect(j.entries.map((e) => [e.groupId, e.members.map((m) => [m.bdf, m.hotAdded ?? false])])).toEqual([
      [
        '7',
        [
          ['0000:03:00.0', false],
          ['0000:03:01.0', true],
        ],
      ],
      ['8', [['0000:04:00.0', false]]],
      ['9', [['0000:05:00.0', false]]], // not assigned (a release is running): untouched
    ]);
    expect(fs.statSync(journalPath(dir)).ino).not.toBe(before);
    // A hot-added member that left is dropped; an original member that left is kept (release restores it).
    const gone = updateMembers(dir, new Map([['7', [] as Bdf[]]]));
    expect(gone[0]!.members.map((m) => m.bdf)).toEqual(['0000:03:00.0']);
    // Nothing changed: no write at all.
    const ino = fs.statSync(journalPath(dir)).ino;
    expect(updateMembers(dir, new Map([['7', [] as Bdf[]]]))).toEqual([]);
    expect(fs.statSync(journalPath(dir)).ino).toBe(ino);
  });
});
