// The user database (ROOT/etc/passwd and ROOT/etc/group): the one reader, for naming socket peers and
// this process, and for finding the uid of an owner a device node is handed to.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Subject } from '../model/owner.js';

export interface UserDatabase {
  passwd: string | null;
  group: string | null;
}

const readOrNull = (file: string): string | null => {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
};

/** The files under a root; a missing file is an empty database (subjects are then named by number). */
export const readUserDatabase = (root = '/'): UserDatabase => ({
  passwd: readOrNull(path.join(root, 'etc/passwd')),
  group: readOrNull(path.join(root, 'etc/group')),
});

const lines = (text: string | null): string[][] =>
  (text ?? '')
    .split('\n')
    .map((l) => l.split(':'))
    .filter((f) => f.length >= 4);

/**
 * The subject for a uid/gid the kernel vouched for: named from passwd, with the primary gid plus every
 * group listing the user as a member. A uid with no passwd entry is named by its number, so rules by
 * uid or gid still apply to it.
 */
export const subjectForIds = (uid: number, gid: number, db: UserDatabase): Subject => {
  const entry = lines(db.passwd).find((f) => f[2] === String(uid) && f[0]);
  const name = entry ? entry[0]! : String(uid);
  const gids = new Set<number>([gid]);
  for (const f of lines(db.group)) {
    if (!/^\d+$/.test(f[2] ?? '')) continue;
    if (
      (f[3] ?? '')
        .split(',')
        .map((m) => m.trim())
        .includes(name)
    )
      gids.add(Number(f[2]));
  }
  return { name, uid, gids: [...gids].sort((a, b) => a - b) };
};

/** The subject a user name stands for, or null when the database has no such user. */
export const subjectForName = (name: string, db: UserDatabase): Subject | null => {
  const f = lines(db.passwd).find((x) => x[0] === name && /^\d+$/.test(x[2] ?? '') && /^\d+$/.test(x[3] ?? ''));
  return f ? subjectForIds(Number(f[2]), Number(f[3]), db) : null;
};
