import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { importLspci } from '../../api/capture.js';
import { listDevices } from '../../api/devices.js';
import { listGroups } from '../../api/groups.js';
import { NO_FLR_QUIRKS, NO_PM_RESET_QUIRKS } from '../../groups/reset-quirks.js';
import { haveShared, oracleCaptures, sharedDir } from '../helpers/paths.js';
import { tmpDir } from '../helpers/tmp.js';

// Every capture of the real kernel and every real machine gets a reset report without errors. On the
// captures the kernel's reset_method (read here from the tarball, not through isogroup) is the answer
// the derivation must give; on the machines, lspci's own decoding of the dump (FLReset+, NoSoftRst-,
// AFCap) is the second reader the derived flr, af_flr and pm must agree with.

const SLOW = 120_000;
const shared = haveShared();
const realdata = shared ? path.join(sharedDir(), 'realdata') : '';

/** The report must be whole: every device a method list and a source, every group a consistent reset. */
const wholeReport = (root: string) => {
  const devices = listDevices({ root, pciIds: null });
  const groups = listGroups({ root, pciIds: null });
  const known = new Set(devices.devices.map((d) => d.bdf));
  const ids = new Set(groups.groups.map((g) => g.id));
  for (const d of devices.devices) {
    expect(Array.isArray(d.resetMethods), d.bdf).toBe(true);
    expect(['kernel', 'derived'], d.bdf).toContain(d.resetSource);
    for (const b of d.resetScope) expect(known.has(b), `${d.bdf} scope ${b}`).toBe(true);
    if (d.resetScope.length) expect(d.resetScope, d.bdf).toContain(d.bdf);
  }
  for (const g of groups.groups) {
    for (const id of g.reset.groupsAffected) expect(ids.has(id), `group ${g.id} reaches ${id}`).toBe(true);
    expect(g.reset.canResetAlone, `group ${g.id}`).toBe(g.reset.noReset.length + g.reset.sharedReset.length + g.reset.unknown.length === 0);
    if (!g.reset.canResetAlone) expect(g.reset.warnings.length, `group ${g.id}`).toBeGreaterThan(0);
  }
  return { devices, groups };
};

describe.skipIf(!shared)('oracle captures (../shared/oracle/captures; skipped without ../shared)', () => {
  it.each(shared ? oracleCaptures().map((c) => c.name) : [])(
    '%s: derived reset methods equal the kernel reset_method of every device',
    (name) => {
      const dir = tmpDir();
      execFileSync('tar', ['xzf', path.join(sharedDir(), 'oracle/captures', `${name}.tar.gz`), '-C', dir]);
      const { devices } = wholeReport(dir);
      for (const d of devices.devices) {
        const file = path.join(dir, 'sys/bus/pci/devices', d.bdf, 'reset_method');
        const kernel = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split(' ') : [];
        expect({ bdf: d.bdf, derived: d.resetDerived, source: d.resetSource }).toEqual({ bdf: d.bdf, derived: kernel, source: 'kernel' });
      }
    },
    SLOW,
  );
});

const noFlr = (v: string, d: string) => NO_FLR_QUIRKS.some((q) => q.vendor === parseInt(v, 16) && q.device === parseInt(d, 16));
const noPm = (v: string, d: string) => NO_PM_RESET_QUIRKS.some((q) => q.vendor === parseInt(v, 16) && (q.device === null || q.device === parseInt(d, 16)));

