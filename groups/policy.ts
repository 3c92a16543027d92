// Who may claim which devices. A policy is a list of allow/deny rules; each names owners (by user
// name, uid or gid) and a device selector (BDF, vendor:device, class, kernel group, IOMMU unit).
//
// Semantics: DENY-OVERRIDES, independent of rule order.
//  - a device is denied when any deny rule matches (subject and device); the reported rule is the
//    lowest-numbered matching deny;
//  - otherwise allowed when any allow rule matches (the lowest-numbered matching allow);
//  - otherwise the default: root (uid 0) is allowed, everyone else denied.
// Deny-overrides was chosen over first-match because adding an allow rule anywhere can never undo
// a deny an administrator wrote, and because reordering a file cannot change a decision. An
// explicit deny applies to root too.
// A group is allowed only when every one of its devices is (bridges included: they go with it).
//
// Pure: parsing validates a plain value (already read from JSON/YAML by the caller) with zod, and
// evaluation is data in, decision out.

import { z } from 'zod';
import { IsogroupError } from '../errors.js';
import { splitBdf } from '../model/bdf.js';
import { isOwnerName, OWNER_NAME_RULE, type Subject } from '../model/owner.js';

const HEX4 = /^(0x)?[0-9a-fA-F]{4}$/;
const CLASS = /^(0x)?([0-9a-fA-F]{2}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6})$/;
const HEX6 = /^(0x)?[0-9a-fA-F]{6}$/;

const bdfString = z.string().refine((s) => splitBdf(s) !== null, { message: 'expected a BDF DDDD:BB:DD.F (e.g. 0000:01:00.0)' });

const ownerSchema = z
  .strictObject({
    name: z.string().refine(isOwnerName, `expected a user name (${OWNER_NAME_RULE})`).optional(),
    uid: z.number().int('expected an integer uid').min(0, 'expected uid >= 0').optional(),
    gid: z.number().int('expected an integer gid').min(0, 'expected gid >= 0').optional(),
    any: z.literal(true, { message: 'expected true' }).optional(),
  })
  .refine((o) => [o.name, o.uid, o.gid, o.any].filter((v) => v !== undefined).length === 1, {
    message: 'expected exactly one of name, uid, gid, any',
  });

export const selectorSchema = z
  .strictObject({
    all: z.literal(true, { message: 'expected true' }).optional(),
    bdf: z.union([bdfString, z.array(bdfString).min(1, 'expected at least one BDF')]).optional(),
    vendor: z.string().regex(HEX4, 'expected 4 hex digits').optional(),
    device: z.string().regex(HEX4, 'expected 4 hex digits').optional(),
    id: z
      .string()
      .regex(/^(0x)?[0-9a-fA-F]{4}:(0x)?[0-9a-fA-F]{4}$/, 'expected vendor:device, 4 hex digits each')
      .optional(),
    class: z.string().regex(CLASS, 'expected 2, 4 or 6 hex digits (class, class+subclass, or class+subclass+prog-if)').optional(),
    classMask: z.string().regex(HEX6, 'expected 6 hex digits').optional(),
    group: z.union([z.string().regex(/^[0-9]+$/, 'expected a group number'), z.number().int().min(0)]).optional(),
    iommu: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'expected an IOMMU unit name (e.g. dmar0)')
      .optional(),
  })
  .superRefine((s, ctx) => {
    const fields = Object.entries(s).filter(([k, v]) => v !== undefined && k !== 'classMask');
    if (fields.length === 0) ctx.addIssue({ code: 'custom', message: 'expected at least one of all, bdf, vendor, device, id, class, group, iommu' });
    if (s.all && fields.length > 1) ctx.addIssue({ code: 'custom', path: ['all'], message: 'all: true cannot be combined with other fields' });
    if (s.classMask !== undefined && (s.class === undefined || s.class.replace(/^0x/, '').length !== 6)) {
      ctx.addIssue({ code: 'custom', path: ['classMask'], message: 'classMask needs a 6-digit class' });
    }
  });

