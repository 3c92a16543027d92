// The socket API: each route is the programmatic API run in the peer's session (SO_PEERCRED says who
// asks). Transactions go through the same pipelines the CLI runs, with the daemon's runner and holds.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { runAssign } from '../api/assign.js';
import { listContexts, mergeOwnerContexts, runDestroyContext, showContext } from '../api/contexts.js';
import { listDevices } from '../api/devices.js';
import { listGroups } from '../api/groups.js';
import { contextTableOf } from '../api/read.js';
import { runRecover, runRelease } from '../api/release.js';
import type { PipelineEnv } from '../api/runner.js';
import type { Session } from '../api/session.js';
import { type StatusResult, status } from '../api/status.js';
import { IsogroupError } from '../errors.js';
import { contextOf } from '../groups/context.js';
import type { Policy } from '../groups/policy.js';
import { parseTarget } from '../model/bdf.js';
import { requireSelfOrRoot, type Subject } from '../model/owner.js';
import { type AuditLog, decideAndAudit } from '../state/audit.js';
import type { Handoff } from '../state/handoffs.js';
import { VFIO_CONTAINER, vfioGroup } from '../sysfs/paths.js';
import type { SysfsPort } from '../sysfs/port.js';
import { scanHost } from '../sysfs/scan.js';
import type { EventHub } from './events.js';
import type { Holds } from './holds.js';
import type { RequestContext, UnixHttpServer } from './http-unix.js';

type Body = Record<string, unknown>;

/** What the routes need of the daemon (daemon/daemon.ts implements it). */
export interface RoutedDaemon {
  readonly session: Session;
  readonly hub: EventHub;
  readonly holds: Holds;
  readonly port: SysfsPort;
  readonly root: string;
  readonly stateDir: string;
  readonly audit: AuditLog;
  readonly policy: Policy;
  requestSession(subject: Subject, request?: { owner?: string; view?: boolean }): Session;
  pipeline(): PipelineEnv;
  serialize<T>(fn: () => Promise<T>): Promise<T>;
  schedule(reason: string): void;
  idle(): Promise<void>;
  heldGroups(): Set<string>;
  status(): StatusResult & { daemon: Record<string, unknown> };
  decorateStatus<T extends StatusResult>(st: T): T & { daemon: Record<string, unknown> };
  handoff(groupId: string, owner: string): Handoff;
  /** After a merge: hold every moved group in its new owner's container. */
  followOwners(): void;
}

const subjectOf = (daemon: RoutedDaemon, ctx: { peer: RequestContext['peer'] }): Subject => {
  if (!ctx.peer) throw new IsogroupError('E_PERMISSION', 'the kernel did not say who is asking (no peer credentials)', {});
  return daemon.session.subjectForIds(ctx.peer.uid, ctx.peer.gid);
};

const requireBody = (body: unknown): Body => {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new IsogroupError('E_USAGE', 'request body must be a JSON object', {});
  return body as Body;
};

/** A body naming a GROUP|BDF target (validated before anything runs). */
const requireTarget = (body: unknown): { target: string; body: Body } => {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new IsogroupError('E_USAGE', 'request body must be a JSON object with "target" (a group number or a PCI address)', {});
  const b = body as Body;
  if (typeof b.target !== 'string' && typeof b.target !== 'number') throw new IsogroupError('E_USAGE', '"target" must be a group number or a PCI address', {});
  const target = String(b.target);
  parseTarget(target);
  return { target, body: b };
};

const ownerOf = (body: Body): string | undefined => {
  if (body.owner === undefined) return undefined;
  if (typeof body.owner !== 'string') throw new IsogroupError('E_USAGE', '"owner" must be a string', {});
  return body.owner;
};

