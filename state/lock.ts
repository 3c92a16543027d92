import * as fs from 'node:fs';
import * as path from 'node:path';
import { IsogroupError } from '../errors.js';
import { type FileLock, tryLockFile } from '../os/flock.js';

// One writer at a time per state directory: an flock(2) on STATE/lock. The kernel drops it with the
// last fd, so `kill -9` of an assign never leaves the state directory locked.

export const LOCK_FILE = 'lock';

/** Create the state directory if needed and check it can hold the journal. */
export const prepareStateDir = (stateDir: string): void => {
  try {
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).code;
    throw new IsogroupError('E_STATE_DIR', `cannot create state directory ${stateDir}: ${errno ?? String(error)}`, { stateDir, errno }, { cause: error });
  }
  let stat: fs.Stats;
  try {
    stat = fs.statSync(stateDir);
  } catch (error) {
    throw new IsogroupError('E_STATE_DIR', `state directory ${stateDir} cannot be read`, { stateDir }, { cause: error });
  }
  if (!stat.isDirectory()) throw new IsogroupError('E_STATE_DIR', `state directory ${stateDir} is not a directory`, { stateDir });
  try {
    fs.accessSync(stateDir, fs.constants.W_OK);
  } catch (error) {
    throw new IsogroupError(
      'E_STATE_DIR',
      `state directory ${stateDir} is not writable`,
      { stateDir, errno: (error as NodeJS.ErrnoException).code },
      { cause: error },
    );
  }
};

/** Take the state-directory lock or fail at once with E_GROUP_BUSY. */
export const lockStateDir = (stateDir: string): FileLock => {
  prepareStateDir(stateDir);
  const lock = tryLockFile(path.join(stateDir, LOCK_FILE));
  if (!lock) {
    throw new IsogroupError('E_GROUP_BUSY', `another isogroup operation holds ${path.join(stateDir, LOCK_FILE)}; try again when it has finished`, { stateDir });
  }
  return lock;
};
