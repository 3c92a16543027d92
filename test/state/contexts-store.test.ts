import fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { scan } from '../../api/read.js';
import { IsogroupError } from '../../errors.js';
import { attachGroup, type ContextTable, contextView, emptyContextTable, groupFacts, orThrow } from '../../groups/context.js';
import { CONTEXTS_FILE, contextsFromJson, contextsToJson, loadContexts, saveContexts, updateContexts } from '../../state/contexts-store.js';
import { bundledCapture } from '../helpers/paths.js';
import { tmpDir } from '../helpers/tmp.js';

const snap = scan({ root: bundledCapture('mixed-vfio'), pciIds: null });
const sample = (): ContextTable => {
  let t = orThrow(attachGroup(emptyContextTable(), 'alice', groupFacts(snap, '23'))).table;
  t = orThrow(attachGroup(t, 'alice', groupFacts(snap, '22'))).table;
  return orThrow(attachGroup(t, 'bob', groupFacts(snap, '19'))).table;
};

describe('contexts store', () => {
  it('round-trips a table exactly (bigint regions included)', () => {
    const dir = tmpDir();
    const t = sample();
    saveContexts(dir, t);
    const back = loadContexts(dir);
    expect(back).toEqual(t);
    expect(typeof back.contexts[0]!.groups[0]!.reservedRegions[0]!.start).toBe('bigint');
    // The view computed from the loaded table is the same as from the original.
    expect(contextView(back, 'alice', null)).toEqual(contextView(t, 'alice', null));
    // On disk: hex strings, no temporary files left behind.
    const text = fs.readFileSync(path.join(dir, CONTEXTS_FILE), 'utf8');
    expect(text).toContain('"start": "0xfee00000"');
    expect(fs.readdirSync(dir)).toEqual([CONTEXTS_FILE]);
    expect(fs.statSync(path.join(dir, CONTEXTS_FILE)).mode & 0o777).toBe(0o600);
  });

  it('a missing state directory or file is an empty table; saving creates the directory', () => {
    const dir = path.join(tmpDir(), 'state', 'deep');
    expect(loadContexts(dir)).toEqual(emptyContextTable());
    saveContexts(dir, sample());
    expect(loadContexts(dir).contexts.map((c) => c.owner)).toEqual(['alice', 'bob']);
  });

  it('replaces atomically: write tmp, fsync, rename (a failing rename leaves the old table and no tmp)', () => {
    const dir = tmpDir();
    const first = sample();
    saveContexts(dir, first);
    const calls: string[] = [];
    const fsync = vi.spyOn(fs, 'fsyncSync').mockImplementation(() => void calls.push('fsync'));
    const rename = vi.spyOn(fs, 'renameSync').mockImplementation(() => {
      calls.push('rename');
      throw Object.assign(new Error('EIO'), { code: 'EIO' });
    });
    const next = orThrow(attachGroup(first, 'carol', groupFacts(snap, '21'))).table;
    expect(() => saveContexts(dir, next)).toThrow(expect.objectContaining({ code: 'E_STATE_DIR' }));
    expect(calls).toEqual(['fsync', 'rename']);
    rename.mockRestore();
    fsync.mockRestore();
    expect(loadContexts(dir)).toEqual(first);
    expect(fs.readdirSync(dir)).toEqual([CONTEXTS_FILE]);
  });

  it('corrupt content is E_JOURNAL_CORRUPT naming the file and what is wrong', () => {
    const dir = tmpDir();
    const file = path.join(dir, CONTEXTS_FILE);
    const cases: [string, RegExp][] = [
      ['{"version":1,"nextId":2,"contexts":[', /not JSON/],
      ['', /not JSON/],
      ['[]', /not a context table/],
      [JSON.stringify({ version: 2, nextId: 1, contexts: [] }), /version/],
      [JSON.stringify({ ...contextsToJson(sample()), nextId: 'x' }), /nextId/],
    ];
    // Invariant breaks that the schema alone cannot see.
    const twoOwners = contextsToJson(sample());
    twoOwners.contexts[1]!.owner = 'alice';
    cases.push([JSON.stringify(twoOwners), /owner alice has two contexts/]);
    const badBdf = contextsToJson(sample());
    badBdf.contexts[0]!.devices[0]!.bdf = '../../etc';
    cases.push([JSON.stringify(badBdf), /contexts\[0\]\.devices\[0\]\.bdf: expected a BDF/]);
    const dupGroup = contextsToJson(sample());
    dupGroup.contexts[1]!.groups.push(dupGroup.contexts[0]!.groups[0]!);
    cases.push([JSON.stringify(dupGroup), /group 23 is in two contexts/]);
    const badRegion = contextsToJson(sample());
    badRegion.contexts[0]!.groups[0]!.reservedRegions[0]!.start = '0xfffffffff';
    cases.push([JSON.stringify(badRegion), /reserved region ends before it starts/]);
    for (const [text, re] of cases) {
      fs.writeFileSync(file, text);
      let caught: unknown;
      try {
        loadContexts(dir);
      } catch (error) {
        caught = error;
      }
      expect(caught, text.slice(0, 60)).toBeInstanceOf(IsogroupError);
      expect((caught as IsogroupError).code).toBe('E_JOURNAL_CORRUPT');
      expect((caught as IsogroupError).message).toMatch(re);
      expect((caught as IsogroupError).message.startsWith(file)).toBe(true);
    }
  });

  it('an unusable state directory is E_STATE_DIR', () => {
    const base = tmpDir();
    const notDir = path.join(base, 'f');
    fs.writeFileSync(notDir, 'x');
    expect(() => loadContexts(notDir)).toThrow(expect.objectContaining({ code: 'E_STATE_DIR' }));
    expect(() => saveContexts(notDir, sample())).toThrow(expect.objectContaining({ code: 'E_STATE_DIR' }));
    const blocked = path.join(base, 'dir');
    fs.mkdirSync(path.join(blocked, CONTEXTS_FILE), { recursive: true });
    expect(() => loadContexts(blocked)).toThrow(expect.objectContaining({ code: 'E_STATE_DIR' }));
  });

  it('refuses to save a table that breaks an invariant', () => {
    const dir = tmpDir();
    const t = sample();
    t.contexts[1]!.owner = 'alice';
    expect(() => saveContexts(dir, t)).toThrow(expect.objectContaining({ code: 'E_CONTEXT' }));
    expect(fs.existsSync(path.join(dir, CONTEXTS_FILE))).toBe(false);
  });

  it('updateContexts applies a pure change under the lock; a throwing change writes nothing', () => {
    const dir = tmpDir();
    const r = updateContexts(dir, (t) => orThrow(attachGroup(t, 'alice', groupFacts(snap, '23'))));
    expect(r.indices.map((d) => d.index)).toEqual([0, 1, 2]);
    expect(loadContexts(dir).contexts).toHaveLength(1);
    expect(() => updateContexts(dir, (t) => orThrow(attachGroup(t, 'bob', groupFacts(snap, '23'))))).toThrow(expect.objectContaining({ code: 'E_CONTEXT' }));
    expect(loadContexts(dir).contexts.map((c) => c.owner)).toEqual(['alice']);
    expect(contextsFromJson(fs.readFileSync(path.join(dir, CONTEXTS_FILE), 'utf8'))).toEqual(loadContexts(dir));
  });
});
