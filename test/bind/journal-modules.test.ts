import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { assignGroup } from '../../api/assign.js';
import { ensureDriver } from '../../bind/modules.js';
import { isIsogroupError } from '../../errors.js';
import { dropEntry, putEntry, readJournal, writeJournal } from '../../state/journal.js';
import { NodeSysfsPort } from '../../sysfs/port.js';
import { fastTmpDir, simCopy } from '../helpers/sim-root.js';

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (error) {
    if (isIsogroupError(error)) return `${error.code}: ${error.message}`;
    throw error;
  }
  return undefined;
};

const entry = (groupId: string) => ({
  groupId,
  owner: 'alice',
  root: '/r',
  simulate: true,
  state: 'assigned' as const,
  time: '2026-01-01T00:00:00.000Z',
  notes: [],
  members: [{ bdf: '0000:0b:00.0', role: 'endpoint' as const, originalDriver: 'e1000e', originalOverride: null }],
});

describe('journal', () => {
  it('round-trips, replaces whole, leaves no temporary file', () => {
    const dir = fastTmpDir();
    expect(readJournal(dir)).toEqual({ version: 1, entries: [] });
    putEntry(dir, entry('23') as never);
    putEntry(dir, entry('22') as never);
    putEntry(dir, { ...entry('23'), owner: 'bob' } as never);
    expect(readJournal(dir).entries.map((e) => [e.groupId, e.owner])).toEqual([
      ['22', 'alice'],
      ['23', 'bob'],
    ]);
    dropEntry(dir, '22');
    expect(readJournal(dir).entries.map((e) => e.groupId)).toEqual(['23']);
    expect(fs.readdirSync(dir)).toEqual(['journal.json']);
  });

  it('a group listed twice, a bad BDF or a wrong version is E_JOURNAL_CORRUPT naming the place', () => {
    const dir = fastTmpDir();
    writeJournal(dir, { version: 1, entries: [entry('23'), entry('23')] } as never);
    expect(codeOf(() => readJournal(dir))).toMatch(/^E_JOURNAL_CORRUPT: .*group 23 twice/);
    fs.writeFileSync(
      path.join(dir, 'journal.json'),
      JSON.stringify({ version: 1, entries: [{ ...entry('1'), members: [{ ...entry('1').members[0], bdf: '../../etc' }] }] }),
    );
    expect(codeOf(() => readJournal(dir))).toMatch(/^E_JOURNAL_CORRUPT: .*entries\.0\.members\.0\.bdf/);
    fs.writeFileSync(path.join(dir, 'journal.json'), JSON.stringify({ version: 2, entries: [] }));
    expect(codeOf(() => readJournal(dir))).toMatch(/^E_JOURNAL_CORRUPT: .*version/);
  });
});

describe('modules', () => {
  it('a missing vfio-pci on a root that cannot load modules names the module', () => {
    const sim = simCopy('mixed', false);
    const port = new NodeSysfsPort(sim.root);
    expect(codeOf(() => ensureDriver(port, 'vfio-pci', 'vfio-pci', null))).toMatch(/^E_MODULE_MISSING: module vfio-pci .*modprobe vfio-pci/);
    expect(codeOf(() => ensureDriver(port, 'vfio-pci', 'vfio-pci', { load: () => undefined }))).toMatch(
      /^E_MODULE_MISSING: module vfio-pci loaded but driver vfio-pci did not register/,
    );
  });

  it('assign on the fixture kernel loads vfio-pci itself', async () => {
    const sim = simCopy('mixed', false);
    expect(fs.existsSync(path.join(sim.root, 'sys/bus/pci/drivers/vfio-pci'))).toBe(false);
    await assignGroup('23', { root: sim.root, simulate: true });
    expect(sim.kernel.driverOf('0000:0b:00.0')).toBe('vfio-pci');
    expect(sim.kernel.dmesg()).toContain('modprobe vfio-pci');
  });
});