const bodySchema = z.strictObject({
  owners: z.array(ownerSchema).min(1, 'expected at least one owner'),
  selector: selectorSchema,
  reason: z.string().max(500).optional(),
});

const ruleSchema = z
  .strictObject({
    allow: bodySchema.optional(),
    deny: bodySchema.optional(),
    comment: z.string().optional(),
  })
  .refine((r) => (r.allow === undefined) !== (r.deny === undefined), { message: 'expected exactly one of allow, deny' });

export const policySchema = z.strictObject({
  version: z.literal(1, { message: 'expected 1' }).optional(),
  rules: z.array(ruleSchema).default([]),
});

export type PolicyOwner = z.infer<typeof ownerSchema>;
export type PolicySelector = z.infer<typeof selectorSchema>;

export interface PolicyRule {
  effect: 'allow' | 'deny';
  owners: PolicyOwner[];
  selector: PolicySelector;
  reason?: string;
  comment?: string;
}

export interface Policy {
  version: 1;
  rules: PolicyRule[];
  /** Where it came from (a file path, "default", ...), for messages only. */
  source: string;
}

/** The policy in force when there is no policy file: root only. */
export const defaultPolicy = (source = 'default'): Policy => ({ version: 1, rules: [], source });

/** zod path -> `rules[2].allow.selector.vendor`. */
export const formatIssuePath = (path: readonly PropertyKey[]): string =>
  path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${String(p)}` : String(p)), '');

export interface PolicyIssue {
  path: string;
  message: string;
}

/** Validate a parsed value as a policy; E_POLICY_INVALID lists every problem with its field path. */
export const parsePolicy = (value: unknown, source = 'policy'): Policy => {
  const result = policySchema.safeParse(value);
  if (!result.success) {
    const issues: PolicyIssue[] = result.error.issues.map((i) => ({ path: formatIssuePath(i.path) || '(top level)', message: i.message }));
    throw new IsogroupError('E_POLICY_INVALID', `${source}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { source, issues });
  }
  return {
    version: 1,
    source,
    rules: result.data.rules.map((r) => {
      const effect = r.allow ? 'allow' : 'deny';
      const body = (r.allow ?? r.deny)!;
      return {
        effect,
        owners: body.owners,
        selector: body.selector,
        ...(body.reason !== undefined ? { reason: body.reason } : {}),
        ...(r.comment !== undefined ? { comment: r.comment } : {}),
      } satisfies PolicyRule;
    }),
  };
};

// --- evaluation --------------------------------------------------------------------------------

/** What a selector can look at; a PciDevice has all of these. */
export interface DeviceFacts {
  bdf: string;
  vendor: string;
  device: string;
  class: string;
  kernelGroup: string | null;
  iommu: string | null;
}

export interface Decision {
  allowed: boolean;
  /** Index of the deciding rule in the policy, null for the default. */
  rule: number | null;
  effect: 'allow' | 'deny' | 'default-allow' | 'default-deny';
  reason: string;
}

export interface DeviceDecision extends Decision {
  bdf: string;
}

export interface GroupDecision extends Decision {
  devices: DeviceDecision[];
}

const norm = (hexText: string): string => hexText.toLowerCase().replace(/^0x/, '');

export const ownerMatches = (o: PolicyOwner, s: Subject): boolean =>
  o.any === true || (o.name !== undefined && o.name === s.name) || (o.uid !== undefined && o.uid === s.uid) || (o.gid !== undefined && s.gids.includes(o.gid));

const classMatches = (sel: PolicySelector, deviceClass: string): boolean => {
  const want = norm(sel.class!);
  const have = norm(deviceClass).padStart(6, '0');
  if (want.length < 6) return have.startsWith(want);
  const mask = sel.classMask === undefined ? 0xffffff : parseInt(norm(sel.classMask), 16);
  return (parseInt(have, 16) & mask) === (parseInt(want, 16) & mask);
};

