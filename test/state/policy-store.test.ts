import fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isIsogroupError } from '../../errors.js';
import { type DeviceFacts, evaluateDevice } from '../../groups/policy.js';
import type { Subject } from '../../model/owner.js';
import { readUserDatabase, subjectForIds } from '../../os/users.js';
import { AuditLog } from '../../state/audit.js';
import { loadPolicyFile, PolicyStore, parsePolicyText } from '../../state/policy-store.js';
import { repoRoot } from '../helpers/paths.js';
import { tmpDir } from '../helpers/tmp.js';

const readSubject = (uid: number, gid: number, root: string) => subjectForIds(uid, gid, readUserDatabase(root));

const alice: Subject = { name: 'alice', uid: 1000, gids: [1000] };
const nic: DeviceFacts = { bdf: '0000:0b:00.0', vendor: '0x8086', device: '0x10d3', class: '0x020000', kernelGroup: '23', iommu: 'dmar0' };

const YAML_OK = `# who may claim what
version: 1
rules:
  - allow:
      owners: [{ name: alice }]
      selector: { vendor: "8086", device: "10d3" }
      reason: alice's test NIC
`;

const YAML_BAD_FIELD = `rules:
  - allow:
      owners: [{ name: alice }]
      selector: { all: true }
  - deny:
      owners: [{ gid: 100 }]
      selector: { class: "03" }
  - allow:
      owners: [{ uid: 1000 }]
      selector: { vendor: "10de0" }
`;

const errorOf = (fn: () => unknown): { code: string; message: string; details: Record<string, unknown> } => {
  try {
    fn();
  } catch (error) {
    if (isIsogroupError(error)) return error;
    throw error;
  }
  throw new Error('no error');
};

describe('policy file', () => {
  it('loads YAML and JSON', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'p.yaml'), YAML_OK);
    fs.writeFileSync(path.join(dir, 'p.json'), JSON.stringify({ rules: [{ deny: { owners: [{ any: true }], selector: { class: '0c03' } } }] }));
    const y = loadPolicyFile(path.join(dir, 'p.yaml'));
    expect(y.rules).toHaveLength(1);
    expect(evaluateDevice(y, alice, nic)).toMatchObject({ allowed: true, rule: 0 });
    expect(evaluateDevice(y, alice, nic).reason).toContain("alice's test NIC");
    const j = loadPolicyFile(path.join(dir, 'p.json'));
    expect(j.rules[0]).toMatchObject({ effect: 'deny', selector: { class: '0c03' } });
    // An empty file is an empty policy: root only.
    fs.writeFileSync(path.join(dir, 'empty.yaml'), '# nothing yet\n');
    expect(loadPolicyFile(path.join(dir, 'empty.yaml')).rules).toEqual([]);
  });

  it("the README's example policy parses and means what the README says", () => {
    const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
    const example = /## Policy[\s\S]*?```yaml\n([\s\S]*?)```/.exec(readme)![1]!;
    const p = parsePolicyText(example, 'README.md');
    expect(p.rules.map((r) => r.effect)).toEqual(['allow', 'deny']);
    expect(evaluateDevice(p, alice, nic)).toMatchObject({ allowed: true, rule: 0 });
    expect(evaluateDevice(p, { name: 'dave', uid: 1003, gids: [990] }, nic)).toMatchObject({ allowed: true, rule: 0 });
    expect(evaluateDevice(p, alice, { ...nic, class: '0x010802' })).toMatchObject({ allowed: false, rule: 1 });
    expect(evaluateDevice(p, { name: 'root', uid: 0, gids: [0] }, { ...nic, class: '0x010601', kernelGroup: '15' })).toMatchObject({ allowed: false, rule: 1 });
  });

  it('errors point at the field, the line, or the file', () => {
    const e = errorOf(() => parsePolicyText(YAML_BAD_FIELD, '/etc/isogroup/policy.yaml'));
    expect(e.code).toBe('E_POLICY_INVALID');
    expect(e.message).toBe('/etc/isogroup/policy.yaml: rules[2].allow.selector.vendor: expected 4 hex digits');
    const y = errorOf(() => parsePolicyText('rules:\n  - allow: {owners: [\n', 'p.yaml'));
    expect(y.message).toMatch(/^p\.yaml: not valid YAML: line \d+ col \d+/);
    const dup = errorOf(() => parsePolicyText('rules: []\nrules: []\n', 'p.yaml'));
    expect(dup.message).toMatch(/not valid YAML.*unique/i);
    expect(errorOf(() => parsePolicyText('{"rules": [', 'p.json')).message).toMatch(/^p\.json: not JSON/);
    expect(errorOf(() => loadPolicyFile('/nonexistent/isogroup-policy.yaml')).message).toContain('does not exist');
    const dir = tmpDir();
    expect(errorOf(() => loadPolicyFile(dir)).message).toContain('is not a regular file');
  });
});