describe.skipIf(!shared)('real machines (../shared/realdata; skipped without ../shared)', () => {
  const dumps = shared
    ? fs
        .readdirSync(realdata)
        .filter((m) => /^(nvbugreport|pciutils)-/.test(m))
        .sort()
    : [];

  it.each(dumps)(
    '%s: a report without errors; flr, af_flr and pm as lspci decodes the same dump',
    (machine) => {
      const dir = path.join(realdata, machine);
      const dump = path.join(dir, fs.readdirSync(dir).find((f) => /^lspci-nnDvvvx+\.txt$|\.lspci-x\.txt$/.test(f))!);
      const root = path.join(tmpDir(), 'root');
      importLspci(dump, root);
      const { devices } = wholeReport(root);
      const byBdf = new Map(devices.devices.map((d) => [d.bdf, d]));
      let decoded = 0;
      for (const block of fs.readFileSync(dump, 'utf8').split(/\n(?=[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7] )/)) {
        const bdf = /^([0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) /.exec(block)?.[1];
        const d = bdf ? byBdf.get(bdf) : undefined;
        if (!d || d.resetDerived === null) continue;
        expect(d.resetSource, bdf).toBe('derived');
        // DevCap continues on lines indented one tab deeper (FLReset sits on the second).
        const devcap = /\n\t\tDevCap:\t([^\n]*(?:\n\t\t\t[^\n]*)*)/.exec(block)?.[1];
        if (devcap !== undefined) {
          decoded++;
          const want = devcap.includes('FLReset+') && !noFlr(d.vendor, d.device);
          expect({ bdf, flr: d.resetDerived.includes('flr') }).toEqual({ bdf, flr: want });
        }
        const pm = /Power Management version (\d+)[\s\S]*?\n\t\tStatus: D\d (NoSoftRst[+-])/.exec(block);
        if (pm && !noPm(d.vendor, d.device)) {
          const want = Number(pm[1]) <= 3 && pm[2] === 'NoSoftRst-';
          expect({ bdf, pm: d.resetDerived.includes('pm') }).toEqual({ bdf, pm: want });
        } else if (!/Power Management version/.test(block) && /\n\tCapabilities: /.test(block))
          expect({ bdf, pm: d.resetDerived.includes('pm') }).toEqual({ bdf, pm: false });
        const af = /\n\t\tAFCap: TP([+-]) FLR([+-])/.exec(block);
        expect({ bdf, af: d.resetDerived.includes('af_flr') }).toEqual({
          bdf,
          af: af !== null && af[1] === '+' && af[2] === '+' && !noFlr(d.vendor, d.device),
        });
      }
      if (/lspci-nnDvvv/.test(dump)) expect(decoded).toBeGreaterThan(0);
    },
    SLOW,
  );

  it(
    'sysfs trees without usable config (hwloc 64-byte reads, ghw without config) report every reset as unknown, never as none or fine',
    () => {
      const trees = fs.readdirSync(realdata).filter((m) => /^(hwloc|ghw)-/.test(m));
      expect(trees.length).toBeGreaterThan(0);
      for (const machine of trees) {
        const dir = tmpDir();
        const src = path.join(realdata, machine);
        const tarball = fs.readdirSync(src).find((f) => /\.tar\.(gz|bz2)$/.test(f))!;
        if (tarball.endsWith('.bz2')) execFileSync('tar', ['xjf', path.join(src, tarball), '-C', dir, '--wildcards', '*/sys/bus/pci/*', '*/sys/devices/pci*']);
        else execFileSync('tar', ['xzf', path.join(src, tarball), '-C', dir]);
        const top = fs.existsSync(path.join(dir, 'sys/bus/pci/devices'))
          ? dir
          : path.join(dir, fs.readdirSync(dir).find((f) => fs.existsSync(path.join(dir, f, 'sys/bus/pci/devices')))!);
        const { devices, groups } = wholeReport(top);
        expect(devices.devices.length, machine).toBeGreaterThan(0);
        for (const d of devices.devices)
          if (d.resetSource === 'derived') expect({ machine, bdf: d.bdf, derived: d.resetDerived }).toEqual({ machine, bdf: d.bdf, derived: null });
        // Where the kernel says nothing about a device and config space is too short, its reset is unknown, and so is its group's.
        const unknown = new Set(devices.devices.filter((d) => d.resetSource === 'derived' && !d.isBridge).map((d) => d.bdf));
        for (const g of groups.groups) {
          const mine = g.devices.filter((b) => unknown.has(b));
          expect({ machine, id: g.id, unknown: g.reset.unknown }).toEqual({ machine, id: g.id, unknown: mine });
          if (mine.length) expect({ machine, id: g.id, alone: g.reset.canResetAlone }).toEqual({ machine, id: g.id, alone: false });
        }
      }
    },
    SLOW,
  );
});
