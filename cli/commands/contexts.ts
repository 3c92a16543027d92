import type { Command } from 'commander';
import type { AssignResult } from '../../api/assign.js';
import { runAssign } from '../../api/assign.js';
import { type ContextsListResult, type DestroyResult, listContexts, mergeOwnerContexts, runDestroyContext, showContext } from '../../api/contexts.js';
import { type ReleaseResult, runRelease } from '../../api/release.js';
import type { ContextView } from '../../groups/context.js';
import { output, type Run } from '../io.js';
import { sessionOf, usage, viaDaemonOr } from '../options.js';
import { renderContextList, renderContextView } from '../render/contexts.js';

// `contexts`: one merged IOMMU context per owner (the container the daemon holds), its device
// namespace and usable IOVA ranges. The API of api/contexts.ts and the pipelines, or the daemon's.

type KernelView = ContextView & { kernel?: { match?: boolean } | null };

export const registerContexts = (program: Command, run: Run): void => {
  const contexts = program.command('contexts').description('merged IOMMU contexts: one per owner, its groups, device numbers and usable IOVA ranges');

  contexts
    .command('list', { isDefault: true })
    .description('every context and its owner')
    .action((_o, cmd: Command) =>
      run(async () => {
        const s = sessionOf(cmd);
        const { result } = await viaDaemonOr(
          s,
          () => listContexts(s),
          (c) => c.get<ContextsListResult>('/contexts'),
        );
        return output(result, () => renderContextList(result));
      }),
    );

  contexts
    .command('show')
    .argument('<owner>')
    .description("one owner's context: groups, device namespace, usable IOVA ranges (and the kernel's, when the daemon holds it)")
    .action((owner: string, _o, cmd: Command) =>
      run(async () => {
        const s = sessionOf(cmd);
        const { result } = await viaDaemonOr<KernelView>(
          s,
          () => showContext(owner, s),
          (c) => c.get<KernelView>(`/contexts/${encodeURIComponent(owner)}`),
        );
        return output(result, () => renderContextView(result), { failed: result.kernel?.match === false });
      }),
    );

  contexts
    .command('attach')
    .argument('<owner>')
    .argument('<group|bdf>')
    .option('--force', 'take devices the host uses (never the root filesystem)')
    .description("assign a group and attach it to the owner's context (created on first use)")
    .action((owner: string, target: string, o: { force?: boolean }, cmd: Command) =>
      run(async () => {
        const s = sessionOf(cmd, { owner });
        const { result } = await viaDaemonOr(
          s,
          () => runAssign(s, { target, force: o.force ?? false }),
          (c) => c.post<AssignResult>(`/contexts/${encodeURIComponent(owner)}/attach`, { target, force: o.force ?? false }),
        );
        return output(
          result,
          () =>
            `group ${result.groupId} attached to ${owner}'s context ${result.context ?? ''}: ${result.indices.map((d) => `#${d.index} ${d.bdf}`).join(', ')}`,
          { warnings: result.warnings.map((w) => `warning: ${w}`) },
        );
      }),
    );

  contexts
    .command('detach')
    .argument('<owner>')
    .argument('<group|bdf>')
    .description("release a group from the owner's context (its devices go back to their drivers)")
    .action((owner: string, target: string, _o, cmd: Command) =>
      run(async () => {
        const s = sessionOf(cmd);
        const { result } = await viaDaemonOr(
          s,
          () => runRelease(s, { target, owner }),
          (c) => c.post<ReleaseResult>(`/contexts/${encodeURIComponent(owner)}/detach`, { target }),
        );
        return output(result, () => `group ${result.groupId} detached from ${owner}'s context and released`);
      }),
    );

  contexts
    .command('merge')
    .argument('<from>', 'owner whose context is emptied')
    .argument('<into>', 'owner whose context receives the groups')
    .description('move every group of one context into another (the policy must allow the receiving owner)')
    .action((from: string, into: string, _o, cmd: Command) =>
      run(async () => {
        if (from === into) throw usage('merge needs two different owners');
        const s = sessionOf(cmd);
        const { result } = await viaDaemonOr<KernelView>(
          s,
          () => mergeOwnerContexts(from, into, s),
          (c) => c.post<KernelView>(`/contexts/${encodeURIComponent(from)}/merge`, { into }),
        );
        return output(result, () => renderContextView(result));
      }),
    );

  contexts
    .command('destroy')
    .argument('<owner>')
    .option('--force', "release the context's groups first")
    .description("destroy an owner's context (empty, or with --force after releasing its groups)")
    .action((owner: string, o: { force?: boolean }, cmd: Command) =>
      run(async () => {
        const s = sessionOf(cmd);
        const { result } = await viaDaemonOr(
          s,
          () => runDestroyContext(s, owner, o.force ?? false),
          (c) => c.post<DestroyResult>(`/contexts/${encodeURIComponent(owner)}/destroy`, { force: o.force ?? false }),
        );
        return output(result, () => `context of ${owner} destroyed${result.released.length ? `; released groups ${result.released.join(' ')}` : ''}`);
      }),
    );

  contexts
    .command('handoff')
    .argument('<owner>')
    .argument('<group>')
    .description('give the owner /dev/vfio/N itself (chown, 0660); the daemon drops its hold and watches until the owner opens it')
    .action((owner: string, group: string, _o, cmd: Command) =>
      run(async () => {
        const s = sessionOf(cmd);
        const { result, via } = await viaDaemonOr<Record<string, unknown>>(
          s,
          () => {
            throw usage('handoff needs the daemon (it is the one holding the group); start `isogroup daemon` first');
          },
          (c) => c.post<Record<string, unknown>>(`/contexts/${encodeURIComponent(owner)}/handoff`, { target: group }),
        );
        return output({ ...result, via }, () => `/dev/vfio/${group} now belongs to ${owner} (uid ${String(result.uid)}, gid ${String(result.gid)}, mode 0660)`);
      }),
    );
};
