import * as fs from 'node:fs';
import { IsogroupError } from '../errors.js';
import { C, sysFlock } from './libc.js';

// flock(2) on an fd we own (through the one libc binding). The kernel drops the lock when the last fd
// of the open file description closes, so a process killed with SIGKILL never leaves a stale lock
// behind (unlike lock files that hold a pid).

export interface FileLock {
  readonly path: string;
  release(): void;
}

/**
 * Take an exclusive flock on `file` (created if missing). Non-blocking by default: returns null when
 * another open file description holds it. `wait: true` blocks until it is free.
 */
export const tryLockFile = (file: string, options: { wait?: boolean; shared?: boolean } = {}): FileLock | null => {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).code;
    throw new IsogroupError('E_STATE_DIR', `cannot open lock file ${file}: ${errno ?? String(error)}`, { file, errno }, { cause: error });
  }
  const op = (options.shared ? C.LOCK_SH : C.LOCK_EX) | (options.wait ? 0 : C.LOCK_NB);
  let locked: boolean;
  try {
    locked = sysFlock(fd, op, { code: 'E_STATE_DIR', what: `locking ${file}`, details: { file } });
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
  if (!locked) {
    fs.closeSync(fd);
    return null;
  }
  let released = false;
  return {
    path: file,
    release() {
      if (released) return;
      released = true;
      sysFlock(fd, C.LOCK_UN);
      fs.closeSync(fd);
    },
  };
};

/** Run fn under a blocking exclusive lock on `file`. */
export const withFileLock = <T>(file: string, fn: () => T): T => {
  const lock = tryLockFile(file, { wait: true })!;
  try {
    return fn();
  } finally {
    lock.release();
  }
};
