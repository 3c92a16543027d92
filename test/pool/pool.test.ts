import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { generateCdi, readPool } from '../../api/kubernetes.js';
import { scan } from '../../api/read.js';
import { runCli } from '../../cli/main.js';
import { IsogroupError } from '../../errors.js';
import type { Bdf } from '../../model/bdf.js';
import { containerAllocation, resourceAddresses } from '../../pool/allocation.js';
import { CDI_VERSION, cdiSpec } from '../../pool/cdi.js';
import { buildPool, type PoolDevice } from '../../pool/devices.js';
import { preferredAllocation } from '../../pool/preferred.js';
import { parseResourceRules, pciResourceEnv, resourceNameProblem } from '../../pool/resources.js';
import { pristineRoot, simCopy } from '../helpers/sim-root.js';

// The pool as pure data, on the real kernel's capture with groups 19, 22 and 23 on vfio-pci.
const snap = () => scan({ root: pristineRoot('mixed-vfio'), pciIds: null });
const members = (id: string) => snap().kernelGroups.get(id)!.devices;
const ALL = new Set(['19', '22', '23']);

const schemaDir = fileURLToPath(new URL('../fixtures/cdi-schema/', import.meta.url));
const validator = () => {
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addSchema(JSON.parse(fs.readFileSync(path.join(schemaDir, 'defs.json'), 'utf8')), 'defs.json');
  return ajv.compile(JSON.parse(fs.readFileSync(path.join(schemaDir, 'schema.json'), 'utf8')));
};

describe('resource names', () => {
  it("KubeVirt's PCI_RESOURCE_ variable: upper case, '.' and '/' as '_'", () => {
    expect(pciResourceEnv('isogroup.io/8086_10d3')).toBe('PCI_RESOURCE_ISOGROUP_IO_8086_10D3');
    expect(pciResourceEnv('example.com/gpu-a.b')).toBe('PCI_RESOURCE_EXAMPLE_COM_GPU-A_B');
  });

  it('takes only names the kubelet takes', () => {
    expect(resourceNameProblem('isogroup.io/8086_10d3')).toBeNull();
    expect(resourceNameProblem('nic')).toMatch(/DOMAIN\/NAME/);
    expect(resourceNameProblem('kubernetes.io/nic')).toMatch(/reserved/);
    expect(resourceNameProblem('Example.com/nic')).toMatch(/DNS subdomain/);
    expect(resourceNameProblem('example.com/-nic')).toMatch(/letter or digit/);
    expect(resourceNameProblem(`example.com/${'a'.repeat(64)}`)).toMatch(/1-63/);
  });

  it('a resources file: bare names get isogroup.io/, selectors are the policy selectors, every problem has its path', () => {
    const r = parseResourceRules(
      {
        resources: [
          { name: 'nic', selector: { class: '02' } },
          { name: 'example.com/gpu', selector: { id: '10de:2204' } },
        ],
      },
      'f',
    );
    expect(r.rules.map((x) => x.name)).toEqual(['isogroup.io/nic', 'example.com/gpu']);
    const bad = () =>
      parseResourceRules(
        {
          resources: [
            { name: 'nic', selector: { class: '02' } },
            { name: 'isogroup.io/nic', selector: { vendor: '80' } },
            { name: 'kubernetes.io/x', selector: { all: true } },
          ],
        },
        'f.yaml',
      );
    expect(bad).toThrow(IsogroupError);
    expect(bad).toThrow(/resources\[1\]\.selector\.vendor: expected 4 hex digits/);
    expect(bad).toThrow(/resources\[2\]\.name: kubernetes\.io\/x: the kubernetes\.io domain is reserved/);
    expect(bad).toThrow(/resources\[1\]\.name: isogroup\.io\/nic is named twice/);
    expect(() => parseResourceRules({ resources: [] }, 'f')).toThrow(/at least one resource/);
  });
});

