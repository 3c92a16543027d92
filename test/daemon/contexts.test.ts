import * as fs from 'node:fs';
import * as path from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { assignGroup } from '../../api/assign.js';
import { mergeOwnerContexts, showContext } from '../../api/contexts.js';
import { releaseGroup } from '../../api/release.js';
import { GuardDaemon } from '../../daemon/daemon.js';
import { parsePolicy } from '../../groups/policy.js';
import { readAudit } from '../../state/audit.js';
import { repoRoot } from '../helpers/paths.js';
import { simCopy } from '../helpers/sim-root.js';

// Contexts on the fixture kernel (mixed capture): group 22 = 09:00.0 bridge + 0a:01.0/.02/.03,
// group 23 = 0b:00.0/.1/.2 (multifunction endpoint). Both have one msi reserved region.
const daemons: GuardDaemon[] = [];
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.close()));
});

const setup = () => {
  const sim = simCopy('mixed');
  const dir = path.dirname(sim.root);
  fs.chmodSync(dir, 0o755); // the unprivileged peer in the fd test must reach the socket
  return { dir, root: sim.root, sim, stateDir: path.join(dir, 'state'), socket: path.join(dir, 'd.sock') };
};

const root0 = { name: 'root', uid: 0, gids: [0] };

// A daemon on the fixture kernel with no event sources (the tests drive reconcile); with a socket, one
// any local user may connect to (mode 0666), so unprivileged peers reach it and SO_PEERCRED decides.
const startDaemon = async (o: { root: string; stateDir: string; socket?: string }): Promise<GuardDaemon> => {
  const daemon = await GuardDaemon.start({
    root: o.root,
    simulate: true,
    stateDir: o.stateDir,
    socket: o.socket ?? null,
    ...(o.socket ? { socketMode: 0o666 } : {}),
    rescanMs: 0,
    sources: [],
  });
  daemons.push(daemon);
  return daemon;
};

// A DaemonClient script (`c` is the client of the socket given as its argument) run as another user:
// returns what it printed, parsed. Without `id` it runs as this process's user.
const peerScript = (dir: string, name: string, body: string) => {
  const script = path.join(dir, name);
  fs.writeFileSync(
    script,
    `import { DaemonClient } from ${JSON.stringify(path.join(repoRoot, 'dist/daemon/client.js'))};\nconst c = new DaemonClient(process.argv[2]);\n${body}`,
  );
  return async (socket: string, id?: number): Promise<unknown> =>
    JSON.parse((await execa(process.execPath, [script, socket], id === undefined ? {} : { uid: id, gid: id })).stdout);
};

