import type { Command } from 'commander';
import { IsogroupError } from '../errors.js';

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

export interface GlobalOptions {
  as?: string;
  root?: string;
  json?: boolean;
  stateDir?: string;
  socket?: string;
  simulate?: boolean;
}

export const globalsOf = (cmd: Command): GlobalOptions => cmd.optsWithGlobals() as GlobalOptions;

/** Print data as JSON (--json) or through a text renderer. */
export const emit = (io: CliIo, cmd: Command, data: unknown, text: () => string): void => {
  if (globalsOf(cmd).json) io.stdout(`${JSON.stringify(data, jsonReplacer, 2)}\n`);
  else {
    const out = text();
    if (out) io.stdout(out.endsWith('\n') ? out : `${out}\n`);
  }
};

// BigInt (IOVA addresses) as hex strings.
export const jsonReplacer = (_key: string, value: unknown): unknown =>
  typeof value === 'bigint' ? `0x${value.toString(16)}` : value;

/** Left-aligned text table. */
export const table = (headers: string[], rows: (string | number | null | undefined)[][]): string => {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : (c ?? '').padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
};

export const usage = (message: string): IsogroupError => new IsogroupError('E_USAGE', message);

/**
 * The daemon socket for a command: --socket when given; under --simulate with the default, a socket
 * inside the fixture root, so a simulated daemon and the commands that talk to it agree without flags.
 */
export const socketFor = (cmd: Command, simRoot: string | null): string => {
  const g = globalsOf(cmd);
  const source = cmd.getOptionValueSourceWithGlobals?.('socket');
  if (g.simulate && simRoot !== null && source === 'default') return `${simRoot.replace(/\/+$/, '')}/.isogroup-sim/isogroup.sock`;
  return g.socket ?? '/run/isogroup.sock';
};

/** --state-dir unless it is the default under --simulate (then the API picks one inside the root). */
export const stateDirFor = (cmd: Command): string | undefined => {
  const g = globalsOf(cmd);
  const source = cmd.getOptionValueSourceWithGlobals?.('stateDir');
  return g.simulate && source === 'default' ? undefined : g.stateDir;
};

/**
 * One writer: when a daemon answers on the command's socket, ask it; otherwise act directly (and the
 * caller may warn that nobody holds the group).
 */
export const viaDaemonOr = async <T>(
  cmd: Command,
  direct: () => T,
  remote: (client: import('../daemon/client.js').DaemonClient) => Promise<T>,
): Promise<{ result: T; via: 'daemon' | 'direct'; socket: string }> => {
  const g = globalsOf(cmd);
  const socket = socketFor(cmd, g.simulate ? (g.root ?? '/') : null);
  const { DaemonClient } = await import('../daemon/client.js');
  const client = new DaemonClient(socket);
  if (await client.isRunning()) return { result: await remote(client), via: 'daemon', socket };
  return { result: direct(), via: 'direct', socket };
};

/** --as OWNER: the owner's scope (its context's groups and devices), or null for the whole host. */
export const scopeFor = async (cmd: Command): Promise<{ owner: string; groups: Set<string>; devices: Set<string> } | null> => {
  const g = globalsOf(cmd);
  if (g.as === undefined) return null;
  const { ownerScope } = await import('../api/contexts.js');
  const stateDir = stateDirFor(cmd);
  return ownerScope(g.as, { ...(g.root !== undefined ? { root: g.root } : {}), simulate: g.simulate ?? false, ...(stateDir !== undefined ? { stateDir } : {}) });
};
