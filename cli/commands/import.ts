import type { Command } from 'commander';
import { importLspci } from '../../api/import.js';
import { type CliIo, emit, usage } from '../context.js';

export const registerImport = (program: Command, io: CliIo): void => {
  const imp = program.command('import').description('turn other tools\' output into a fixture root');
  imp
    .command('lspci')
    .description('turn `lspci -nnDvvvxxxx` (or -xxx) output into a fixture root: config space, topology, drivers, kernel groups')
    .argument('<file>', 'lspci output file')
    .option('--out <dir>', 'directory to write the root into (must not exist or be empty)')
    .action((file: string, opts: { out?: string }, cmd: Command) => {
      if (!opts.out) throw usage('import lspci needs --out DIR');
      const result = importLspci(file, opts.out);
      emit(io, cmd, result, () => {
        const synth = result.devices.filter((d) => d.synthesizedExtended).length;
        const lines = [
          `imported ${result.devices.length} devices, ${Object.keys(result.groups).length} kernel groups into ${result.root}`,
          `iommu unit: ${result.iommuUnit ?? '(none)'}; extended config synthesized from decoded text for ${synth} device(s)`,
        ];
        if (result.problems.length) lines.push(`${result.problems.length} problem(s):`, ...result.problems.map((p) => `  ${p.code}: ${p.message}`));
        return lines.join('\n');
      });
    });
  imp.exitOverride().configureOutput({ writeOut: io.stdout, writeErr: io.stderr });
  for (const c of imp.commands) c.exitOverride().configureOutput({ writeOut: io.stdout, writeErr: io.stderr });
};
