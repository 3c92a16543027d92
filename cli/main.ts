import { CommanderError } from 'commander';
import { exitCodeFor, isIsogroupError } from '../errors.js';
import { buildProgram } from './program.js';
import type { CliIo } from './context.js';

/** Run the CLI; the only place that turns errors into messages and exit codes. */
export const runCli = async (argv: string[], io: CliIo): Promise<number> => {
  const program = buildProgram(io);
  const wantsJson = argv.includes('--json');
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help') return 0;
      return 2;
    }
    if (isIsogroupError(error)) {
      if (wantsJson) io.stdout(`${JSON.stringify({ error: error.toJSON() }, null, 2)}\n`);
      io.stderr(`isogroup: ${error.code}: ${error.message}\n`);
      return exitCodeFor(error);
    }
    io.stderr(`isogroup: internal error (please report): ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
    return 1;
  }
};