describe('the pool as kubelet devices', () => {
  const pool = (protectedGroups: ReadonlySet<string> | null = ALL) =>
    buildPool({ snap: snap(), groups: ['23', '22', '19'].map((id) => ({ groupId: id, members: members(id) })), protectedGroups, rules: null });

  it('one device per whole group, by group number, named by its first endpoint; bridges are members, never endpoints', () => {
    const p = pool();
    expect(p.map((d) => [d.id, d.resource, d.healthy])).toEqual([
      ['19', 'isogroup.io/8086_10d3', true],
      ['22', 'isogroup.io/8086_100e', true],
      ['23', 'isogroup.io/8086_10d3', true],
    ]);
    expect(p[1]).toMatchObject({
      members: ['0000:09:00.0', '0000:0a:01.0', '0000:0a:02.0', '0000:0a:03.0'],
      endpoints: ['0000:0a:01.0', '0000:0a:02.0', '0000:0a:03.0'],
    });
    expect(p.map((d) => d.rootPort)).toEqual(['0000:00:10.2', '0000:00:10.3', '0000:00:10.4']);
    // 6.1 has vfio-dev/ but no /dev/vfio/devices: no cdevs.
    expect(p.every((d) => d.cdevs.length === 0)).toBe(true);
  });

  it('Healthy only while held and viable; a group that lost its resource device or every member is Unhealthy', () => {
    expect(pool(new Set(['19', '23'])).find((d) => d.id === '22')).toMatchObject({ healthy: false, problems: [expect.stringMatching(/not held/)] });
    const s = snap();
    // A host driver inside 23.
    s.devices.set('0000:0b:00.1' as Bdf, { ...s.devices.get('0000:0b:00.1' as Bdf)!, driver: 'virtio-pci', vfioDriver: false });
    // 22 loses its e1000 (the device its resource names), 19 loses everything.
    s.devices.delete('0000:0a:01.0' as Bdf);
    for (const b of members('19')) s.devices.delete(b);
    const previous = new Map([
      ['22', 'isogroup.io/8086_100e'],
      ['19', 'isogroup.io/8086_10d3'],
    ]);
    const p = buildPool({
      snap: s,
      groups: ['19', '22', '23'].map((id) => ({ groupId: id, members: members(id) })),
      protectedGroups: ALL,
      rules: null,
      previous,
    });
    const byId = Object.fromEntries(p.map((d) => [d.id, d]));
    expect(byId['23']).toMatchObject({ healthy: false, problems: [expect.stringMatching(/0000:0b:00.1 is bound to host driver virtio-pci/)] });
    expect(byId['22']).toMatchObject({
      resource: 'isogroup.io/8086_100e',
      healthy: false,
      problems: [expect.stringMatching(/no longer has a device of isogroup.io\/8086_100e/)],
      notes: ['member(s) 0000:0a:01.0 removed'],
    });
    expect(byId['19']).toMatchObject({ resource: 'isogroup.io/8086_10d3', healthy: false, problems: [expect.stringMatching(/gone/)] });
  });

  it('a resources file offers a group under the first resource one of its endpoints matches, and a group matching none not at all', () => {
    const rules = parseResourceRules(
      {
        resources: [
          { name: 'realtek', selector: { vendor: '10ec' } },
          { name: 'intel', selector: { vendor: '8086' } },
        ],
      },
      'f',
    );
    const p = buildPool({ snap: snap(), groups: ['19', '22', '23'].map((id) => ({ groupId: id, members: members(id) })), protectedGroups: ALL, rules });
    // 22 holds an Intel e1000 and two Realtek functions: it goes to the first rule that matches, once.
    expect(p.map((d) => [d.id, d.resource])).toEqual([
      ['19', 'isogroup.io/intel'],
      ['22', 'isogroup.io/realtek'],
      ['23', 'isogroup.io/intel'],
    ]);
    const none = parseResourceRules({ resources: [{ name: 'gpu', selector: { class: '03' } }] }, 'f');
    expect(buildPool({ snap: snap(), groups: [{ groupId: '23', members: members('23') }], protectedGroups: ALL, rules: none })[0]!.resource).toBeNull();
  });

  it('Allocate: the VFIO container once, each group node, primaries first in PCI_RESOURCE_, CDI names', () => {
    const p = pool();
    const facts = { hostPath: (rel: string) => `/host/${rel}`, iommufd: true };
    const a = containerAllocation('isogroup.io/8086_10d3', [p[2]!, p[0]!], facts);
    expect(a.envs).toEqual({ PCI_RESOURCE_ISOGROUP_IO_8086_10D3: '0000:0b:00.0,0000:06:00.0,0000:0b:00.1,0000:0b:00.2' });
    expect(a.devices.map((d) => [d.containerPath, d.hostPath, d.permissions])).toEqual([
      ['/dev/vfio/vfio', '/host/dev/vfio/vfio', 'rw'],
      ['/dev/iommu', '/host/dev/iommu', 'rw'],
      ['/dev/vfio/23', '/host/dev/vfio/23', 'rw'],
      ['/dev/vfio/19', '/host/dev/vfio/19', 'rw'],
    ]);
    expect(a.cdiDevices).toEqual(['isogroup.io/group=23', 'isogroup.io/group=19']);
    const withCdev = { ...p[0]!, cdevs: ['vfio7'] };
    expect(containerAllocation('r/x', [withCdev], facts).devices.map((d) => d.containerPath)).toContain('/dev/vfio/devices/vfio7');
    expect(resourceAddresses([])).toEqual([]);
  });
});