describe('contexts through assign/release', () => {
  it("merges an owner's groups into one context with stable device numbers and usable IOVA ranges", async () => {
    const { root, stateDir } = setup();
    const a = await assignGroup('22', { root, simulate: true, stateDir, owner: 'alice', subject: root0 });
    expect(a.context).toBe('ctx-1');
    expect(a.indices.map((d) => d.index)).toEqual([0, 1, 2, 3]);
    const b = await assignGroup('0000:0b:00.1', { root, simulate: true, stateDir, owner: 'alice', subject: root0 });
    expect(b.context).toBe('ctx-1');
    expect(b.indices.map((d) => d.index)).toEqual([4, 5, 6]);
    const view = showContext('alice', { root, simulate: true, stateDir });
    expect(view.context.owner).toBe('alice');
    expect(view.context.groups.map((g) => g.id).sort()).toEqual(['22', '23']);
    expect(view.context.devices.slice(0, 2)).toEqual([
      expect.objectContaining({ index: 0, bdf: expect.stringMatching(/^0000:/) }),
      expect.objectContaining({ index: 1 }),
    ]);
    // The capture's only reserved region is the x86 MSI window: usable = aperture minus fee00000-feefffff.
    expect(view.context.iovaRanges[0]).toEqual({ start: '0x0', end: '0xfedfffff' });
    expect(view.context.iovaRanges[1]?.start).toBe('0xfef00000');
    // Releasing 22 leaves a hole: 23's devices keep numbers 4..6.
    await releaseGroup('22', { root, simulate: true, stateDir, subject: root0 });
    expect(
      showContext('alice', { root, simulate: true, stateDir })
        .context.devices.filter((d) => d.present)
        .map((d) => d.index),
    ).toEqual([4, 5, 6]);
  });

  it("refuses a group in another owner's context, and audits the refusal", async () => {
    const { root, stateDir } = setup();
    await assignGroup('23', { root, simulate: true, stateDir, owner: 'alice', subject: root0 });
    await expect(assignGroup('23', { root, simulate: true, stateDir, owner: 'bob', subject: root0 })).rejects.toThrow(
      expect.objectContaining({ code: 'E_CONTEXT' }),
    );
    const { records } = readAudit(path.join(stateDir, 'audit.jsonl'));
    expect(records.at(-1)).toMatchObject({ action: 'assign', allowed: false, target: expect.objectContaining({ group: '23', owner: 'bob' }) });
    expect(records.filter((r) => r.action === 'assign' && r.allowed)).toHaveLength(1);
  });

  it('applies the policy to the requester: default deny for non-root, allow by rule, deny overrides even root', async () => {
    const { root, stateDir } = setup();
    const nobody = { name: 'nobody', uid: 65534, gids: [65534] };
    await expect(assignGroup('23', { root, simulate: true, stateDir, owner: 'nobody', subject: nobody })).rejects.toThrow(
      expect.objectContaining({ code: 'E_POLICY_DENIED' }),
    );
    await expect(assignGroup('23', { root, simulate: true, stateDir, owner: 'alice', subject: nobody })).rejects.toThrow(
      expect.objectContaining({ code: 'E_PERMISSION' }),
    );
    const allow = parsePolicy({ version: 1, rules: [{ allow: { owners: [{ name: 'nobody' }], selector: { group: 23 } } }] }, 'test');
    expect((await assignGroup('23', { root, simulate: true, stateDir, owner: 'nobody', subject: nobody, policy: allow })).groupId).toBe('23');
    const denyNet = parsePolicy({ version: 1, rules: [{ deny: { owners: [{ any: true }], selector: { class: '02' } } }] }, 'test');
    await expect(assignGroup('22', { root, simulate: true, stateDir, owner: 'alice', subject: root0, policy: denyNet })).rejects.toThrow(
      expect.objectContaining({ code: 'E_POLICY_DENIED' }),
    );
    const { records } = readAudit(path.join(stateDir, 'audit.jsonl'));
    expect(records.filter((r) => r.action === 'assign').map((r) => r.allowed)).toEqual([false, false, true, false]);
  });

  it('merges two contexts and the daemon moves the held group into the receiving container', async () => {
    const { root, stateDir } = setup();
    const daemon = await startDaemon({ root, stateDir });
    await assignGroup('22', { root, simulate: true, stateDir, owner: 'alice', subject: root0 });
    await assignGroup('23', { root, simulate: true, stateDir, owner: 'bob', subject: root0 });
    await daemon.reconcile('test');
    expect(daemon.status().groups).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ id: '22', owner: 'alice', held: true }),
        expect.objectContaining({ id: '23', owner: 'bob', held: true }),
      ]),
    );
    const merged = mergeOwnerContexts('bob', 'alice', {
      root,
      simulate: true,
      stateDir,
      subject: root0,
      policy: parsePolicy({ version: 1, rules: [{ allow: { owners: [{ any: true }], selector: { all: true } } }] }, 't'),
    });
    expect(merged.context.groups.map((g) => g.id).sort()).toEqual(['22', '23']);
    await daemon.reconcile('test');
    expect(daemon.status().groups).toEqual(expect.arrayContaining([expect.objectContaining({ id: '23', owner: 'alice', held: true })]));
  });
});

