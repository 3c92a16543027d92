import type { Command } from 'commander';
import { importLspci } from '../../api/capture.js';
import { output, type Run } from '../io.js';
import { usage } from '../options.js';
import { renderImport } from '../render/capture.js';

export const registerImport = (program: Command, run: Run): void => {
  const imp = program.command('import').description("turn other tools' output into a fixture root");
  imp
    .command('lspci')
    .description('turn `lspci -nnDvvvxxxx` (or -xxx) output into a fixture root: config space, topology, drivers, kernel groups')
    .argument('<file>', 'lspci output file')
    .option('--out <dir>', 'directory to write the root into (must not exist or be empty)')
    .action((file: string, opts: { out?: string }) =>
      run(() => {
        if (!opts.out) throw usage('import lspci needs --out DIR');
        const result = importLspci(file, opts.out);
        return output(result, () => renderImport(result));
      }),
    );
};