describe('preferred allocation', () => {
  const dev = (id: string, numa: number[], rootPort: string | null): PoolDevice => ({
    id,
    resource: 'r/x',
    healthy: true,
    problems: [],
    notes: [],
    members: [],
    endpoints: [],
    numaNodes: numa,
    rootPort: rootPort as Bdf | null,
    cdevs: [],
  });
  const devices = new Map(
    [dev('1', [0], 'a'), dev('2', [0], 'a'), dev('3', [0], 'b'), dev('4', [1], 'c'), dev('5', [1], 'd'), dev('6', [], null)].map((d) => [d.id, d]),
  );
  const all = [...devices.keys()];

  it('one NUMA node (tightest that fits), then one root port, then must_include first', () => {
    expect(preferredAllocation(devices, { available: all, mustInclude: [], size: 1 })).toEqual(['6']); // the unknown-node one is the tightest fit
    expect(preferredAllocation(devices, { available: ['1', '2', '3', '4', '5'], mustInclude: [], size: 2 })).toEqual(['4', '5']);
    expect(preferredAllocation(devices, { available: ['1', '2', '3'], mustInclude: [], size: 2 })).toEqual(['1', '2']);
    expect(preferredAllocation(devices, { available: all, mustInclude: ['3'], size: 2 })).toEqual(['3', '1']);
    expect(preferredAllocation(devices, { available: all, mustInclude: ['4', '1'], size: 2 })).toEqual(['4', '1']);
    expect(preferredAllocation(devices, { available: ['1', '2', '3', '4', '5'], mustInclude: [], size: 5 })).toEqual(['1', '2', '3', '4', '5']);
  });

  it('refuses IDs it does not know and sizes it cannot meet', () => {
    expect(() => preferredAllocation(devices, { available: ['1', '9'], mustInclude: [], size: 1 })).toThrow(/unknown device ID\(s\) 9/);
    expect(() => preferredAllocation(devices, { available: ['1'], mustInclude: ['8'], size: 1 })).toThrow(/unknown/);
    expect(() => preferredAllocation(devices, { available: ['1', '2'], mustInclude: [], size: 3 })).toThrow(/cannot choose 3/);
  });
});

