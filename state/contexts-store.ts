// The context table on disk: STATE_DIR/contexts.json, replaced atomically (write a temporary file,
// fsync it, rename over the old one, fsync the directory), so a crash leaves either the old table or
// the new one, never a torn file. Loading validates the shape and every invariant of the table.

import fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { errnoOf, IsogroupError } from '../errors.js';
import { type ContextTable, emptyContextTable, validateContextTable } from '../groups/context.js';
import { formatIssuePath } from '../groups/policy.js';
import { type Bdf, splitBdf } from '../model/bdf.js';
import { replaceFileDurably } from './durable-file.js';
import { prepareStateDir, stateDirError, statStateDir } from './state-dir.js';

export const CONTEXTS_FILE = 'contexts.json';

const hex = z.string().regex(/^0x[0-9a-f]{1,16}$/, 'expected a 0x-prefixed hex address');
const bdf = z.string().refine((s) => splitBdf(s) !== null, { message: 'expected a BDF' });

const fileSchema = z.strictObject({
  version: z.literal(1),
  nextId: z.number().int().min(1),
  contexts: z.array(
    z.strictObject({
      id: z.string(),
      owner: z.string(),
      nextIndex: z.number().int().min(0),
      groups: z.array(
        z.strictObject({
          id: z.string().min(1),
          devices: z.array(bdf).min(1),
          units: z.array(z.string()),
          unitKind: z.string().nullable(),
          noiommu: z.boolean(),
          reservedRegions: z.array(z.strictObject({ start: hex, end: hex, type: z.string().min(1) })),
        }),
      ),
      devices: z.array(z.strictObject({ index: z.number().int().min(0), bdf, group: z.string().min(1) })),
    }),
  ),
});

type ContextsFile = z.infer<typeof fileSchema>;

/** The JSON form: bigints as 0x hex strings. */
export const contextsToJson = (table: ContextTable): ContextsFile => ({
  version: 1,
  nextId: table.nextId,
  contexts: table.contexts.map((c) => ({
    id: c.id,
    owner: c.owner,
    nextIndex: c.nextIndex,
    groups: c.groups.map((g) => ({
      id: g.id,
      devices: [...g.devices],
      units: [...g.units],
      unitKind: g.unitKind,
      noiommu: g.noiommu,
      reservedRegions: g.reservedRegions.map((r) => ({ start: `0x${r.start.toString(16)}`, end: `0x${r.end.toString(16)}`, type: r.type })),
    })),
    devices: c.devices.map((d) => ({ index: d.index, bdf: d.bdf, group: d.group })),
  })),
});

const corrupt = (file: string, message: string, details: Record<string, unknown> = {}, cause?: unknown): IsogroupError =>
  new IsogroupError('E_JOURNAL_CORRUPT', `${file}: ${message}`, { file, ...details }, cause === undefined ? undefined : { cause });

/** Parse and check the file's text; E_JOURNAL_CORRUPT naming what is wrong. */
export const contextsFromJson = (text: string, file = CONTEXTS_FILE): ContextTable => {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw corrupt(file, `not JSON (${(error as Error).message})`, {}, error);
  }
  const parsed = fileSchema.safeParse(value);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${formatIssuePath(i.path) || '(top level)'}: ${i.message}`);
    throw corrupt(file, `not a context table: ${issues.join('; ')}`, { issues });
  }
  const table: ContextTable = {
    version: 1,
    nextId: parsed.data.nextId,
    contexts: parsed.data.contexts.map((c) => ({
      id: c.id,
      owner: c.owner,
      nextIndex: c.nextIndex,
      groups: c.groups.map((g) => ({
        id: g.id,
        devices: g.devices as Bdf[],
        units: g.units,
        unitKind: g.unitKind,
        noiommu: g.noiommu,
        reservedRegions: g.reservedRegions.map((r) => ({ start: BigInt(r.start), end: BigInt(r.end), type: r.type })),
      })),
      devices: c.devices.map((d) => ({ index: d.index, bdf: d.bdf as Bdf, group: d.group })),
    })),
  };
  for (const c of table.contexts) {
    for (const g of c.groups) {
      for (const r of g.reservedRegions) if (r.end < r.start) throw corrupt(file, `context ${c.id} group ${g.id}: reserved region ends before it starts`);
    }
  }
  const problems = validateContextTable(table);
  if (problems.length > 0) throw corrupt(file, `context table breaks its invariants: ${problems.join('; ')}`, { problems });
  return table;
};

/**
 * Load the table. A missing state directory or file means nothing was ever attached: an empty table.
 * A path that is not a directory or cannot be read: E_STATE_DIR. Bad content: E_JOURNAL_CORRUPT.
 */
export const loadContexts = (stateDir: string): ContextTable => {
  if (statStateDir(stateDir) === 'missing') return emptyContextTable();
  const file = path.join(stateDir, CONTEXTS_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return emptyContextTable();
    throw stateDirError(stateDir, `cannot read ${CONTEXTS_FILE}`, error);
  }
  return contextsFromJson(text, file);
};

/** Replace the table atomically. Refuses (E_CONTEXT) to write a table that breaks an invariant. */
export const saveContexts = (stateDir: string, table: ContextTable): void => {
  const problems = validateContextTable(table);
  if (problems.length > 0)
    throw new IsogroupError('E_CONTEXT', `refusing to save a context table that breaks its invariants: ${problems.join('; ')}`, { problems });
  if (statStateDir(stateDir) === 'missing') prepareStateDir(stateDir);
  const file = path.join(stateDir, CONTEXTS_FILE);
  try {
    replaceFileDurably(file, `${JSON.stringify(contextsToJson(table), null, 2)}\n`);
  } catch (error) {
    throw stateDirError(stateDir, `cannot write ${CONTEXTS_FILE}`, error);
  }
};

/**
 * Read, change, write. The caller holds the state directory's lock (state/lock.ts), which covers the
 * journal and this table alike. `change` is pure and returns the new table (or throws); nothing is
 * written when it throws.
 */
export const updateContexts = <T extends { table: ContextTable }>(stateDir: string, change: (table: ContextTable) => T): T => {
  const result = change(loadContexts(stateDir));
  saveContexts(stateDir, result.table);
  return result;
};
