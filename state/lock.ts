import * as path from 'node:path';
import { IsogroupError } from '../errors.js';
import { type FileLock, tryLockFile } from '../os/flock.js';
import { prepareStateDir } from './state-dir.js';

// One writer at a time per state directory: an flock(2) on STATE/lock. The kernel drops it with the
// last fd, so `kill -9` of an assign never leaves the state directory locked.

export const LOCK_FILE = 'lock';

/** Take the state-directory lock or fail at once with E_GROUP_BUSY. */
export const lockStateDir = (stateDir: string): FileLock => {
  prepareStateDir(stateDir);
  const lock = tryLockFile(path.join(stateDir, LOCK_FILE));
  if (!lock) {
    throw new IsogroupError('E_GROUP_BUSY', `another isogroup operation holds ${path.join(stateDir, LOCK_FILE)}; try again when it has finished`, { stateDir });
  }
  return lock;
};