describe('the CDI spec', () => {
  it('validates against the CDI JSON schema, one device per pool group named by its number, with every node it needs', async () => {
    const sim = simCopy('mixed');
    const stateDir = path.join(path.dirname(sim.root), 'state');
    const { assignGroup } = await import('../../api/assign.js');
    await assignGroup('23', { root: sim.root, simulate: true, stateDir, owner: 'kubernetes' });
    await assignGroup('22', { root: sim.root, simulate: true, stateDir, owner: 'alice' });
    const r = generateCdi({ root: sim.root, simulate: true, stateDir });
    const validate = validator();
    expect(validate(r.spec), JSON.stringify(validate.errors)).toBe(true);
    expect(r.spec).toEqual({
      cdiVersion: CDI_VERSION,
      kind: 'isogroup.io/group',
      devices: [
        {
          name: '23',
          containerEdits: {
            deviceNodes: [
              { path: '/dev/vfio/vfio', hostPath: path.join(sim.root, 'dev/vfio/vfio'), permissions: 'rw' },
              { path: '/dev/vfio/23', hostPath: path.join(sim.root, 'dev/vfio/23'), permissions: 'rw' },
            ],
          },
        },
      ],
    });
    // The spec's own naming rules (SPEC.md): kind vendor/class, device names alphanumeric with _ . : -.
    expect(r.spec.kind).toMatch(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?\/[a-zA-Z0-9]([a-zA-Z0-9_.-]*[a-zA-Z0-9])?$/);
    for (const d of r.spec.devices) expect(d.name).toMatch(/^[a-zA-Z0-9]([a-zA-Z0-9_.:-]*[a-zA-Z0-9])?$/);
    // The schema catches a broken spec (the check can fail).
    expect(validate({ ...r.spec, devices: [{ name: '23' }] })).toBe(false);
    // On the live host the paths are the host's own: no hostPath.
    const live = cdiSpec(readPool({ root: sim.root, simulate: true, stateDir }).devices, { hostPath: (rel) => `/${rel}`, iommufd: false });
    expect(live.devices[0]!.containerEdits.deviceNodes).toEqual([
      { path: '/dev/vfio/vfio', permissions: 'rw' },
      { path: '/dev/vfio/23', permissions: 'rw' },
    ]);
    expect(validate(live)).toBe(true);
  });

  it('cdi generate: prints YAML, writes --out atomically, honours --kubelet-owner', async () => {
    const sim = simCopy('mixed');
    const { assignGroup } = await import('../../api/assign.js');
    await assignGroup('23', { root: sim.root, simulate: true, owner: 'kubernetes' });
    await assignGroup('22', { root: sim.root, simulate: true, owner: 'vms' });
    const cli = async (args: string[]) => {
      let stdout = '';
      let stderr = '';
      const code = await runCli(args, { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) });
      return { code, stdout, stderr };
    };
    const printed = await cli(['cdi', 'generate', '--root', sim.root, '--simulate']);
    expect(printed.code, printed.stderr).toBe(0);
    expect(printed.stdout).toMatch(/^kind: isogroup.io\/group$/m);
    expect(printed.stdout).toMatch(/^ {2}- name: "23"$/m);
    const out = path.join(path.dirname(sim.root), 'cdi', 'isogroup.io.yaml');
    fs.mkdirSync(path.dirname(out));
    const written = await cli(['cdi', 'generate', '--root', sim.root, '--simulate', '--kubelet-owner', 'vms', '--out', out, '--json']);
    expect(written.code, written.stderr).toBe(0);
    expect(JSON.parse(written.stdout)).toMatchObject({ file: out, owner: 'vms', devices: ['22'] });
    expect(fs.readFileSync(out, 'utf8')).toMatch(/name: "22"/);
    expect(fs.readdirSync(path.dirname(out))).toEqual(['isogroup.io.yaml']); // no temporary left behind
    const bad = await cli(['cdi', 'generate', '--root', sim.root, '--simulate', '--kubelet-owner', '../x']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/E_USAGE/);
  });
});
