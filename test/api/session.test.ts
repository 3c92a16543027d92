import * as fs from 'node:fs';
import * as path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { assignGroup } from '../../api/assign.js';
import { listGroups } from '../../api/groups.js';
import { releaseGroup } from '../../api/release.js';
import { openSession } from '../../api/session.js';
import { runCli } from '../../cli/main.js';
import { readJournal } from '../../state/journal.js';
import { bundledCapture, repoRoot } from '../helpers/paths.js';
import { copyRoot, fastTmpDir, simCopy } from '../helpers/sim-root.js';

// Every setting is resolved in one place (api/session.ts): these are its rules.

const root0 = { name: 'root', uid: 0, gids: [0] };

describe("session: the kubelet's side", () => {
  it('defaults: the kubelet and CDI directories of the live host, or inside a simulated root; none for a capture', () => {
    expect(openSession({ env: {} })).toMatchObject({
      kubeletDir: '/var/lib/kubelet/device-plugins',
      cdiDir: '/etc/cdi',
      kubeletOwner: 'kubernetes',
      kubeletResourcesFile: null,
    });
    const root = copyRoot('mixed');
    expect(openSession({ root, simulate: true, env: {} })).toMatchObject({
      kubeletDir: path.join(root, '.isogroup-sim/device-plugins'),
      cdiDir: path.join(root, '.isogroup-sim/cdi'),
    });
    const capture = openSession({ root: bundledCapture('mixed'), env: { ISOGROUP_CACHE: path.join(fastTmpDir(), 'cache') } });
    expect(capture).toMatchObject({ kubeletDir: null, cdiDir: null });
    expect(() => capture.requireKubeletPlace('kubeletDir', 'the device plugin')).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
  });

  it('flags win, a bad owner name is a usage error, and a session already open keeps them', () => {
    const s = openSession({ kubeletDir: 'k', cdiDir: '/c', kubeletOwner: 'vms', kubeletResources: 'r.yaml', env: {} });
    expect(s).toMatchObject({ kubeletDir: path.resolve('k'), cdiDir: '/c', kubeletOwner: 'vms', kubeletResourcesFile: path.resolve('r.yaml') });
    expect(s.with({ owner: 'alice' })).toMatchObject({ kubeletDir: path.resolve('k'), cdiDir: '/c', kubeletOwner: 'vms' });
    expect(() => openSession({ kubeletOwner: '../x', env: {} })).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
    expect(() => openSession({ session: s, cdiDir: '/d' })).toThrow(/cdiDir cannot be set again/);
    expect(() => openSession({ kubeletResources: '/nonexistent.yaml', env: {} }).kubeletResources()).toThrow(
      expect.objectContaining({ code: 'E_INVALID_INPUT' }),
    );
  });
});

describe('session: where state, socket and policy live', () => {
  it('the live host: /var/lib/isogroup, /run/isogroup.sock, /etc/isogroup/policy.yaml', () => {
    const s = openSession({ env: {} });
    expect(s).toMatchObject({
      root: '/',
      live: true,
      simulate: false,
      writable: true,
      stateDir: '/var/lib/isogroup',
      socket: '/run/isogroup.sock',
      policyFile: '/etc/isogroup/policy.yaml',
    });
  });

  it("--simulate: the fixture's own state, socket and policy, inside the root", () => {
    const root = copyRoot('mixed');
    const s = openSession({ root, simulate: true, env: {} });
    expect(s).toMatchObject({
      live: false,
      simulate: true,
      writable: true,
      stateDir: path.join(root, '.isogroup-sim/state'),
      socket: path.join(root, '.isogroup-sim/isogroup.sock'),
      policyFile: path.join(root, 'etc/isogroup/policy.yaml'),
    });
  });

  it('a capture without --simulate has no state and no socket: commands that need state say so', () => {
    const s = openSession({ root: bundledCapture('mixed'), env: { ISOGROUP_CACHE: path.join(fastTmpDir(), 'cache') } });
    expect(s).toMatchObject({ live: false, writable: false, stateDir: null, socket: null, rootArg: bundledCapture('mixed') });
    expect(() => s.requireState('status')).toThrow(expect.objectContaining({ code: 'E_USAGE', message: expect.stringMatching(/--simulate .*--state-dir/) }));
    expect(openSession({ root: bundledCapture('mixed'), stateDir: '/x/state', env: { ISOGROUP_CACHE: path.join(fastTmpDir(), 'cache') } }).stateDir).toBe(
      '/x/state',
    );
  });

  it('--simulate needs a fixture root: never the live host, never a tarball', () => {
    expect(() => openSession({ simulate: true, env: {} })).toThrow(expect.objectContaining({ code: 'E_USAGE', message: expect.stringMatching(/--root/) }));
    expect(() => openSession({ root: bundledCapture('mixed'), simulate: true, env: {} })).toThrow(
      expect.objectContaining({ code: 'E_USAGE', message: expect.stringMatching(/sim unpack/) }),
    );
  });
});

