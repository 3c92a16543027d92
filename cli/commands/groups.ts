import type { Command } from 'commander';
import { compareGroups, listGroups } from '../../api/groups.js';
import { output, type Run } from '../io.js';
import { sessionOf, usage } from '../options.js';
import { renderCompare, renderGroups } from '../render/groups.js';

interface GroupsFlags {
  kernel?: boolean;
  derived?: boolean;
  compare?: boolean;
  explain?: boolean;
  rules?: string;
  assumeAcs?: string[];
  kernelRelease?: string;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export const registerGroups = (program: Command, run: Run): void => {
  program
    .command('groups')
    .description("IOMMU groups with viability: the kernel's, derived from topology/ACS/quirks, or both compared")
    .option('--kernel', "the kernel's groups (/sys/kernel/iommu_groups)")
    .option('--derived', 'groups derived from the device model, as the kernel would form them')
    .option('--compare', 'derived vs kernel groups, by members; exit 1 when they differ')
    .option('--explain', 'say for every device which rule put it in its group')
    .option('--rules <set>', 'rule set: mainline (default) or acs-rework (the 2025 "Fix incorrect iommu_groups with PCIe ACS" series)')
    .option('--assume-acs <bdf[,bdf]>', 'what-if: treat these devices as ACS-isolated (repeatable)', collect)
    .option('--kernel-release <release>', "kernel release whose quirk tables apply (default: the root's own)")
    .action((opts: GroupsFlags, cmd: Command) =>
      run(() => {
        const modes = [opts.kernel, opts.derived, opts.compare].filter(Boolean).length;
        if (modes > 1) throw usage('--kernel, --derived and --compare exclude each other');
        const session = sessionOf(cmd, opts.kernelRelease !== undefined ? { kernelRelease: opts.kernelRelease } : {});
        const request = {
          session,
          ...(opts.rules !== undefined ? { rules: opts.rules } : {}),
          ...(opts.assumeAcs !== undefined ? { assumeAcs: opts.assumeAcs } : {}),
        };
        if (opts.compare) {
          const result = compareGroups(request);
          return output(result, () => renderCompare(result, Boolean(opts.explain)), { failed: !result.agree });
        }
        const result = listGroups({ ...request, source: opts.kernel ? 'kernel' : opts.derived ? 'derived' : 'auto' });
        return output(result, () => renderGroups(result, Boolean(opts.explain)));
      }),
    );
};
