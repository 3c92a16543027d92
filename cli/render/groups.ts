import type { CompareResult, GroupsResult } from '../../api/groups.js';
import { shortBdf } from '../../model/bdf.js';

export const renderGroups = (r: GroupsResult, explain: boolean): string => {
  const lines: string[] = [];
  for (const line of r.cannotDerive) lines.push(line);
  lines.push(`${r.groups.length} ${r.source} group(s) under ${r.root}${r.source === 'derived' ? ` (rules: ${r.rules})` : ''}`);
  for (const n of r.notes) if (n.startsWith('no IOMMU is active')) lines.push(`note: ${n}`);
  for (const g of r.groups) {
    const resetMark = g.reset.canResetAlone ? '' : '  [cannot be reset alone]';
    lines.push('', `group ${g.id}: ${g.viable ? 'viable' : 'NOT viable'}  ${g.devices.map(shortBdf).join(' ')}${resetMark}`);
    for (const b of g.blockers) lines.push(`  blocker: ${b.reason}`);
    const r = g.reset;
    if (r.noReset.length) lines.push(`  reset: no reset for ${r.noReset.map(shortBdf).join(' ')}: their state carries over from one user to the next`);
    if (r.sharedReset.length) lines.push(`  reset: ${r.sharedReset.map(shortBdf).join(' ')} only by a bus reset that also resets other groups`);
    if (r.unknown.length) lines.push(`  reset: unknown for ${r.unknown.map(shortBdf).join(' ')} (config space too short)`);
    const others = r.groupsAffected.filter((id) => id !== g.id);
    if (others.length) lines.push(`  reset: a bus reset of its devices also resets group(s) ${others.join(', ')} (one user must own them all)`);
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
