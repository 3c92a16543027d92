import type { Command } from 'commander';
import { type ContextOptions, assignToOwner, destroyOwnerContext, listContexts, mergeOwnerContexts, releaseFromOwner, showContext } from '../../api/contexts.js';
import { shortBdf } from '../../model/bdf.js';
import { type CliIo, emit, globalsOf, stateDirFor, table, usage, viaDaemonOr } from '../context.js';

// `contexts`: one merged IOMMU context per owner (the container the daemon holds), its device
// namespace and usable IOVA ranges. Thin calls into api/contexts.ts, or the daemon when it runs.

const optionsOf = (cmd: Command): ContextOptions => {
  const g = globalsOf(cmd);
  const stateDir = stateDirFor(cmd);
  return { ...(g.root !== undefined ? { root: g.root } : {}), simulate: g.simulate ?? false, ...(stateDir !== undefined ? { stateDir } : {}) };
};

const renderView = (v: ReturnType<typeof showContext> & { kernel?: Record<string, unknown> | null }): string => {
  const c = v.context;
  const lines = [
    `context ${c.id} of ${c.owner}: ${c.groups.length} group(s), ${c.devices.filter((d) => d.present).length} device(s)`,
    ...c.groups.map((g) => `  group ${g.id}: ${g.devices.map(shortBdf).join(' ')}  [${g.iommuUnits.join(' ') || 'no IOMMU unit'}]`),
    '  devices (context-local numbers, stable for the context\'s life):',
    table(['  #', 'BDF', 'GROUP', 'DRIVER'], c.devices.map((d) => [`  ${d.index}`, d.bdf, d.group, d.present ? d.driver : '(gone)'])),
    `  usable IOVA (aperture ${c.aperture.start}-${c.aperture.end} minus reserved regions):`,
    ...c.iovaRanges.map((r) => `    ${r.start} - ${r.end}`),
    ...(v.kernel ? [`  kernel (VFIO_IOMMU_GET_INFO): ${v.kernel.match === true ? 'same ranges' : JSON.stringify(v.kernel)}`] : []),
    ...c.notes.map((n) => `  note: ${n.message}`),
  ];
  return lines.join('\n');
};

export const registerContexts = (program: Command, io: CliIo): void => {
  const contexts = program.command('contexts').description('merged IOMMU contexts: one per owner, its groups, device numbers and usable IOVA ranges');

  contexts
    .command('list', { isDefault: true })
    .description('every context and its owner')
    .action(async (_o, cmd: Command) => {
      const { result } = await viaDaemonOr(cmd, () => listContexts(optionsOf(cmd)), (c) => c.get<ReturnType<typeof listContexts>>('/contexts'));
      emit(io, cmd, result, () =>
        result.contexts.length ? table(['CONTEXT', 'OWNER', 'GROUPS', 'DEVICES'], result.contexts.map((c) => [c.id, c.owner, c.groups.join(' '), c.devices])) : 'no contexts',
      );
    });

  contexts
    .command('show')
    .argument('<owner>')
    .description("one owner's context: groups, device namespace, usable IOVA ranges (and the kernel's, when the daemon holds it)")
    .action(async (owner: string, _o, cmd: Command) => {
      const { result } = await viaDaemonOr(cmd, () => showContext(owner, optionsOf(cmd)), (c) => c.get<ReturnType<typeof showContext>>(`/contexts/${encodeURIComponent(owner)}`));
      emit(io, cmd, result, () => renderView(result));
      const kernel = (result as { kernel?: { match?: boolean } | null }).kernel;
      if (kernel && kernel.match === false) process.exitCode = 1;
    });

  contexts
    .command('attach')
    .argument('<owner>')
    .argument('<group|bdf>')
    .option('--force', 'take devices the host uses (never the root filesystem)')
    .description("assign a group and attach it to the owner's context (created on first use)")
    .action(async (owner: string, target: string, o: { force?: boolean }, cmd: Command) => {
      const { result } = await viaDaemonOr(
        cmd,
        () => assignToOwner(target, { ...optionsOf(cmd), owner, force: o.force ?? false }),
        (c) => c.request<ReturnType<typeof assignToOwner>>('POST', `/contexts/${encodeURIComponent(owner)}/attach`, { target, force: o.force ?? false }),
      );
      emit(io, cmd, result, () => `group ${result.groupId} attached to ${owner}'s context ${result.context ?? ''}: ${result.indices.map((d) => `#${d.index} ${d.bdf}`).join(', ')}`);
    });

  contexts
    .command('detach')
    .argument('<owner>')
    .argument('<group|bdf>')
    .description('release a group from the owner\'s context (its devices go back to their drivers)')
    .action(async (owner: string, target: string, _o, cmd: Command) => {
      const { result } = await viaDaemonOr(
        cmd,
        () => releaseFromOwner(target, optionsOf(cmd)),
        (c) => c.request<ReturnType<typeof releaseFromOwner>>('POST', `/contexts/${encodeURIComponent(owner)}/detach`, { target }),
      );
      emit(io, cmd, result, () => `group ${result.groupId} detached from ${owner}'s context and released`);
    });

  contexts
    .command('merge')
    .argument('<from>', 'owner whose context is emptied')
    .argument('<into>', 'owner whose context receives the groups')
    .description("move every group of one context into another (the policy must allow the receiving owner)")
    .action(async (from: string, into: string, _o, cmd: Command) => {
      if (from === into) throw usage('merge needs two different owners');
      const { result } = await viaDaemonOr(
        cmd,
        () => mergeOwnerContexts(from, into, optionsOf(cmd)),
        (c) => c.request<ReturnType<typeof mergeOwnerContexts>>('POST', `/contexts/${encodeURIComponent(from)}/merge`, { into }),
      );
      emit(io, cmd, result, () => renderView(result));
    });

  contexts
    .command('destroy')
    .argument('<owner>')
    .option('--force', 'release the context\'s groups first')
    .description("destroy an owner's context (empty, or with --force after releasing its groups)")
    .action(async (owner: string, o: { force?: boolean }, cmd: Command) => {
      const { result } = await viaDaemonOr(
        cmd,
        () => destroyOwnerContext(owner, { ...optionsOf(cmd), force: o.force ?? false }),
        (c) => c.request<ReturnType<typeof destroyOwnerContext>>('POST', `/contexts/${encodeURIComponent(owner)}/destroy`, { force: o.force ?? false }),
      );
      emit(io, cmd, result, () => `context of ${owner} destroyed${result.released.length ? `; released groups ${result.released.join(' ')}` : ''}`);
    });

  contexts
    .command('handoff')
    .argument('<owner>')
    .argument('<group>')
    .description('give the owner /dev/vfio/N itself (chown, 0660); the daemon drops its hold and watches until the owner opens it')
    .action(async (owner: string, group: string, _o, cmd: Command) => {
      const { result, via } = await viaDaemonOr(
        cmd,
        () => {
          throw usage('handoff needs the daemon (it is the one holding the group); start `isogroup daemon` first');
        },
        (c) => c.request<Record<string, unknown>>('POST', `/contexts/${encodeURIComponent(owner)}/handoff`, { target: group }),
      );
      emit(io, cmd, { ...result, via }, () => `/dev/vfio/${group} now belongs to ${owner} (uid ${String(result.uid)}, gid ${String(result.gid)}, mode 0660)`);
    });
};