export const routes = (server: UnixHttpServer, daemon: RoutedDaemon): UnixHttpServer => {
  const session = (ctx: RequestContext, request: { owner?: string; view?: boolean } = {}) => daemon.requestSession(subjectOf(daemon, ctx), request);

  const assign = async (ctx: RequestContext, target: string, owner: string | undefined, body: Body) => {
    const s = session(ctx, owner !== undefined ? { owner } : {});
    const result = await daemon.serialize(() => runAssign(s, { target, force: body.force === true, dryRun: body.dryRun === true }, daemon.pipeline()));
    if (!result.dryRun) daemon.hub.publish('assign', { group: result.groupId, owner: result.owner, devices: result.devices ?? [], context: result.context });
    return { ...result, held: daemon.heldGroups().has(result.groupId) };
  };

  const release = async (ctx: RequestContext, request: { target: string; dryRun?: boolean; owner?: string }) => {
    const result = await daemon.serialize(() => runRelease(session(ctx), request, daemon.pipeline()));
    if (!result.dryRun) daemon.hub.publish('release', { group: result.groupId, owner: result.owner });
    return result;
  };

  return server
    .route('GET', '/health', () => ({ ok: true, pid: process.pid }))
    .route('GET', '/status', (ctx) => daemon.decorateStatus(status(session(ctx, { view: true }))))
    .route('GET', '/devices', (ctx) => listDevices(session(ctx, { view: true })))
    .route('GET', '/groups', (ctx) => {
      const source = ctx.query.get('source') ?? 'auto';
      if (source !== 'auto' && source !== 'kernel' && source !== 'derived')
        throw new IsogroupError('E_USAGE', `source must be kernel, derived or auto, got ${JSON.stringify(source)}`, { source });
      return listGroups({ session: session(ctx, { view: true }), pciIds: null, source });
    })
    .route('POST', '/assign', (ctx) => {
      const { target, body } = requireTarget(ctx.body);
      return assign(ctx, target, ownerOf(body), body);
    })
    .route('POST', '/release', (ctx) => {
      const { target, body } = requireTarget(ctx.body);
      return release(ctx, { target, dryRun: body.dryRun === true });
    })
    .route('GET', '/contexts', (ctx) => listContexts({ session: session(ctx) }))
    .route('GET', '/contexts/:owner', (ctx) => {
      const owner = ctx.params.owner!;
      const view = showContext(owner, { session: session(ctx) });
      return { ...view, kernel: daemon.holds.kernelIova(owner, view.context.iovaRanges) };
    })
    .route('POST', '/contexts/:owner/attach', (ctx) => {
      const { target, body } = requireTarget(ctx.body);
      return assign(ctx, target, ctx.params.owner!, { force: body.force });
    })
    .route('POST', '/contexts/:owner/detach', (ctx) => {
      const { target } = requireTarget(ctx.body);
      return release(ctx, { target, owner: ctx.params.owner! });
    })
    .route('POST', '/contexts/:owner/merge', (ctx) => {
      const body = requireBody(ctx.body ?? {});
      if (typeof body.into !== 'string') throw new IsogroupError('E_USAGE', 'merge needs "into": the owner whose context receives the groups', {});
      const into = body.into;
      return daemon.serialize(async () => {
        const view = mergeOwnerContexts(ctx.params.owner!, into, { session: session(ctx) });
        daemon.followOwners();
        daemon.hub.publish('merge', { from: ctx.params.owner, into });
        return { ...view, kernel: daemon.holds.kernelIova(into, view.context.iovaRanges) };
      });
    })
    .route('POST', '/contexts/:owner/destroy', (ctx) => {
      const body = requireBody(ctx.body ?? {});
      const owner = ctx.params.owner!;
      return daemon.serialize(async () => {
        const r = await runDestroyContext(session(ctx), owner, body.force === true, daemon.pipeline());
        daemon.hub.publish('destroy', { owner, released: r.released });
        return r;
      });
    })
    .route('POST', '/contexts/:owner/handoff', (ctx) => {
      const { target } = requireTarget(ctx.body);
      const owner = ctx.params.owner!;
      requireSelfOrRoot(subjectOf(daemon, ctx), owner, 'take the device node of a group of');
      const t = parseTarget(target);
      if (!('groupId' in t)) throw new IsogroupError('E_USAGE', 'handoff takes a group number', {});
      return { group: t.groupId, ...daemon.handoff(t.groupId, owner) };
    })
    .fdRoute('POST', '/contexts/:owner/fds', (ctx) => {
      const owner = ctx.params.owner!;
      const subject = subjectOf(daemon, ctx);
      requireSelfOrRoot(subject, owner, 'receive the file descriptors of the context of');
      const snap = scanHost(daemon.port, { pciIds: null });
      const c = contextOf(contextTableOf(daemon.stateDir, snap), owner);
      if (!c) throw new IsogroupError('E_NOT_FOUND', `${owner} has no context`, { owner });
      const devices = c.devices.map((d) => snap.devices.get(d.bdf)).filter((d): d is NonNullable<typeof d> => d !== undefined);
      const { decision } = decideAndAudit(daemon.audit, daemon.policy, subject, { action: 'fd-handoff', owner, context: c.id, devices });
      if (!decision.allowed)
        throw new IsogroupError('E_POLICY_DENIED', `policy denies ${subject.name} the devices of ${owner}'s context: ${decision.reason}`, {
          owner,
          subject: subject.name,
        });
      const { container, groups } = daemon.holds.handlesOf(owner);
      const ids = groups.map(([id]) => id);
      daemon.hub.publish('fd-handoff', { owner, to: subject.name, groups: ids });
      const body = { owner, context: c.id, order: ['container', ...ids.map((g) => `group ${g}`)], devices: c.devices };
      if (container.fd !== null) return { fds: [container.fd, ...groups.map(([, g]) => g.fd!)], body };
      // Fixture kernel: its handles have no kernel fd; pass the device nodes of the fixture root instead.
      const temp = [fs.openSync(path.join(daemon.root, VFIO_CONTAINER), 'r'), ...ids.map((g) => fs.openSync(path.join(daemon.root, vfioGroup(g)), 'r'))];
      // The kernel duplicates the fds into the peer; our temporary ones close once the hand-off is over.
      return {
        fds: temp,
        body,
        release: () => {
          for (const fd of temp) fs.closeSync(fd);
        },
      };
    })
    .route('POST', '/recover', (ctx) =>
      daemon.serialize(async () => {
        const r = await runRecover(session(ctx), daemon.pipeline());
        daemon.schedule('recover');
        return r;
      }),
    )
    .route('POST', '/rescan', async () => {
      daemon.schedule('request');
      await daemon.idle();
      return daemon.status();
    })
    .route('GET', '/events', daemon.hub.handler());
};