describe('hand-off', () => {
  it('sends the container and group fds to the allowed owner (SO_PEERCRED), refuses another peer', async () => {
    const { root, stateDir, socket, dir } = setup();
    fs.mkdirSync(path.join(root, 'etc/isogroup'), { recursive: true });
    fs.writeFileSync(path.join(root, 'etc/isogroup/policy.yaml'), 'version: 1\nrules:\n  - allow: { owners: [{ name: nobody }], selector: { group: 23 } }\n');
    const daemon = await startDaemon({ root, stateDir, socket });
    await assignGroup('23', { root, simulate: true, stateDir, owner: 'nobody', subject: root0 });
    await daemon.reconcile('test');
    const peer = peerScript(
      dir,
      'peer.mjs',
      `import * as fs from 'node:fs';
try {
  const r = await c.requestFds('POST', '/contexts/nobody/fds');
  const got = r.fds.map((fd) => { const s = fs.fstatSync(fd); return s.ino; });
  console.log(JSON.stringify({ ok: true, body: r.body, inodes: got }));
} catch (e) { console.log(JSON.stringify({ ok: false, code: e.code, message: e.message })); }
`,
    );
    const expectInodes = [fs.statSync(path.join(root, 'dev/vfio/vfio')).ino, fs.statSync(path.join(root, 'dev/vfio/23')).ino];
    const allowed = (await peer(socket, 65534)) as { ok: boolean; inodes: number[]; body: { order: string[] } };
    expect(allowed).toMatchObject({ ok: true, body: { order: ['container', 'group 23'] } });
    expect(allowed.inodes).toEqual(expectInodes);
    expect(await peer(socket, 65533)).toMatchObject({ ok: false, code: 'E_PERMISSION' });
    // The daemon kept its own hold throughout.
    expect(daemon.heldGroups().has('23')).toBe(true);
  });

  it('gives /dev/vfio/N to the owner and takes it back on release', async () => {
    const { root, stateDir } = setup();
    const daemon = await startDaemon({ root, stateDir });
    await assignGroup('23', { root, simulate: true, stateDir, owner: 'nobody', subject: root0 });
    await daemon.reconcile('test');
    daemon.handoff('23', 'nobody');
    const node = path.join(root, 'dev/vfio/23');
    expect(fs.statSync(node)).toMatchObject({ uid: 65534, gid: 65534 });
    expect(fs.statSync(node).mode & 0o777).toBe(0o660);
    expect(daemon.heldGroups().has('23')).toBe(false);
    await daemon.reconcile('test'); // a handed-off group is not held again
    expect(daemon.heldGroups().has('23')).toBe(false);
    await releaseGroup('23', { root, simulate: true, stateDir, subject: root0 });
    await daemon.reconcile('test');
    expect(fs.existsSync(node) ? fs.statSync(node).uid : 0).toBe(0);
    expect(daemon.status().groups).toEqual([]);
  });
});

describe("owner's view", () => {
  it("--as OWNER shows only the devices and groups of that owner's context", async () => {
    const { runCli } = await import('../../cli/main.js');
    const { root, stateDir } = setup();
    await assignGroup('22', { root, simulate: true, stateDir, owner: 'alice', subject: root0 });
    await assignGroup('23', { root, simulate: true, stateDir, owner: 'bob', subject: root0 });
    const cli = async (args: string[]) => {
      let out = '';
      const code = await runCli([...args, '--root', root, '--simulate', '--state-dir', stateDir, '--json'], {
        stdout: (s) => (out += s),
        stderr: () => undefined,
      });
      return { code, json: JSON.parse(out) };
    };
    const devices = await cli(['devices', '--as', 'alice']);
    expect(devices.code).toBe(0);
    expect(devices.json.devices.map((d: { bdf: string }) => d.bdf).sort()).toEqual(['0000:09:00.0', '0000:0a:01.0', '0000:0a:02.0', '0000:0a:03.0']);
    const groups = await cli(['groups', '--as', 'bob']);
    expect(groups.json.groups.map((g: { id: string }) => g.id)).toEqual(['23']);
    const status = await cli(['status', '--as', 'bob']);
    expect(status.json.groups.map((g: { id: string; owner: string }) => [g.id, g.owner])).toEqual([['23', 'bob']]);
    const nobody = await cli(['devices', '--as', 'carol']);
    expect(nobody.json.devices).toEqual([]);
  });

  it('a non-root peer on the socket sees only its own groups and devices', async () => {
    const { root, stateDir, socket, dir } = setup();
    const daemon = await startDaemon({ root, stateDir, socket });
    await assignGroup('22', { root, simulate: true, stateDir, owner: 'alice', subject: root0 });
    await assignGroup('23', { root, simulate: true, stateDir, owner: 'nobody', subject: root0 });
    await daemon.reconcile('test');
    const view = peerScript(
      dir,
      'view.mjs',
      `const status = await c.get('/status');
const devices = await c.get('/devices');
console.log(JSON.stringify({ groups: status.groups.map((g) => g.id), devices: devices.devices.map((d) => d.bdf) }));
`,
    );
    expect(await view(socket, 65534)).toEqual({ groups: ['23'], devices: ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2'] });
    expect(((await view(socket)) as { groups: string[] }).groups.sort()).toEqual(['22', '23']);
  });
});
