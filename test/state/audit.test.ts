import fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { attachGroup, emptyContextTable, type GroupFacts } from '../../groups/context.js';
import { type DeviceFacts, parsePolicy } from '../../groups/policy.js';
import type { Bdf } from '../../model/bdf.js';
import type { Subject } from '../../model/owner.js';
import { AUDIT_FILE, AuditLog, auditResult, decideAndAudit, readAudit } from '../../state/audit.js';
import { repoRoot } from '../helpers/paths.js';
import { tmpDir } from '../helpers/tmp.js';

const alice: Subject = { name: 'alice', uid: 1000, gids: [1000] };
const bob: Subject = { name: 'bob', uid: 1001, gids: [1001] };
const root: Subject = { name: 'root', uid: 0, gids: [0] };
const dev = (bdf: string, o: Partial<DeviceFacts> = {}): DeviceFacts => ({
  bdf,
  vendor: '0x8086',
  device: '0x10d3',
  class: '0x020000',
  kernelGroup: '23',
  iommu: 'dmar0',
  ...o,
});

const policy = parsePolicy(
  {
    rules: [
      { allow: { owners: [{ name: 'alice' }], selector: { group: '23' } } },
      { deny: { owners: [{ any: true }], selector: { class: '01' } }, comment: 'storage stays on the host' },
    ],
  },
  'policy.yaml',
);

