import type { Command } from 'commander';
import { openSession, type Session, type SessionOptions } from '../api/session.js';
import { DaemonClient } from '../daemon/client.js';
import { IsogroupError } from '../errors.js';

// The global flags, handed to the session as they are (the session resolves every default), and the
// one rule for reaching the daemon.

export interface GlobalFlags {
  root?: string;
  json?: boolean;
  as?: string;
  stateDir?: string;
  socket?: string;
  simulate?: boolean;
}

export const globalsOf = (cmd: Command): GlobalFlags => cmd.optsWithGlobals() as GlobalFlags;

/** The command's flags as session options (plus what the command itself adds, e.g. --to). */
export const sessionOptions = (cmd: Command, extra: SessionOptions = {}): SessionOptions => {
  const g = globalsOf(cmd);
  return {
    ...(g.root !== undefined ? { root: g.root } : {}),
    ...(g.simulate ? { simulate: true } : {}),
    ...(g.stateDir !== undefined ? { stateDir: g.stateDir } : {}),
    ...(g.socket !== undefined ? { socket: g.socket } : {}),
    ...(g.as !== undefined ? { as: g.as } : {}),
    ...extra,
  };
};

export const sessionOf = (cmd: Command, extra: SessionOptions = {}): Session => openSession(sessionOptions(cmd, extra));

export const usage = (message: string): IsogroupError => new IsogroupError('E_USAGE', message);

/**
 * One writer: when a daemon answers on the session's socket, ask it (it runs the same API); otherwise
 * act directly (and the caller may warn that nobody holds the group).
 */
export const viaDaemonOr = async <T>(
  s: Session,
  direct: () => T | Promise<T>,
  remote: (client: DaemonClient) => Promise<T>,
): Promise<{ result: T; via: 'daemon' | 'direct' }> => {
  if (s.socket !== null) {
    const client = new DaemonClient(s.socket);
    if (await client.isRunning()) return { result: await remote(client), via: 'daemon' };
  }
  return { result: await direct(), via: 'direct' };
};
