import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tar from 'tar';
import { describe, expect, it } from 'vitest';
import { importLspci } from '../../api/capture.js';
import { compareGroups, deriveForHost, listGroups } from '../../api/groups.js';
import { scan } from '../../api/read.js';
import { oracleCaptures, sharedDir } from '../helpers/paths.js';
import { tmpDir } from '../helpers/tmp.js';

// Acceptance: derived groups equal the real kernel's, by members, on every capture the oracle
// produced and on every real machine whose kernel groups are known.

describe.each(oracleCaptures())('oracle capture $name', ({ tarball, groupsJson }) => {
  it("derived groups equal the kernel's", () => {
    const expected = JSON.parse(fs.readFileSync(groupsJson, 'utf8')) as { group_count: number; groups: Record<string, string[]> };
    const r = compareGroups({ root: tarball, pciIds: null });
    expect(r.mismatches).toEqual([]);
    expect(r.onlyDerived).toEqual([]);
    expect(r.onlyKernel).toEqual([]);
    expect(r.cannotDerive).toEqual([]);
    expect(r.agree).toBe(true);
    expect(r.kernelGroups).toBe(expected.group_count);
    expect(r.derivedGroups).toBe(expected.group_count);
    expect(r.kernelRelease).toMatch(/^6\.1\./);
  });

  it('lists derived groups whose members match groups.json exactly', () => {
    const expected = JSON.parse(fs.readFileSync(groupsJson, 'utf8')) as { groups: Record<string, string[]> };
    const derived = listGroups({ root: tarball, pciIds: null, source: 'derived' });
    const norm = (gs: string[][]) => gs.map((g) => [...g].sort().join(' ')).sort();
    expect(norm(derived.groups.map((g) => g.devices))).toEqual(norm(Object.values(expected.groups)));
  });
});

const realdata = path.join(sharedDir(), 'realdata');
const machines = fs
  .readdirSync(realdata)
  .filter(
    (m) => fs.existsSync(path.join(realdata, m, 'iommu_groups.tsv')) && fs.readdirSync(path.join(realdata, m)).some((f) => /^lspci-nnDvvvx+\.txt$/.test(f)),
  )
  .filter((m) =>
    fs
      .readFileSync(path.join(realdata, m, 'iommu_groups.tsv'), 'utf8')
      .split('\n')
      .some((l) => /^\d+\t/.test(l)),
  );

const importMachine = (m: string): string => {
  const dir = path.join(realdata, m);
  const dump = fs.readdirSync(dir).find((f) => /^lspci-nnDvvvx+\.txt$/.test(f))!;
  const root = path.join(tmpDir(), 'root');
  importLspci(path.join(dir, dump), root);
  // The dump does not carry the kernel release; machine.json has the report's uname (quirk tables follow it).
  const machine = JSON.parse(fs.readFileSync(path.join(dir, 'machine.json'), 'utf8')) as { uname: string };
  fs.mkdirSync(path.join(root, 'meta'), { recursive: true });
  fs.writeFileSync(path.join(root, 'meta', 'uname'), `${machine.uname}\n`);
  return root;
};

describe('real machines with kernel groups', () => {
  it('covers the machines the acceptance names', () => {
    for (const m of [
      'gigabyte-x570-aorus-master',
      'asus-proart-x670e-creator',
      'asus-rog-strix-z890-a',
      'asus-tuf-fx505dt',
      'lambda-wrx80e-sage-cis-a6000',
      'lambda-wrx80e-sage-lambda4090',
    ]) {
      expect(machines).toContain(`nvbugreport-${m}`);
    }
  });

  it.each(machines)("%s: derived groups equal the kernel's", (m) => {
    const root = importMachine(m);
    const tsv = fs
      .readFileSync(path.join(realdata, m, 'iommu_groups.tsv'), 'utf8')
      .split('\n')
      .filter((l) => /^\d+\t/.test(l));
    const r = compareGroups({ root, pciIds: null });
    expect(r.mismatches).toEqual([]);
    expect(r.onlyDerived).toEqual([]);
    expect(r.onlyKernel).toEqual([]);
    expect(r.cannotDerive).toEqual([]);
    expect(r.agree).toBe(true);
    expect(r.kernelGroups).toBe(new Set(tsv.map((l) => l.split('\t')[0])).size);

    // Prediction without the kernel's answer: hide the kernel groups and derive again (which
    // devices the IOMMU skips is then assumed, not read): same partition as iommu_groups.tsv.
    const snap = scan({ root, pciIds: null });
    snap.kernelGroups = new Map();
    snap.iommuUnits = new Map();
    for (const d of snap.devices.values()) d.kernelGroup = null;
    const blind = deriveForHost(snap, null, { kernelRelease: r.kernelRelease ?? undefined });
    const byGroup = new Map<string, string[]>();
    for (const l of tsv) {
      const [g, bdf] = l.split('\t');
      byGroup.set(g!, [...(byGroup.get(g!) ?? []), bdf!]);
    }
    const norm = (gs: string[][]) => gs.map((g) => [...g].sort().join(' ')).sort();
    expect(norm(blind.derived.groups.map((g) => g.devices))).toEqual(norm([...byGroup.values()]));
  });

  it('ThinkPad X1 Carbon (ghw, no config space): the tool says it cannot be derived', () => {
    const dir = path.join(realdata, 'ghw-lenovo-thinkpad-x1-carbon-gen10');
    const root = tmpDir();
    tar.x({ file: path.join(dir, fs.readdirSync(dir).find((f) => f.endsWith('.tar.gz'))!), cwd: root, sync: true });
    const r = compareGroups({ root, pciIds: null });
    expect(r.derivable).toBe(false);
    expect(r.agree).toBe(false);
    expect(r.cannotDerive[0]).toMatch(/^cannot be derived from this input: 23 of 23 devices have no usable config space/);
    expect(r.kernelGroups).toBe(15);
  });
});
