import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../../cli/main.js';
import { bundledCapture } from '../helpers/paths.js';
import { driverState, fastTmpDir, simCopy } from '../helpers/sim-root.js';

// assign / release / recover / status / sim through the CLI, in-process.

const cli = async (args: string[]) => {
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) });
  return { code, stdout, stderr, json: () => JSON.parse(stdout) };
};

const G23 = ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2'];

describe('assign/release/status CLI on the fixture kernel', () => {
  it('assign --json carries the steps done; status --json lists the group; release restores', async () => {
    const sim = simCopy();
    const original = driverState(sim, G23);
    const r = await cli(['assign', '0000:0b:00.2', '--to', 'alice', '--root', sim.root, '--simulate', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const a = r.json();
    expect(a).toMatchObject({ groupId: '23', owner: 'alice', dryRun: false, devices: G23, undone: [] });
    expect(a.done.filter((s: { kind: string }) => s.kind === 'verify').map((s: { bdf: string }) => s.bdf)).toEqual(G23);
    // Default state dir under --simulate lives in the fixture root.
    expect(fs.existsSync(path.join(sim.root, '.isogroup-sim/state/journal.json'))).toBe(true);

    const s = await cli(['status', '--root', sim.root, '--simulate', '--json']);
    expect(s.code).toBe(0);
    expect(s.json().groups).toEqual([
      expect.objectContaining({
        id: '23',
        devices: G23,
        owner: 'alice',
        held: false,
        originalDrivers: { '0000:0b:00.0': 'e1000e', '0000:0b:00.1': 'virtio-pci', '0000:0b:00.2': 'virtio-pci' },
      }),
    ]);

    const again = await cli(['assign', '23', '--to', 'alice', '--root', sim.root, '--simulate', '--json']);
    expect(again.code).toBe(1);
    expect(again.json().error.code).toBe('E_ALREADY_ASSIGNED');
    // Another owner: the group is in alice's context (issue 6).
    const other = await cli(['assign', '23', '--to', 'bob', '--root', sim.root, '--simulate', '--json']);
    expect(other.code).toBe(1);
    expect(other.json().error).toMatchObject({ code: 'E_CONTEXT', details: { owner: 'alice' } });

    const rel = await cli(['release', '23', '--root', sim.root, '--simulate', '--json']);
    expect(rel.code, rel.stderr).toBe(0);
    expect(rel.json().done.length).toBeGreaterThan(0);
    expect(driverState(sim, G23)).toEqual(original);
    expect((await cli(['status', '--root', sim.root, '--simulate', '--json'])).json().groups).toEqual([]);
  });

  it('--dry-run prints the steps and writes nothing', async () => {
    const sim = simCopy();
    const w0 = sim.kernel.writeCount();
    const r = await cli(['assign', '22', '--root', sim.root, '--simulate', '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('echo "0000:0a:01.0" > /sys/bus/pci/drivers/e1000/unbind');
    expect(r.stdout).toContain('bridge 0000:09:00.0 stays on no driver');
    expect(sim.kernel.writeCount()).toBe(w0);
    expect(fs.existsSync(path.join(sim.root, '.isogroup-sim/state/journal.json'))).toBe(false);
  });

  it('recover with nothing to do', async () => {
    const sim = simCopy();
    const r = await cli(['recover', '--root', sim.root, '--simulate', '--json']);
    expect(r.code).toBe(0);
    expect(r.json().recovered).toEqual([]);
  });
});

describe('bad input: a clear error, nothing changed', () => {
  const unchanged = (sim: ReturnType<typeof simCopy>, w0: number, before: unknown) => {
    expect(sim.kernel.writeCount()).toBe(w0);
    expect(driverState(sim, G23)).toEqual(before);
  };

  it.each([
    [['assign', '99'], 1, 'E_NOT_FOUND'],
    [['assign', '0000:77:00.0'], 1, 'E_NOT_FOUND'],
    [['assign', '../../etc'], 2, 'E_INVALID_BDF'],
    [['assign', '0000:0b:00.9'], 2, 'E_INVALID_BDF'],
    [['release', '23'], 1, 'E_NOT_ASSIGNED'],
    [['release', 'abc'], 2, 'E_INVALID_BDF'],
    [['assign', '23', '--to', 'bad owner'], 2, 'E_USAGE'],
  ])('%j -> exit %i %s', async (args, exit, code) => {
    const sim = simCopy();
    const w0 = sim.kernel.writeCount();
    const before = driverState(sim, G23);
    const r = await cli([...args, '--root', sim.root, '--simulate', '--json']);
    expect(r.code).toBe(exit);
    expect(r.json().error.code).toBe(code);
    expect(r.stderr).toContain(code);
    unchanged(sim, w0, before);
  });

  it('an unwritable state directory', async () => {
    const sim = simCopy();
    const w0 = sim.kernel.writeCount();
    const before = driverState(sim, G23);
    const file = path.join(fastTmpDir(), 'a-file');
    fs.writeFileSync(file, 'x');
    const r = await cli(['assign', '23', '--root', sim.root, '--simulate', '--state-dir', path.join(file, 'state'), '--json']);
    expect(r.code).toBe(1);
    expect(r.json().error.code).toBe('E_STATE_DIR');
    expect(r.json().error.message).toContain(file);
    unchanged(sim, w0, before);
  });

  it('a corrupt journal: every command refuses, the journal is left as found', async () => {
    const sim = simCopy();
    const stateDir = path.join(fastTmpDir(), 'state');
    fs.mkdirSync(stateDir);
    const w0 = sim.kernel.writeCount();
    const before = driverState(sim, G23);
    for (const garbage of ['{"version":1,"entries":[{"groupId":"23"', '{"version":1,"entries":[{"groupId":"x","owner":""}]}']) {
      fs.writeFileSync(path.join(stateDir, 'journal.json'), garbage);
      for (const cmd of [['assign', '23'], ['release', '23'], ['recover'], ['status']]) {
        const r = await cli([...cmd, '--root', sim.root, '--simulate', '--state-dir', stateDir, '--json']);
        expect(r.code, `${cmd.join(' ')}`).toBe(1);
        expect(r.json().error.code).toBe('E_JOURNAL_CORRUPT');
        expect(r.json().error.message).toContain(path.join(stateDir, 'journal.json'));
      }
      expect(fs.readFileSync(path.join(stateDir, 'journal.json'), 'utf8')).toBe(garbage);
    }
    unchanged(sim, w0, before);
  });

  it('a fixture root without --simulate: refused, nothing written', async () => {
    const sim = simCopy();
    const w0 = sim.kernel.writeCount();
    const r = await cli(['assign', '23', '--root', sim.root, '--state-dir', path.join(fastTmpDir(), 's'), '--json']);
    expect(r.code).toBe(2);
    expect(r.json().error.message).toMatch(/--simulate/);
    expect(sim.kernel.writeCount()).toBe(w0);
  });

  it('--simulate on a capture tarball points at sim unpack', async () => {
    const r = await cli(['assign', '23', '--root', bundledCapture('mixed'), '--simulate', '--json']);
    expect(r.code).toBe(2);
    expect(r.json().error.message).toMatch(/sim unpack/);
  });
});

describe('sim CLI', () => {
  it('unpack, add-device (host driver binds despite autoprobe=0), fail, dmesg', async () => {
    const out = path.join(fastTmpDir(), 'root');
    expect((await cli(['sim', 'unpack', bundledCapture('mixed'), '--out', out, '--json'])).json().devices).toBe(39);
    expect((await cli(['sim', 'write', 'sys/bus/pci/drivers_autoprobe', '0', '--root', out])).code).toBe(0);
    const add = await cli([
      'sim',
      'add-device',
      '--root',
      out,
      '--bridge',
      '0000:00:10.6',
      '--vendor',
      '8086',
      '--device',
      '10d3',
      '--driver',
      'e1000e',
      '--json',
    ]);
    expect(add.code, add.stderr).toBe(0);
    expect(add.json()).toMatchObject({ bdf: '0000:0d:00.0', group: '26', driver: 'e1000e', pending: false });
    const bad = await cli(['sim', 'add-device', '--root', out, '--bridge', '0000:0b:00.0', '--vendor', '8086', '--device', '10d3', '--json']);
    expect(bad.json().error.code).toBe('E_INVALID_INPUT'); // not a bridge
    expect((await cli(['sim', 'fail', '--nth', '1', '--errno', 'EIO', '--root', out])).code).toBe(0);
    const w = await cli(['sim', 'write', 'sys/bus/pci/devices/0000:0d:00.0/driver_override', 'vfio-pci', '--root', out, '--json']);
    expect(w.code).toBe(1);
    expect(w.json().error.details.errno).toBe('EIO');
    expect((await cli(['sim', 'remove', '0000:0d:00.0', '--root', out])).code).toBe(0);
    const d = await cli(['sim', 'dmesg', '--root', out, '--json']);
    expect(d.json().lines).toContain('pci 0000:0d:00.0: removed');
  });
});
