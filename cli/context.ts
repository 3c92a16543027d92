import type { Command } from 'commander';
import { IsogroupError } from '../errors.js';

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

export interface GlobalOptions {
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
