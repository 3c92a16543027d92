import type { AssignResult } from '../../api/assign.js';
import type { ReleaseResult } from '../../api/release.js';
import type { StatusResult } from '../../api/status.js';
import type { StepRecord } from '../../bind/apply.js';
import type { PlanStep } from '../../bind/plan.js';
import type { RecoverResult } from '../../bind/recover.js';
import { table } from '../io.js';

const stepLine = (s: PlanStep & { ok?: boolean }): string => {
  const mark = s.ok === undefined ? ' ' : s.ok ? '+' : '!';
  const action = s.kind === 'verify' ? `verify ${s.bdf} on ${s.expect ?? 'no driver'}` : `echo ${JSON.stringify(s.value)} > /${s.file}`;
  return `  ${mark} ${action.padEnd(74)} # ${s.why}`;
};

/** An assign or release: the plan of a dry run, or the steps done. */
export const renderTransaction = (verb: string, r: AssignResult | ReleaseResult): string => {
  const lines: string[] = [];
  if (r.dryRun) {
    lines.push(`${verb} group ${r.groupId} to ${r.owner} (dry run, nothing written):`);
    lines.push(...r.plan.steps.map(stepLine));
    if (r.plan.steps.length === 0) lines.push('  (no steps)');
  } else {
    lines.push(`${verb} group ${r.groupId} (${r.owner}): ${r.devices?.join(' ')}`);
    lines.push(...(r.done ?? []).map((s: StepRecord) => stepLine(s)));
  }
  lines.push(...r.plan.notes.map((n) => `note: ${n}`));
  return lines.join('\n');
};

export const renderRecover = (r: RecoverResult): string =>
  r.recovered.length === 0
    ? `nothing to recover (${r.assigned.length} group(s) assigned)`
    : r.recovered.map((g) => `group ${g.groupId} (${g.owner}, was ${g.from}): restored ${g.devices.join(' ')}\n${g.done.map(stepLine).join('\n')}`).join('\n');

export const renderStatus = (r: StatusResult & { owner?: string }, via: 'daemon' | 'direct'): string => {
  if (r.groups.length === 0) return `no group is assigned${r.owner ? ` to ${r.owner}` : ''}${via === 'direct' ? ' (no daemon running: nothing is held)' : ''}`;
  const rows = r.groups.flatMap((g) =>
    g.devices.map((b, i) => [
      i === 0 ? g.id : '',
      i === 0 ? g.owner : '',
      i === 0 ? g.state : '',
      i === 0 ? (g.held ? 'yes' : 'no') : '',
      b,
      g.originalDrivers[b] ?? '-',
      i === 0 ? g.since : '',
    ]),
  );
  const out = [table(['GROUP', 'OWNER', 'STATE', 'HELD', 'DEVICE', 'ORIGINAL DRIVER', 'SINCE'], rows)];
  if (via === 'direct') out.push('', 'no daemon running: assigned groups are not held, so hot-added devices inside them get host drivers until repaired');
  if (r.unfinished.length) out.push('', `unfinished transaction(s) on group(s) ${r.unfinished.join(', ')}: run \`isogroup recover\``);
  return out.join('\n');
};