describe('audit log', () => {
  it('writes one line for every decision, allowed and denied, with who, what, why and when', () => {
    const dir = tmpDir();
    const log = new AuditLog(dir, { now: () => new Date('2026-01-02T03:04:05.000Z') });
    const group = [dev('0000:0b:00.0'), dev('0000:0b:00.1')];
    const cases: [Subject, DeviceFacts[], boolean][] = [
      [alice, group, true],
      [bob, group, false],
      [root, group, true],
      [root, [dev('0000:00:1f.2', { class: '0x010601', kernelGroup: '15' })], false],
      [alice, [dev('0000:0b:00.0'), dev('0000:00:1f.2', { class: '0x010601' })], false],
    ];
    const decisions = cases.map(([s, d], i) =>
      decideAndAudit(log, policy, s, { action: 'claim', group: d[0]!.kernelGroup, owner: s.name, devices: d, extra: { request: i } }),
    );
    expect(decisions.map((d) => d.decision.allowed)).toEqual(cases.map((c) => c[2]));

    const lines = fs.readFileSync(path.join(dir, AUDIT_FILE), 'utf8').split('\n');
    expect(lines.pop()).toBe('');
    expect(lines).toHaveLength(cases.length);
    const { records, problems } = readAudit(path.join(dir, AUDIT_FILE));
    expect(problems).toEqual([]);
    records.forEach((r, i) => {
      const [s, d, allowed] = cases[i]!;
      expect(r).toMatchObject({
        time: '2026-01-02T03:04:05.000Z',
        action: 'claim',
        allowed,
        subject: { name: s.name, uid: s.uid, gids: s.gids },
        target: { group: d[0]!.kernelGroup, devices: d.map((x) => x.bdf), owner: s.name },
        extra: { policy: 'policy.yaml', request: i },
      });
      expect(r.reason.length).toBeGreaterThan(10);
      expect(r.devices).toHaveLength(d.length);
    });
    expect(records[1]!.reason).toContain('no rule allows bob');
    expect(records[3]).toMatchObject({ rule: 1, allowed: false });
    expect(records[3]!.reason).toContain('storage stays on the host');
    expect(records[4]!.devices!.map((x) => x.allowed)).toEqual([true, false]);
  });

  it('appends: existing lines are kept, and a record is returned with its time', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, AUDIT_FILE), '{"time":"old","allowed":true,"action":"x"}\n');
    const log = new AuditLog(dir);
    const rec = log.append({ action: 'detach', allowed: true, subject: null, target: { group: '7' }, rule: null, reason: 'admin detached group 7' });
    expect(Date.parse(rec.time)).not.toBeNaN();
    const { records } = log.read();
    expect(records.map((r) => r.action)).toEqual(['x', 'detach']);
  });

  it('each record is a single write on an O_APPEND descriptor, then fsync', () => {
    const dir = tmpDir();
    const log = new AuditLog(dir);
    const opens = vi.spyOn(fs, 'openSync');
    const writes = vi.spyOn(fs, 'writeSync');
    const syncs = vi.spyOn(fs, 'fsyncSync');
    log.append({ action: 'claim', allowed: false, subject: bob, target: { group: '1', devices: ['0000:00:01.0'] }, rule: null, reason: 'x'.repeat(100_000) });
    const fileOpen = opens.mock.calls.find((c) => c[0] === path.join(dir, AUDIT_FILE))!;
    expect((fileOpen[1] as number) & fs.constants.O_APPEND).toBe(fs.constants.O_APPEND);
    expect(writes).toHaveBeenCalledTimes(1);
    expect(syncs.mock.calls.length).toBeGreaterThanOrEqual(1);
    const text = fs.readFileSync(path.join(dir, AUDIT_FILE), 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    expect(text.split('\n')).toHaveLength(2);
  });

  it('two processes appending through AuditLog at once never tear or lose a line', async () => {
    // Compile the real module so child processes run it (Node 20 cannot run TypeScript).
    const out = path.join(repoRoot, 'node_modules', '.cache', `isogroup-audit-${process.pid}`);
    onTestFinished(() => fs.rmSync(out, { recursive: true, force: true }));
    const tsc = path.join(repoRoot, 'node_modules', '.bin', 'tsc');
    await execa(
      tsc,
      [
        'state/audit.ts',
        '--outDir',
        out,
        '--rootDir',
        '.',
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
        '--target',
        'es2022',
        '--skipLibCheck',
        '--noCheck',
        '--types',
        'node',
        '--esModuleInterop',
      ],
      { cwd: repoRoot },
    );
    fs.writeFileSync(path.join(out, 'package.json'), '{"type":"module"}');
    const dir = tmpDir();
    const script = `
      const { AuditLog } = await import(${JSON.stringify(pathToFileURL(path.join(out, 'state', 'audit.js')).href)});
      const log = new AuditLog(process.argv[1]);
      for (let i = 0; i < 100; i++) log.append({ action: process.argv[2], allowed: i % 2 === 0, subject: null, target: { group: String(i) }, rule: null, reason: 'r'.repeat(5000) });`;
    await Promise.all(['a', 'b'].map((who) => execa('node', ['--input-type=module', '-e', script, dir, who])));
    const { records, problems } = readAudit(path.join(dir, AUDIT_FILE));
    expect(problems).toEqual([]);
    for (const who of ['a', 'b'])
      expect(records.filter((r) => r.action === who).map((r) => r.target.group)).toEqual(Array.from({ length: 100 }, (_, i) => String(i)));
  }, 120_000);

  it('context operations are audited too: refusals with their error code, successes with the action', () => {
    const dir = tmpDir();
    const log = new AuditLog(dir);
    const g: GroupFacts = {
      id: '7',
      devices: ['0000:07:00.0' as Bdf],
      viable: false,
      blockers: ['0000:07:00.0 is bound to host driver e1000e'],
      units: [],
      noiommu: false,
      reservedRegions: [],
    };
    const refused = attachGroup(emptyContextTable(), 'alice', g);
    auditResult(log, { action: 'attach', subject: root, group: '7', devices: g.devices, owner: 'alice' }, refused);
    const ok = attachGroup(emptyContextTable(), 'alice', { ...g, viable: true, blockers: [] });
    auditResult(log, { action: 'attach', subject: root, group: '7', devices: g.devices, owner: 'alice', reason: 'attached group 7 to ctx-1' }, ok);
    const { records } = log.read();
    expect(records.map((x) => [x.action, x.allowed, x.extra?.code ?? null])).toEqual([
      ['attach', false, 'E_NOT_VIABLE'],
      ['attach', true, null],
    ]);
    expect(records[0]!.reason).toContain('E_NOT_VIABLE: group 7 is not viable: 0000:07:00.0 is bound to host driver e1000e');
    expect(records[1]!.reason).toBe('attached group 7 to ctx-1');
  });

  it('a torn tail is reported, not fatal; a missing file is empty', () => {
    const dir = tmpDir();
    const file = path.join(dir, AUDIT_FILE);
    expect(readAudit(file)).toEqual({ records: [], problems: [] });
    fs.writeFileSync(file, '{"time":"t","allowed":true,"action":"a"}\n{"time":"t","allo');
    const r = readAudit(file);
    expect(r.records).toHaveLength(1);
    expect(r.problems.map((p) => p.line)).toEqual([2]);
  });

  it('an unusable state directory is E_STATE_DIR, and the decision is not returned', () => {
    const dir = tmpDir();
    const notDir = path.join(dir, 'file');
    fs.writeFileSync(notDir, '');
    expect(() => new AuditLog(notDir).append({ action: 'a', allowed: true, subject: null, target: {}, rule: null, reason: 'r' })).toThrow(
      expect.objectContaining({ code: 'E_STATE_DIR' }),
    );
    const missing = new AuditLog(path.join(dir, 'nope'));
    expect(() => decideAndAudit(missing, policy, alice, { action: 'claim', devices: [dev('0000:0b:00.0')] })).toThrow(
      expect.objectContaining({ code: 'E_STATE_DIR' }),
    );
  });
});
