import type { Command } from 'commander';
import { generateCdi } from '../../api/kubernetes.js';
import { output, type Run } from '../io.js';
import { sessionOf } from '../options.js';
import { renderCdi } from '../render/cdi.js';

// `isogroup cdi generate`: the Container Device Interface spec of the kubelet's pool.

export const registerCdi = (program: Command, run: Run): void => {
  const cdi = program.command('cdi').description('Container Device Interface: the pool as CDI devices (kind isogroup.io/group, one per group)');
  cdi
    .command('generate')
    .description('write the CDI spec of the pool (the groups assigned to the kubelet owner): printed, or written atomically to --out')
    .option('--out <file>', 'write the spec here (e.g. /etc/cdi/isogroup.io.yaml) instead of printing it')
    .option('--kubelet-owner <name>', 'the owner whose groups form the pool (default kubernetes)')
    .action((opts: { out?: string; kubeletOwner?: string }, cmd: Command) =>
      run(() => {
        const s = sessionOf(cmd, opts.kubeletOwner !== undefined ? { kubeletOwner: opts.kubeletOwner } : {});
        const r = generateCdi(s, opts.out);
        return output({ file: r.file, owner: r.owner, devices: r.spec.devices.map((d) => d.name), spec: r.spec }, () => renderCdi(r));
      }),
    );
};
