import * as fs from 'node:fs';
import { errnoOf, IsogroupError } from '../errors.js';

// The state directory itself: one way to report it unusable, to find it, and to make it.

export const stateDirError = (dir: string, what: string, error: unknown): IsogroupError =>
  new IsogroupError(
    'E_STATE_DIR',
    `state directory ${dir}: ${what}: ${errnoOf(error) ?? String(error)}`,
    { stateDir: dir, errno: errnoOf(error) },
    { cause: error },
  );

/** 'dir', or 'missing' when nothing is there yet; anything else that is not a directory is E_STATE_DIR. */
export const statStateDir = (dir: string): 'dir' | 'missing' => {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return 'missing';
    throw stateDirError(dir, 'cannot use it', error);
  }
  if (!st.isDirectory()) throw new IsogroupError('E_STATE_DIR', `state directory ${dir} is not a directory`, { stateDir: dir });
  return 'dir';
};

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
