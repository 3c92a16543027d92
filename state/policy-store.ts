// The policy file (JSON or YAML) and its reloads. A reload that finds a malformed file rejects it
// and keeps the policy in force, returning the error: a typo must never open or close the host.

import fs from 'node:fs';
import * as path from 'node:path';
import { parseDocument } from 'yaml';
import { errnoOf, IsogroupError } from '../errors.js';
import { defaultPolicy, type Policy, parsePolicy } from '../groups/policy.js';
import type { AuditLog } from './audit.js';

const MAX_POLICY_BYTES = 1 << 20;

/** Parse policy text; `.json` files as strict JSON, anything else as YAML (a superset of JSON). */
export const parsePolicyText = (text: string, source: string): Policy => {
  let value: unknown;
  if (source.toLowerCase().endsWith('.json')) {
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new IsogroupError(
        'E_POLICY_INVALID',
        `${source}: not JSON (${(error as Error).message})`,
        { source, issues: [{ path: '(file)', message: (error as Error).message }] },
        { cause: error },
      );
    }
  } else {
    const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length > 0) {
      const issues = doc.errors.map((e) => ({
        path: e.linePos ? `line ${e.linePos[0].line} col ${e.linePos[0].col}` : '(file)',
        message: e.message.split('\n')[0]!,
      }));
      throw new IsogroupError('E_POLICY_INVALID', `${source}: not valid YAML: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { source, issues });
    }
    value = doc.toJS();
  }
  // An empty file is an empty policy (root only), not an error.
  if (value === null || value === undefined) value = {};
  return parsePolicy(value, source);
};

/** Read and validate a policy file. E_POLICY_INVALID for a missing, unreadable or malformed one. */
export const loadPolicyFile = (file: string): Policy => {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (error) {
    throw new IsogroupError(
      'E_POLICY_INVALID',
      `policy file ${file}: ${errnoOf(error) === 'ENOENT' ? 'does not exist' : `cannot read it (${errnoOf(error) ?? String(error)})`}`,
      { source: file, errno: errnoOf(error) },
      { cause: error },
    );
  }
  if (!st.isFile()) throw new IsogroupError('E_POLICY_INVALID', `policy file ${file} is not a regular file`, { source: file });
  if (st.size > MAX_POLICY_BYTES) throw new IsogroupError('E_POLICY_INVALID', `policy file ${file} is larger than ${MAX_POLICY_BYTES} bytes`, { source: file });
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new IsogroupError('E_POLICY_INVALID', `policy file ${file}: cannot read it (${errnoOf(error) ?? String(error)})`, { source: file }, { cause: error });
  }
  return parsePolicyText(text, file);
};

export type ReloadResult = { ok: true; policy: Policy } | { ok: false; error: IsogroupError; policy: Policy };

/** The policy in force, and reloads that keep it when the new file is bad. */
export class PolicyStore {
  private current: Policy;

  private constructor(
    readonly file: string | null,
    initial: Policy,
  ) {
    this.current = initial;
  }

  /**
   * Open the store. With no file, or (missingOk, the default) a file that does not exist yet, the
   * default policy is in force: root only. A malformed file at start is an error (nothing to keep).
   */
  static open(file: string | null, options: { missingOk?: boolean } = {}): PolicyStore {
    if (file === null) return new PolicyStore(null, defaultPolicy());
    const abs = path.resolve(file);
    if ((options.missingOk ?? true) && !fs.existsSync(abs)) return new PolicyStore(abs, defaultPolicy(`${abs} (missing: default policy)`));
    return new PolicyStore(abs, loadPolicyFile(abs));
  }

  get policy(): Policy {
    return this.current;
  }

  /**
   * Read the file again. A malformed, unreadable or vanished file is rejected: the old policy stays
   * in force and the error is returned (and audited when a log is given).
   */
  reload(options: { audit?: AuditLog } = {}): ReloadResult {
    if (this.file === null) return { ok: true, policy: this.current };
    let result: ReloadResult;
    try {
      this.current = loadPolicyFile(this.file);
      result = { ok: true, policy: this.current };
    } catch (error) {
      const e =
        error instanceof IsogroupError
          ? error
          : new IsogroupError('E_POLICY_INVALID', `policy file ${this.file}: ${String(error)}`, { source: this.file }, { cause: error });
      result = { ok: false, error: e, policy: this.current };
    }
    options.audit?.append({
      action: 'reload-policy',
      allowed: result.ok,
      subject: null,
      target: {},
      rule: null,
      reason: result.ok
        ? `policy ${this.file} loaded (${result.policy.rules.length} rule(s))`
        : `policy ${this.file} rejected, previous policy kept: ${result.error.message}`,
      extra: { source: this.file, rules: result.policy.rules.length },
    });
    return result;
  }
}
