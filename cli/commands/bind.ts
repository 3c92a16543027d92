import type { Command } from 'commander';
import { type AssignResult, type BindOptions, type ReleaseResult, recover, status } from '../../api/bind.js';
import type { PlanStep } from '../../bind/plan.js';
import { type ContextAssignResult, assignToOwner, releaseFromOwner } from '../../api/contexts.js';
import { type CliIo, emit, globalsOf, table, viaDaemonOr } from '../context.js';

// assign / release / recover / status: thin calls into api/bind.ts.

const bindOptions = (cmd: Command): BindOptions => {
  const g = globalsOf(cmd);
  const opts: BindOptions = {};
  if (g.root !== undefined) opts.root = g.root;
  if (g.simulate) opts.simulate = true;
  // Under --simulate the default state directory lives inside the fixture root, unless one was given.
  const source = cmd.getOptionValueSourceWithGlobals?.('stateDir');
  if (g.stateDir !== undefined && !(g.simulate && source === 'default')) opts.stateDir = g.stateDir;
  return opts;
};

const stepLine = (s: PlanStep & { ok?: boolean }): string => {
  const mark = s.ok === undefined ? ' ' : s.ok ? '+' : '!';
  const action = s.kind === 'verify' ? `verify ${s.bdf} on ${s.expect ?? 'no driver'}` : `echo ${JSON.stringify(s.value)} > /${s.file}`;
  return `  ${mark} ${action.padEnd(74)} # ${s.why}`;
};

const renderTransaction = (verb: string, r: AssignResult | ReleaseResult): string => {
  const lines: string[] = [];
  if (r.dryRun) {
    lines.push(`${verb} group ${r.groupId} to ${r.owner} (dry run, nothing written):`);
    lines.push(...r.plan.steps.map(stepLine));
    if (r.plan.steps.length === 0) lines.push('  (no steps)');
  } else {
    lines.push(`${verb} group ${r.groupId} (${r.owner}): ${r.devices?.join(' ')}`);
    lines.push(...(r.done ?? []).map(stepLine));
  }
  lines.push(...r.plan.notes.map((n) => `note: ${n}`));
  return lines.join('\n');
};

export const registerBind = (program: Command, io: CliIo): void => {
  program
    .command('assign')
    .description('hand a whole IOMMU group to vfio-pci as one journaled transaction (a BDF means its whole group)')
    .argument('<group|bdf>', 'IOMMU group number, or the PCI address of any device in it')
    .option('--to <owner>', 'who gets the group (default: the invoking user)')
    .option('--dry-run', 'print the steps, write nothing')
    .option('--force', 'take devices the host uses (never the root filesystem)')
    .action(async (target: string, opts: { to?: string; dryRun?: boolean; force?: boolean }, cmd: Command) => {
      const o = { ...bindOptions(cmd), dryRun: opts.dryRun ?? false, force: opts.force ?? false, ...(opts.to !== undefined ? { owner: opts.to } : {}) };
      const { result: r, via, socket } = await viaDaemonOr(
        cmd,
        () => assignToOwner(target, o),
        (c) => c.request<ContextAssignResult & { held?: boolean }>('POST', '/assign', { target, ...(opts.to !== undefined ? { owner: opts.to } : {}), force: o.force, dryRun: o.dryRun }),
      );
      emit(io, cmd, { ...r, via }, () => renderTransaction('assign', r));
      if (!r.dryRun && via === 'direct') io.stderr(`isogroup: warning: no daemon answers on ${socket}, so nobody holds group ${r.groupId}: a device hot-added into it gets its host driver until repaired (run \`isogroup daemon\`)\n`);
    });

  program
    .command('release')
    .description('give an assigned group back to the drivers it had')
    .argument('<group|bdf>', 'IOMMU group number, or the PCI address of any device in it')
    .option('--dry-run', 'print the steps, write nothing')
    .action(async (target: string, opts: { dryRun?: boolean }, cmd: Command) => {
      const { result: r, via } = await viaDaemonOr(
        cmd,
        () => releaseFromOwner(target, { ...bindOptions(cmd), dryRun: opts.dryRun ?? false }),
        (c) => c.request<ReleaseResult>('POST', '/release', { target, dryRun: opts.dryRun ?? false }),
      );
      emit(io, cmd, { ...r, via }, () => renderTransaction('release', r));
    });

  program
    .command('recover')
    .description('after a crash: bring the devices of every unfinished transaction back to their drivers')
    .action(async (_opts, cmd: Command) => {
      const { result: r } = await viaDaemonOr(cmd, () => recover(bindOptions(cmd)), (c) => c.request<ReturnType<typeof recover>>('POST', '/recover', {}));
      emit(io, cmd, r, () =>
        r.recovered.length === 0
          ? `nothing to recover (${r.assigned.length} group(s) assigned)`
          : r.recovered.map((g) => `group ${g.groupId} (${g.owner}, was ${g.from}): restored ${g.devices.join(' ')}\n${g.done.map(stepLine).join('\n')}`).join('\n'),
      );
    });

  program
    .command('status')
    .description('what is assigned, to whom, and the drivers each device had')
    .action(async (_opts, cmd: Command) => {
      const opts = { as: globalsOf(cmd).as };
      const { result: r, via } = await viaDaemonOr(cmd, () => status(bindOptions(cmd)), (c) => c.get<ReturnType<typeof status> & { daemon?: unknown }>('/status'));
      const groups = opts.as === undefined ? r.groups : r.groups.filter((g) => g.owner === opts.as);
      emit(io, cmd, { groups, unfinished: r.unfinished, via, ...('daemon' in r ? { daemon: (r as { daemon?: unknown }).daemon } : {}) }, () => {
        if (groups.length === 0) return `no group is assigned${opts.as ? ` to ${opts.as}` : ''}${via === 'direct' ? ' (no daemon running: nothing is held)' : ''}`;
        const rows = groups.flatMap((g) => g.devices.map((b, i) => [i === 0 ? g.id : '', i === 0 ? g.owner : '', i === 0 ? g.state : '', i === 0 ? (g.held ? 'yes' : 'no') : '', b, g.originalDrivers[b] ?? '-', i === 0 ? g.since : '']));
        const out = [table(['GROUP', 'OWNER', 'STATE', 'HELD', 'DEVICE', 'ORIGINAL DRIVER', 'SINCE'], rows)];
        if (via === 'direct') out.push('', 'no daemon running: assigned groups are not held, so hot-added devices inside them get host drivers until repaired');
        if (r.unfinished.length) out.push('', `unfinished transaction(s) on group(s) ${r.unfinished.join(', ')}: run \`isogroup recover\``);
        return out.join('\n');
      });
    });
};
