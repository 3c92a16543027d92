import * as fs from 'node:fs';
import koffi from 'koffi';
import { IsogroupError } from '../errors.js';

// flock(2) through koffi on an fd we own. The kernel drops the lock when the last fd of the open
// file description closes, so a process killed with SIGKILL never leaves a stale lock behind
// (unlike lock files that hold a pid).

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const EWOULDBLOCK = 11;
const EINTR = 4;

let flockFn: ((fd: number, op: number) => number) | undefined;
const flockCall = (fd: number, op: number): number => {
  if (!flockFn) {
    const libc = koffi.load('libc.so.6');
    flockFn = libc.func('int flock(int fd, int op)') as (fd: number, op: number) => number;
  }
  return flockFn(fd, op);
};

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
  const op = (options.shared ? LOCK_SH : LOCK_EX) | (options.wait ? 0 : LOCK_NB);
  for (;;) {
    if (flockCall(fd, op) === 0) break;
    const errno = koffi.errno();
    if (errno === EINTR) continue;
    fs.closeSync(fd);
    if (errno === EWOULDBLOCK) return null;
    throw new IsogroupError('E_STATE_DIR', `flock ${file} failed (errno ${errno})`, { file, errno });
  }
  let released = false;
  return {
    path: file,
    release() {
      if (released) return;
      released = true;
      flockCall(fd, LOCK_UN);
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
