// Groups whose /dev/vfio/N was given to their owner (contexts handoff): STATE_DIR/handoffs.json,
// replaced whole like the journal, so a restarted daemon knows not to hold them again.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { errnoOf, IsogroupError } from '../errors.js';
import { replaceFileDurably } from './durable-file.js';

export const HANDOFFS_FILE = 'handoffs.json';

export interface Handoff {
  owner: string;
  uid: number;
  gid: number;
  /** The owner has opened /dev/vfio/N (so the kernel protects the group again). */
  opened: boolean;
  /** Handed to a container the kubelet starts (no chown: the runtime makes the container's node); taken back once it closes the group. */
  container?: boolean;
}

/** The recorded hand-offs; a missing or unreadable file is none (entries that are not hand-offs are skipped). */
export const loadHandoffs = (stateDir: string): Map<string, Handoff> => {
  const out = new Map<string, Handoff>();
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(path.join(stateDir, HANDOFFS_FILE), 'utf8'));
  } catch {
    return out;
  }
  if (typeof raw !== 'object' || raw === null) return out;
  for (const [id, h] of Object.entries(raw as Record<string, Partial<Handoff>>)) {
    if (/^\d+$/.test(id) && typeof h?.owner === 'string' && Number.isInteger(h.uid) && Number.isInteger(h.gid)) {
      out.set(id, { owner: h.owner, uid: h.uid!, gid: h.gid!, opened: h.opened === true, ...(h.container === true ? { container: true } : {}) });
    }
  }
  return out;
};

export const saveHandoffs = (stateDir: string, handoffs: ReadonlyMap<string, Handoff>): void => {
  const file = path.join(stateDir, HANDOFFS_FILE);
  try {
    replaceFileDurably(file, `${JSON.stringify(Object.fromEntries(handoffs), null, 2)}\n`);
  } catch (error) {
    throw new IsogroupError('E_STATE_DIR', `cannot write ${file}: ${errnoOf(error) ?? String(error)}`, { file }, { cause: error });
  }
};
