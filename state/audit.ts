// Append-only JSONL audit trail in the state directory: one line per decision (allowed or denied),
// saying who, what, why and when. Each line is one write(2) on an O_APPEND descriptor, so lines from
// concurrent writers (daemon, CLI) never interleave, followed by fsync so a crash loses no decision
// that was acted on.

import fs from 'node:fs';
import * as path from 'node:path';
import { errnoOf, IsogroupError } from '../errors.js';
import { type DeviceFacts, evaluateGroup, type GroupDecision, type Policy } from '../groups/policy.js';
import type { Subject } from '../model/owner.js';
import { stateDirError, statStateDir } from './state-dir.js';

export const AUDIT_FILE = 'audit.jsonl';

export interface AuditRecord {
  /** ISO 8601 UTC. */
  time: string;
  /** What was asked: claim, assign, attach, detach, merge, destroy, handoff, release, reload-policy, ... */
  action: string;
  allowed: boolean;
  subject: { name: string; uid: number; gids: number[] } | null;
  /** What it was about. */
  target: { group?: string | null; devices?: string[]; owner?: string | null; context?: string | null };
  /** Deciding policy rule index, null for the default or a non-policy decision. */
  rule: number | null;
  reason: string;
  /** Per-device decisions, when a group was decided. */
  devices?: { bdf: string; allowed: boolean; rule: number | null; reason: string }[];
  /** Anything else worth keeping (policy source, peer pid, error code). */
  extra?: Record<string, unknown>;
}

export type AuditInput = Omit<AuditRecord, 'time'> & { time?: string };

// The log appends to a state directory that exists (a transaction prepared it); it never creates one.
const checkDir = (dir: string): void => {
  if (statStateDir(dir) === 'missing')
    throw new IsogroupError('E_STATE_DIR', `state directory ${dir}: cannot use it: ENOENT`, { stateDir: dir, errno: 'ENOENT' });
};

export class AuditLog {
  readonly file: string;
  private readonly now: () => Date;

  constructor(
    readonly stateDir: string,
    options: { file?: string; now?: () => Date } = {},
  ) {
    this.file = path.join(stateDir, options.file ?? AUDIT_FILE);
    this.now = options.now ?? (() => new Date());
  }

  /** Append one record as one line: a single write on an O_APPEND fd, then fsync. */
  append(input: AuditInput): AuditRecord {
    checkDir(this.stateDir);
    const record: AuditRecord = { ...input, time: input.time ?? this.now().toISOString() };
    const line = Buffer.from(`${JSON.stringify(record)}\n`, 'utf8');
    const created = !fs.existsSync(this.file);
    let fd: number;
    try {
      fd = fs.openSync(this.file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o640);
    } catch (error) {
      throw stateDirError(this.stateDir, `cannot open ${path.basename(this.file)}`, error);
    }
    try {
      const written = fs.writeSync(fd, line, 0, line.length);
      // A short write on a local file means the disk is full; a partial line must not pass silently.
      if (written !== line.length)
        throw new IsogroupError('E_STATE_DIR', `${this.file}: short write (${written} of ${line.length} bytes)`, { file: this.file });
      fs.fsyncSync(fd);
    } catch (error) {
      if (error instanceof IsogroupError) throw error;
      throw stateDirError(this.stateDir, `cannot append to ${path.basename(this.file)}`, error);
    } finally {
      fs.closeSync(fd);
    }
    if (created) syncDir(this.stateDir);
    return record;
  }

  /** Every record, in order; lines that do not parse (a torn tail after a crash) are reported, not fatal. */
  read(): { records: AuditRecord[]; problems: { line: number; message: string }[] } {
    return readAudit(this.file);
  }
}

const syncDir = (dir: string): void => {
  // Makes a newly created file's directory entry durable; not all filesystems allow it.
  try {
    const fd = fs.openSync(dir, fs.constants.O_RDONLY);
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    /* best effort */
  }
};

export const readAudit = (file: string): { records: AuditRecord[]; problems: { line: number; message: string }[] } => {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return { records: [], problems: [] };
    throw new IsogroupError('E_STATE_DIR', `cannot read ${file}: ${errnoOf(error) ?? String(error)}`, { file }, { cause: error });
  }
  const records: AuditRecord[] = [];
  const problems: { line: number; message: string }[] = [];
  text.split('\n').forEach((l, i) => {
    if (!l) return;
    try {
      const v = JSON.parse(l) as AuditRecord;
      if (typeof v !== 'object' || v === null || typeof v.time !== 'string' || typeof v.allowed !== 'boolean') throw new Error('not an audit record');
      records.push(v);
    } catch (error) {
      problems.push({ line: i + 1, message: (error as Error).message });
    }
  });
  return { records, problems };
};

/**
 * The one entry point for policy decisions: evaluate and, for a decision that is acted on (a log is
 * given), write the audit line before returning, so no decision escapes the trail. Throws
 * (E_STATE_DIR) when the line cannot be written, in which case the caller must not act on it. A null
 * log (a dry run) only evaluates.
 */
export const decideAndAudit = (
  log: AuditLog | null,
  policy: Policy,
  subject: Subject,
  request: {
    action: string;
    group?: string | null;
    owner?: string | null;
    context?: string | null;
    devices: readonly DeviceFacts[];
    extra?: Record<string, unknown>;
  },
): { decision: GroupDecision; record: AuditRecord | null } => {
  const decision = evaluateGroup(policy, subject, request.devices);
  if (log === null) return { decision, record: null };
  const record = log.append({
    action: request.action,
    allowed: decision.allowed,
    subject: { name: subject.name, uid: subject.uid, gids: [...subject.gids] },
    target: { group: request.group ?? null, devices: request.devices.map((d) => d.bdf), owner: request.owner ?? null, context: request.context ?? null },
    rule: decision.rule,
    reason: decision.reason,
    devices: decision.devices.map((d) => ({ bdf: d.bdf, allowed: d.allowed, rule: d.rule, reason: d.reason })),
    extra: { policy: policy.source, effect: decision.effect, ...(request.extra ?? {}) },
  });
  return { decision, record };
};

/**
 * Audit a decision that is not a policy evaluation (a context attach/detach/merge/destroy, an
 * assign refused by an invariant): allowed when `result.ok`, else denied with the error's code and
 * message as the reason.
 */
export const auditResult = (
  log: AuditLog,
  request: {
    action: string;
    subject: Subject | null;
    group?: string | null;
    devices?: string[];
    owner?: string | null;
    context?: string | null;
    reason?: string;
  },
  result: { ok: true } | { ok: false; error: { code: string; message: string } },
): AuditRecord =>
  log.append({
    action: request.action,
    allowed: result.ok,
    subject: request.subject ? { name: request.subject.name, uid: request.subject.uid, gids: [...request.subject.gids] } : null,
    target: { group: request.group ?? null, devices: request.devices ?? [], owner: request.owner ?? null, context: request.context ?? null },
    rule: null,
    reason: result.ok ? (request.reason ?? `${request.action} done`) : `${result.error.code}: ${result.error.message}`,
    ...(result.ok ? {} : { extra: { code: result.error.code } }),
  });