describe('policy store and reload', () => {
  it('no file or a missing file: default policy (root only)', () => {
    expect(PolicyStore.open(null).policy.rules).toEqual([]);
    const s = PolicyStore.open(path.join(tmpDir(), 'policy.yaml'));
    expect(s.policy.rules).toEqual([]);
    expect(evaluateDevice(s.policy, alice, nic).allowed).toBe(false);
    expect(() => PolicyStore.open('/nonexistent/p.yaml', { missingOk: false })).toThrow(expect.objectContaining({ code: 'E_POLICY_INVALID' }));
  });

  it('a malformed policy at start is an error', () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'p.yaml'), YAML_BAD_FIELD);
    expect(() => PolicyStore.open(path.join(dir, 'p.yaml'))).toThrow(/rules\[2\]\.allow\.selector\.vendor/);
  });

  it('reload picks up a good file, rejects a malformed one and keeps the old, and audits both', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'policy.yaml');
    fs.writeFileSync(file, YAML_OK);
    const audit = new AuditLog(dir);
    const store = PolicyStore.open(file);
    const first = store.policy;
    expect(evaluateDevice(store.policy, alice, nic).allowed).toBe(true);

    // Malformed: rejected, the old policy stays in force, the error is returned.
    fs.writeFileSync(file, YAML_BAD_FIELD);
    const bad = store.reload({ audit });
    expect(bad.ok).toBe(false);
    if (!bad.ok) {
      expect(bad.error.code).toBe('E_POLICY_INVALID');
      expect(bad.error.message).toContain('rules[2].allow.selector.vendor: expected 4 hex digits');
    }
    expect(store.policy).toBe(first);
    expect(evaluateDevice(store.policy, alice, nic).allowed).toBe(true);

    // A vanished file is rejected the same way (an editor mid-save must not change decisions).
    fs.rmSync(file);
    expect(store.reload().ok).toBe(false);
    expect(store.policy).toBe(first);

    // Good: replaces it.
    fs.writeFileSync(file, 'rules:\n  - deny:\n      owners: [{ name: alice }]\n      selector: { all: true }\n');
    const good = store.reload({ audit });
    expect(good.ok).toBe(true);
    expect(evaluateDevice(store.policy, alice, nic)).toMatchObject({ allowed: false, rule: 0, effect: 'deny' });

    const { records } = audit.read();
    expect(records.map((r) => [r.action, r.allowed])).toEqual([
      ['reload-policy', false],
      ['reload-policy', true],
    ]);
    expect(records[0]!.reason).toContain('previous policy kept');
  });
});

describe('subjects from peer credentials', () => {
  it('names the uid and collects its groups from ROOT/etc/passwd and ROOT/etc/group', () => {
    const root = tmpDir();
    fs.mkdirSync(path.join(root, 'etc'));
    fs.writeFileSync(
      path.join(root, 'etc/passwd'),
      'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n',
    );
    fs.writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\nalice:x:1000:\nkvm:x:44:alice,carol\nvfio:x:990:bob, alice\nbad line\n');
    expect(readSubject(1000, 1000, root)).toEqual({ name: 'alice', uid: 1000, gids: [44, 990, 1000] });
    expect(readSubject(1001, 1001, root)).toEqual({ name: 'bob', uid: 1001, gids: [990, 1001] });
    // Unknown uid: named by number; gid rules still apply.
    expect(readSubject(4242, 44, root)).toEqual({ name: '4242', uid: 4242, gids: [44] });
    expect(readSubject(7, 7, path.join(root, 'nothing-here'))).toEqual({ name: '7', uid: 7, gids: [7] });
  });
});
