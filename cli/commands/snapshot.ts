import type { Command } from 'commander';
import { snapshot } from '../../api/capture.js';
import { output, type Run } from '../io.js';
import { sessionOptions, usage } from '../options.js';
import { renderSnapshot } from '../render/capture.js';

export const registerSnapshot = (program: Command, run: Run): void => {
  program
    .command('snapshot')
    .description("capture the host's (or --root's) PCI/IOMMU sysfs into a .tar.gz with the layout of the oracle captures")
    .option('--out <file>', 'output FILE.tar.gz')
    .action((opts: { out?: string }, cmd: Command) =>
      run(() => {
        if (!opts.out) throw usage('snapshot needs --out FILE.tar.gz');
        const result = snapshot({ ...sessionOptions(cmd), out: opts.out });
        return output(result, () => renderSnapshot(result));
      }),
    );
};