describe('session: opened once, used everywhere', () => {
  it("an open session takes who asks and for whom anew, never where (the README's example)", async () => {
    const root = copyRoot('mixed');
    const session = openSession({ root, simulate: true });
    expect(() => openSession({ session, root: '/' })).toThrow(expect.objectContaining({ code: 'E_USAGE', message: expect.stringContaining('root') }));
    const { groups } = listGroups({ session });
    const nic = groups.find((g) => g.devices.some((b) => b === '0000:0b:00.0'))!; // its whole group goes, never one function
    const r = await assignGroup(nic.id, { session, owner: 'alice' });
    expect(r).toMatchObject({ owner: 'alice', context: 'ctx-1' });
    expect(r.indices.map((d) => d.bdf)).toEqual(nic.devices);
    await releaseGroup(r.groupId, { session });
    expect(readJournal(session.stateDir!).entries).toEqual([]);
  });
});

describe('session: who gets a group', () => {
  it('--to, else the user who ran sudo (only when running as root), else the one asking', () => {
    expect(openSession({ subject: root0, env: { SUDO_USER: 'alice' } }).owner()).toBe('root'); // a peer's subject is given: sudo is not its
    const asRoot = (env: Record<string, string>, owner?: string) => openSession({ env, ...(owner ? { owner } : {}) });
    if (process.getuid?.() === 0) {
      expect(asRoot({ SUDO_USER: 'alice' }).owner()).toBe('alice');
      expect(asRoot({ SUDO_USER: 'alice' }, 'bob').owner()).toBe('bob');
      expect(asRoot({}).owner()).toBe(asRoot({}).subject().name);
    }
    expect(() => openSession({ owner: 'bad owner', env: {} }).owner()).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
    expect(() =>
      openSession({ subject: root0, env: {} })
        .forRequest({ subject: { name: 'x', uid: 5, gids: [5] }, owner: '../etc' })
        .owner(),
    ).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
  });

  it.runIf(process.getuid?.() === 0)('`sudo isogroup assign` records the invoking user as the owner, and --to still wins', async () => {
    const sim = simCopy();
    const bin = path.join(repoRoot, 'bin/isogroup');
    const sudo = await execa(bin, ['assign', '23', '--root', sim.root, '--simulate', '--json'], {
      env: { SUDO_USER: 'alice', SUDO_UID: '1000' },
      reject: false,
    });
    expect(sudo.exitCode, sudo.stderr).toBe(0);
    expect(JSON.parse(sudo.stdout)).toMatchObject({ groupId: '23', owner: 'alice' });
    expect(readJournal(path.join(sim.root, '.isogroup-sim/state')).entries.map((e) => [e.groupId, e.owner])).toEqual([['23', 'alice']]);
    const to = await execa(bin, ['assign', '22', '--to', 'bob', '--root', sim.root, '--simulate', '--json'], { env: { SUDO_USER: 'alice' }, reject: false });
    expect(to.exitCode, to.stderr).toBe(0);
    expect(JSON.parse(to.stdout)).toMatchObject({ groupId: '22', owner: 'bob' });
  });
});

describe('a capture never reads the live host state', () => {
  const cli = async (args: string[]) => {
    let stdout = '';
    let stderr = '';
    const code = await runCli(args, { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) });
    return { code, stdout, stderr };
  };

  it.each([['status'], ['recover'], ['contexts', 'list'], ['devices', '--as', 'alice'], ['release', '23']])(
    '%j --root CAPTURE: a usage error naming --simulate and --state-dir',
    async (...args) => {
      const r = await cli([...args, '--root', bundledCapture('mixed'), '--json']);
      expect(r.code).toBe(2);
      const error = JSON.parse(r.stdout).error;
      expect(error.code).toBe('E_USAGE');
      expect(error.message).toMatch(/--simulate|--dry-run/);
      expect(error.message).not.toContain('/var/lib/isogroup');
    },
  );

  it('with --state-dir a capture reads that state, and a dry run decides without any state', async () => {
    const stateDir = path.join(fastTmpDir(), 'state');
    const st = await cli(['status', '--root', bundledCapture('mixed'), '--state-dir', stateDir, '--json']);
    expect(st.code).toBe(0);
    expect(JSON.parse(st.stdout)).toMatchObject({ groups: [], unfinished: [] });
    const dry = await cli(['assign', '23', '--dry-run', '--to', 'alice', '--root', bundledCapture('mixed'), '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(JSON.parse(dry.stdout)).toMatchObject({ groupId: '23', dryRun: true, stateDir: null });
    expect(fs.existsSync(stateDir)).toBe(false);
  });
});
