import type { Command } from 'commander';
import { snapshot } from '../../api/import.js';
import { type CliIo, emit, globalsOf, usage } from '../context.js';

export const registerSnapshot = (program: Command, io: CliIo): void => {
  program
    .command('snapshot')
    .description('capture the host\'s (or --root\'s) PCI/IOMMU sysfs into a .tar.gz with the layout of the oracle captures')
    .option('--out <file>', 'output FILE.tar.gz')
    .action((opts: { out?: string }, cmd: Command) => {
      if (!opts.out) throw usage('snapshot needs --out FILE.tar.gz');
      const result = snapshot({ root: globalsOf(cmd).root, out: opts.out });
      emit(io, cmd, result, () => {
        const lines = [`wrote ${result.out}: ${result.devices} devices, ${result.groups} groups, ${result.members} tar members`];
        if (result.errors.length) lines.push(`${result.errors.length} file(s) could not be read (stored empty, listed in meta/snapshot.json):`, ...result.errors.slice(0, 20).map((e) => `  ${e}`));
        return lines.join('\n');
      });
    });
};
