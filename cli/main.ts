import { CommanderError } from 'commander';
import { exitCodeFor, isIsogroupError } from '../errors.js';
import { type CliIo, jsonReplacer, type Output } from './io.js';
import { buildProgram } from './program.js';

/** Run the CLI; the only place that prints a command's result and turns errors into messages and exit codes. */
export const runCli = async (argv: string[], io: CliIo): Promise<number> => {
  let result: Output | null = null;
  const program = buildProgram(io, (o) => {
    result = o;
  });
  const wantsJson = argv.includes('--json');
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') return 0;
      return 2;
    }
    if (isIsogroupError(error)) {
      if (wantsJson) io.stdout(`${JSON.stringify({ error: error.toJSON() }, jsonReplacer, 2)}\n`);
      io.stderr(`isogroup: ${error.code}: ${error.message}\n`);
      return exitCodeFor(error);
    }
    io.stderr(`isogroup: internal error (please report): ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    return 1;
  }
  const out = result as Output | null;
  if (out === null) return 0;
  for (const w of out.warnings ?? []) io.stderr(`isogroup: ${w}\n`);
  if (wantsJson) io.stdout(`${JSON.stringify(out.data, jsonReplacer, 2)}\n`);
  else {
    const text = out.text();
    if (text) io.stdout(text.endsWith('\n') ? text : `${text}\n`);
  }
  return out.failed ? 1 : 0;
};
