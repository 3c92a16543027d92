// Kubernetes resource names for pool groups. By default a group is offered under
// `isogroup.io/VVVV_DDDD`, the vendor:device of its first endpoint (bridges aside); a resources file
// names resources by the policy's selector syntax instead, and a group then goes to the first resource
// whose selector matches one of its endpoints. A group is never offered under two names: the kubelet
// would hand it out twice.

import { z } from 'zod';
import { IsogroupError } from '../errors.js';
import { formatIssuePath, type PolicySelector, selectorMatches, selectorSchema } from '../groups/policy.js';
import type { PciDevice } from '../model/device.js';

/** The domain of every resource name isogroup makes up, and of its CDI kind. */
export const RESOURCE_DOMAIN = 'isogroup.io';
/** The CDI kind: one device per pool group, named by its group number. */
export const CDI_KIND = `${RESOURCE_DOMAIN}/group`;
/** KubeVirt reads the addresses of a resource's devices from PCI_RESOURCE_<NAME>. */
export const PCI_RESOURCE_PREFIX = 'PCI_RESOURCE';

// The kubelet's rule for extended resource names: a DNS subdomain, '/', a qualified name (63 chars).
const DOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const NAME = /^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** Why a resource name is not one the kubelet takes, or null. */
export const resourceNameProblem = (name: string): string | null => {
  const slash = name.indexOf('/');
  if (slash < 0 || name.indexOf('/', slash + 1) >= 0) return 'expected DOMAIN/NAME (one "/")';
  const domain = name.slice(0, slash);
  if (!DOMAIN.test(domain)) return `domain ${JSON.stringify(domain)} is not a DNS subdomain (lower case letters, digits, "-" and ".")`;
  if (domain === 'kubernetes.io' || domain.endsWith('.kubernetes.io')) return 'the kubernetes.io domain is reserved';
  if (!NAME.test(name.slice(slash + 1))) return 'the name after "/" must be 1-63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit';
  return null;
};

/** The environment variable KubeVirt reads a resource's PCI addresses from. */
export const pciResourceEnv = (resource: string): string => `${PCI_RESOURCE_PREFIX}_${resource.toUpperCase().replace(/[/.]/g, '_')}`;

/** The default resource of a group: the vendor:device of its first endpoint, lower-case hex. */
export const defaultResourceName = (endpoint: Pick<PciDevice, 'vendor' | 'device'>): string => {
  const hex = (h: string): string => h.toLowerCase().replace(/^0x/, '').padStart(4, '0');
  return `${RESOURCE_DOMAIN}/${hex(endpoint.vendor)}_${hex(endpoint.device)}`;
};

export interface ResourceRule {
  /** The full resource name (DOMAIN/NAME). */
  name: string;
  selector: PolicySelector;
}

export interface ResourceRules {
  rules: ResourceRule[];
  /** Where they came from, for messages. */
  source: string;
}

const ruleSchema = z.strictObject({
  name: z
    .string()
    .min(1, 'expected a resource name')
    .transform((n) => (n.includes('/') ? n : `${RESOURCE_DOMAIN}/${n}`))
    .superRefine((n, ctx) => {
      const problem = resourceNameProblem(n);
      if (problem) ctx.addIssue({ code: 'custom', message: `${n}: ${problem}` });
    }),
  selector: selectorSchema,
  comment: z.string().optional(),
});

const fileSchema = z
  .strictObject({
    version: z.literal(1, { message: 'expected 1' }).optional(),
    resources: z.array(ruleSchema).min(1, 'expected at least one resource'),
  })
  .superRefine((f, ctx) => {
    const seen = new Set<string>();
    f.resources.forEach((r, i) => {
      if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: ['resources', i, 'name'], message: `${r.name} is named twice` });
      seen.add(r.name);
    });
  });

/** Validate a parsed resources file; E_INVALID_INPUT lists every problem with its field path. */
export const parseResourceRules = (value: unknown, source: string): ResourceRules => {
  const r = fileSchema.safeParse(value);
  if (!r.success) {
    const issues = r.error.issues.map((i) => ({ path: formatIssuePath(i.path) || '(top level)', message: i.message }));
    throw new IsogroupError('E_INVALID_INPUT', `${source}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { source, issues });
  }
  return { source, rules: r.data.resources.map((x) => ({ name: x.name, selector: x.selector })) };
};

/** The resource a group is offered under, from its endpoints (BDF order): null when none applies. */
export const resourceOf = (rules: ResourceRules | null, endpoints: readonly PciDevice[]): string | null => {
  if (endpoints.length === 0) return null;
  if (rules === null) return defaultResourceName(endpoints[0]!);
  for (const r of rules.rules) if (endpoints.some((d) => selectorMatches(r.selector, d))) return r.name;
  return null;
};

/** Whether a group still has a device of the resource it is offered under (a hot-remove can take it away). */
export const resourceMatches = (rules: ResourceRules | null, resource: string, endpoints: readonly PciDevice[]): boolean => {
  if (rules === null) return endpoints.some((d) => defaultResourceName(d) === resource);
  const rule = rules.rules.find((r) => r.name === resource);
  return rule !== undefined && endpoints.some((d) => selectorMatches(rule.selector, d));
};
