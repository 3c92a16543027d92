import type { Command } from 'commander';
import { compareGroups, listGroups, type CompareResult, type GroupsResult } from '../../api/groups.js';
import { shortBdf } from '../../model/bdf.js';
import { type CliIo, emit, globalsOf, scopeFor, usage } from '../context.js';

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

export const registerGroups = (program: Command, io: CliIo): void => {
  program
    .command('groups')
    .description('IOMMU groups with viability: the kernel\'s, derived from topology/ACS/quirks, or both compared')
    .option('--kernel', 'the kernel\'s groups (/sys/kernel/iommu_groups)')
    .option('--derived', 'groups derived from the device model, as the kernel would form them')
    .option('--compare', 'derived vs kernel groups, by members; exit 1 when they differ')
    .option('--explain', 'say for every device which rule put it in its group')
    .option('--rules <set>', 'rule set: mainline (default) or acs-rework (the 2025 "Fix incorrect iommu_groups with PCIe ACS" series)')
    .option('--assume-acs <bdf[,bdf]>', 'what-if: treat these devices as ACS-isolated (repeatable)', collect)
    .option('--kernel-release <release>', 'kernel release whose quirk tables apply (default: the root\'s own)')
    .action(async (opts: GroupsFlags, cmd: Command) => {
      const g = globalsOf(cmd);
      const modes = [opts.kernel, opts.derived, opts.compare].filter(Boolean).length;
      if (modes > 1) throw usage('--kernel, --derived and --compare exclude each other');
      const request = { root: g.root, rules: opts.rules, assumeAcs: opts.assumeAcs, kernelRelease: opts.kernelRelease };
      if (opts.compare) {
        const result = compareGroups(request);
        emit(io, cmd, result, () => renderCompare(result, Boolean(opts.explain)));
        if (!result.agree) process.exitCode = 1;
        return;
      }
      const all = listGroups({ ...request, source: opts.kernel ? 'kernel' : opts.derived ? 'derived' : 'auto' });
      const scope = await scopeFor(cmd);
      const result = scope ? { ...all, owner: scope.owner, groups: all.groups.filter((x) => scope.groups.has(x.id)), ungrouped: [] } : all;
      emit(io, cmd, result, () => renderGroups(result, Boolean(opts.explain)));
    });
};

export const renderGroups = (r: GroupsResult, explain: boolean): string => {
  const lines: string[] = [];
  for (const line of r.cannotDerive) lines.push(line);
  lines.push(`${r.groups.length} ${r.source} group(s) under ${r.root}${r.source === 'derived' ? ` (rules: ${r.rules})` : ''}`);
  for (const n of r.notes) if (n.startsWith('no IOMMU is active')) lines.push(`note: ${n}`);
  for (const g of r.groups) {
    lines.push('', `group ${g.id}: ${g.viable ? 'viable' : 'NOT viable'}  ${g.devices.map(shortBdf).join(' ')}`);
    for (const b of g.blockers) lines.push(`  blocker: ${b.reason}`);
    if (explain || g.devices.length > 1) {
      for (const reason of g.reasons) if (explain || reason.joined !== null) lines.push(`  why: ${reason.message} [${reason.rule}]`);
    }
  }
  if (r.ungrouped.length) lines.push('', `no group (not translated by the IOMMU): ${r.ungrouped.map(shortBdf).join(' ')}`);
  if (explain && r.notes.length) lines.push('', 'notes:', ...r.notes.map((n) => `  ${n}`));
  return lines.join('\n');
};

export const renderCompare = (r: CompareResult, explain: boolean): string => {
  const lines: string[] = [];
  for (const line of r.cannotDerive) lines.push(line);
  lines.push(
    r.agree
      ? `agree: all ${r.kernelGroups} kernel groups are derived with the same members (rules: ${r.rules}, kernel ${r.kernelRelease ?? 'unknown'})`
      : `DISAGREE: ${r.matching} of ${r.kernelGroups} kernel groups match; ${r.mismatches.length} mismatch(es) (derived ${r.derivedGroups} groups, rules: ${r.rules})`,
  );
  for (const m of r.mismatches) {
    lines.push('', `devices ${m.devices.map(shortBdf).join(' ')}`);
    lines.push(`  kernel:  ${m.kernel.map((g) => `${g.id}=[${g.devices.map(shortBdf).join(' ')}]`).join('  ')}`);
    lines.push(`  derived: ${m.derived.map((g) => `${g.id}=[${g.devices.map(shortBdf).join(' ')}]`).join('  ')}`);
    lines.push(`  rule:    ${m.rule}`, `  why:     ${m.explanation}`);
  }
  if (r.onlyKernel.length) lines.push('', `grouped by the kernel only: ${r.onlyKernel.map(shortBdf).join(' ')}`);
  if (r.onlyDerived.length) lines.push('', `grouped by isogroup only: ${r.onlyDerived.map(shortBdf).join(' ')}`);
  if (explain && r.notes.length) lines.push('', 'notes:', ...r.notes.map((n) => `  ${n}`));
  return lines.join('\n');
};
