import type { Command } from 'commander';
import { type AssignResult, runAssign } from '../../api/assign.js';
import { type ReleaseResult, runRecover, runRelease } from '../../api/release.js';
import { type StatusResult, status } from '../../api/status.js';
import type { RecoverResult } from '../../bind/recover.js';
import { output, type Run } from '../io.js';
import { sessionOf, viaDaemonOr } from '../options.js';
import { renderRecover, renderStatus, renderTransaction } from '../render/transactions.js';

// assign / release / recover / status: the pipelines of api/, run directly or by the daemon.

export const registerTransactions = (program: Command, run: Run): void => {
  program
    .command('assign')
    .description('hand a whole IOMMU group to vfio-pci as one journaled transaction (a BDF means its whole group)')
    .argument('<group|bdf>', 'IOMMU group number, or the PCI address of any device in it')
    .option('--to <owner>', 'who gets the group (default: the invoking user; under sudo, the user who ran sudo)')
    .option('--dry-run', 'print the steps, write nothing')
    .option('--force', 'take devices the host uses (never the root filesystem)')
    .action((target: string, opts: { to?: string; dryRun?: boolean; force?: boolean }, cmd: Command) =>
      run(async () => {
        const s = sessionOf(cmd, opts.to !== undefined ? { owner: opts.to } : {});
        const request = { target, force: opts.force ?? false, dryRun: opts.dryRun ?? false };
        const { result: r, via } = await viaDaemonOr(
          s,
          () => runAssign(s, request),
          (c) => c.post<AssignResult>('/assign', { ...request, owner: s.owner() }),
        );
        const warnings = [
          ...r.warnings.map((w) => `warning: ${w}`),
          ...(!r.dryRun && via === 'direct'
            ? [
                `warning: no daemon answers on ${s.socket ?? 'a socket'}, so nobody holds group ${r.groupId}: a device hot-added into it gets its host driver until repaired (run \`isogroup daemon\`)`,
              ]
            : []),
        ];
        return output({ ...r, via }, () => renderTransaction('assign', r), { warnings });
      }),
    );

  program
    .command('release')
    .description('give an assigned group back to the drivers it had')
    .argument('<group|bdf>', 'IOMMU group number, or the PCI address of any device in it')
    .option('--dry-run', 'print the steps, write nothing')
    .action((target: string, opts: { dryRun?: boolean }, cmd: Command) =>
      run(async () => {
        const s = sessionOf(cmd);
        const request = { target, dryRun: opts.dryRun ?? false };
        const { result: r, via } = await viaDaemonOr(
          s,
          () => runRelease(s, request),
          (c) => c.post<ReleaseResult>('/release', request),
        );
        return output({ ...r, via }, () => renderTransaction('release', r));
      }),
    );

  program
    .command('recover')
    .description('after a crash: bring the devices of every unfinished transaction back to their drivers')
    .action((_opts, cmd: Command) =>
      run(async () => {
        const s = sessionOf(cmd);
        const { result: r } = await viaDaemonOr(
          s,
          () => runRecover(s),
          (c) => c.post<RecoverResult & { stateDir: string }>('/recover', {}),
        );
        return output(r, () => renderRecover(r));
      }),
    );

  program
    .command('status')
    .description('what is assigned, to whom, and the drivers each device had')
    .action((_opts, cmd: Command) =>
      run(async () => {
        const s = sessionOf(cmd);
        const { result: r, via } = await viaDaemonOr(
          s,
          () => status(s),
          (c) => c.get<StatusResult & { owner?: string; daemon?: unknown }>('/status'),
        );
        // The daemon answers for the peer; --as narrows what root asked for.
        const groups = s.as === null ? r.groups : r.groups.filter((g) => g.owner === s.as);
        const shown = { ...r, groups, ...(s.as !== null ? { owner: s.as } : {}) };
        return output({ groups, unfinished: r.unfinished, via, ...('daemon' in r ? { daemon: r.daemon } : {}) }, () => renderStatus(shown, via));
      }),
    );
};