/** Every field given must match (AND); an `all: true` selector matches every device. */
export const selectorMatches = (sel: PolicySelector, d: DeviceFacts): boolean => {
  if (sel.all) return true;
  if (sel.bdf !== undefined) {
    const list = (Array.isArray(sel.bdf) ? sel.bdf : [sel.bdf]).map((b) => b.toLowerCase());
    if (!list.includes(d.bdf.toLowerCase())) return false;
  }
  if (sel.vendor !== undefined && norm(sel.vendor) !== norm(d.vendor)) return false;
  if (sel.device !== undefined && norm(sel.device) !== norm(d.device)) return false;
  if (sel.id !== undefined) {
    const [v, dv] = sel.id.split(':') as [string, string];
    if (norm(v) !== norm(d.vendor) || norm(dv) !== norm(d.device)) return false;
  }
  if (sel.class !== undefined && !classMatches(sel, d.class)) return false;
  if (sel.group !== undefined && String(sel.group) !== d.kernelGroup) return false;
  if (sel.iommu !== undefined && sel.iommu !== d.iommu) return false;
  return true;
};

const who = (s: Subject): string => `${s.name} (uid ${s.uid})`;
const ruleText = (r: PolicyRule, i: number): string => `rule ${i} (${r.effect}${r.reason ? `: ${r.reason}` : r.comment ? `: ${r.comment}` : ''})`;

/** The decision for one device. */
export const evaluateDevice = (policy: Policy, subject: Subject, device: DeviceFacts): DeviceDecision => {
  let allowAt: number | null = null;
  for (let i = 0; i < policy.rules.length; i++) {
    const r = policy.rules[i]!;
    if (!r.owners.some((o) => ownerMatches(o, subject)) || !selectorMatches(r.selector, device)) continue;
    if (r.effect === 'deny') {
      return { bdf: device.bdf, allowed: false, rule: i, effect: 'deny', reason: `${ruleText(r, i)} denies ${who(subject)} device ${device.bdf}` };
    }
    if (allowAt === null) allowAt = i;
  }
  if (allowAt !== null) {
    const r = policy.rules[allowAt]!;
    return { bdf: device.bdf, allowed: true, rule: allowAt, effect: 'allow', reason: `${ruleText(r, allowAt)} allows ${who(subject)} device ${device.bdf}` };
  }
  if (subject.uid === 0)
    return { bdf: device.bdf, allowed: true, rule: null, effect: 'default-allow', reason: `no rule matches; root may claim any device (${device.bdf})` };
  return { bdf: device.bdf, allowed: false, rule: null, effect: 'default-deny', reason: `no rule allows ${who(subject)} device ${device.bdf} (default deny)` };
};

/** A whole group: allowed only when every device is; otherwise the first refused device decides. */
export const evaluateGroup = (policy: Policy, subject: Subject, devices: readonly DeviceFacts[]): GroupDecision => {
  if (devices.length === 0) {
    return { allowed: false, rule: null, effect: 'default-deny', reason: 'the group has no devices to decide on', devices: [] };
  }
  const each = devices.map((d) => evaluateDevice(policy, subject, d));
  const refused = each.find((d) => !d.allowed);
  if (refused) {
    const n = each.filter((d) => !d.allowed).length;
    return {
      allowed: false,
      rule: refused.rule,
      effect: refused.effect,
      reason: `${refused.reason}${n > 1 ? ` (and ${n - 1} more device(s) refused)` : ''}; a group is allowed only when every device is`,
      devices: each,
    };
  }
  const first = each[0]!;
  const rules = [...new Set(each.map((d) => d.rule))];
  return {
    allowed: true,
    rule: first.rule,
    effect: first.effect,
    reason:
      rules.length === 1
        ? `${first.reason}${each.length > 1 ? ` and the other ${each.length - 1} device(s) of the group` : ''}`
        : `every device allowed (rules ${rules.map((r) => (r === null ? 'default' : r)).join(', ')})`,
    devices: each,
  };
};
