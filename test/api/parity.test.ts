import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { assignGroup } from '../../api/assign.js';
import { runCli } from '../../cli/main.js';
import { GuardDaemon } from '../../daemon/daemon.js';
import { tryLockFile } from '../../os/flock.js';
import { driverState, simCopy } from '../helpers/sim-root.js';

// The daemon is the same API behind a socket: the same claim on the same capture, once run by the CLI
// directly and once by a running daemon for the CLI, gives the same result, journal, audit trail and
// exit status, field by field. Only what names the path (via, held) and the clock may differ.

const G23 = ['0000:0b:00.0', '0000:0b:00.1', '0000:0b:00.2'];
const daemons: GuardDaemon[] = [];
afterEach(async () => {
  await Promise.all(daemons.splice(0).map((d) => d.close()));
});

interface Scenario {
  name: string;
  args: string[];
  code: string | null;
  /** Prepare the root (and its state) before the claim. */
  setup?: (root: string, stateDir: string) => Promise<void>;
  /** Hold something for the duration of the claim (released after). */
  during?: (root: string, stateDir: string) => () => void;
  /** A warning both paths must print (the result carries it too, compared with the rest). */
  warns?: string;
}

const SCENARIOS: Scenario[] = [
  { name: 'an allowed claim', args: ['assign', '23', '--to', 'alice'], code: null },
  {
    name: 'a claim of a group that cannot be reset alone',
    args: ['assign', '3', '--to', 'alice'],
    code: null,
    warns: 'warning: group 3 cannot be reset alone: 00:02.1 cannot be reset',
  },
  {
    name: 'a claim the policy file under the root denies',
    args: ['assign', '0000:0b:00.1', '--to', 'alice'],
    code: 'E_POLICY_DENIED',
    setup: async (root) => {
      fs.mkdirSync(path.join(root, 'etc/isogroup'), { recursive: true });
      fs.writeFileSync(
        path.join(root, 'etc/isogroup/policy.yaml'),
        'version: 1\nrules:\n  - deny: { owners: [{ any: true }], selector: { group: 23 }, reason: lab NICs stay }\n',
      );
    },
  },
  {
    name: "a second owner's claim",
    args: ['assign', '23', '--to', 'bob'],
    code: 'E_CONTEXT',
    setup: async (root, stateDir) => {
      await assignGroup('23', { root, simulate: true, stateDir, owner: 'alice' });
    },
  },
  {
    name: 'a claim while another operation holds the state',
    args: ['assign', '22', '--to', 'alice'],
    code: 'E_GROUP_BUSY',
    during: (_root, stateDir) => {
      fs.mkdirSync(stateDir, { recursive: true });
      const lock = tryLockFile(path.join(stateDir, 'lock'))!;
      return () => lock.release();
    },
  },
];

const readLines = (file: string): string[] => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);

// Paths of one copy, and times, made comparable with the other run's.
const normalize = (value: unknown, root: string): unknown =>
  JSON.parse(
    JSON.stringify(value)
      .split(root)
      .join('<ROOT>')
      .replace(/"(time|since)":"[^"]+"/g, '"$1":"<TIME>"'),
  );

const claim = async (scenario: Scenario, withDaemon: boolean) => {
  const sim = simCopy('mixed');
  const root = sim.root;
  const stateDir = path.join(root, '.isogroup-sim/state');
  await scenario.setup?.(root, stateDir);
  if (withDaemon) daemons.push(await GuardDaemon.start({ root, simulate: true, rescanMs: 0, sources: [] }));
  const auditBefore = readLines(path.join(stateDir, 'audit.jsonl')).length;
  const journalBefore = fs.existsSync(path.join(stateDir, 'journal.json')) ? fs.readFileSync(path.join(stateDir, 'journal.json'), 'utf8') : null;
  const release = scenario.during?.(root, stateDir);
  let stdout = '';
  let stderr = '';
  let exit: number;
  try {
    exit = await runCli([...scenario.args, '--root', root, '--simulate', '--json'], { stdout: (s) => (stdout += s), stderr: (s) => (stderr += s) });
  } finally {
    release?.();
  }
  const out = JSON.parse(stdout) as Record<string, unknown> & { error?: { details: Record<string, unknown> } };
  const via = out.via ?? out.error?.details.via ?? 'direct';
  // What names the path taken, not the result.
  delete out.via;
  delete out.held;
  if (out.error) {
    delete out.error.details.via;
    delete out.error.details.status;
  }
  const journalAfter = fs.existsSync(path.join(stateDir, 'journal.json')) ? fs.readFileSync(path.join(stateDir, 'journal.json'), 'utf8') : null;
  const audit = readLines(path.join(stateDir, 'audit.jsonl'))
    .slice(auditBefore)
    .map((l) => JSON.parse(l) as { action: string })
    .filter((r) => r.action !== 'daemon-start');
  return {
    via,
    stderr,
    compared: normalize(
      {
        exit,
        result: out,
        journalChanged: journalAfter !== journalBefore,
        journal: journalAfter === null ? null : JSON.parse(journalAfter),
        audit,
        drivers: driverState(sim, [...G23, '0000:0a:01.0']),
      },
      root,
    ),
  };
};

describe('the same claim with and without the daemon', () => {
  it.each(SCENARIOS)('$name', async (scenario) => {
    const direct = await claim(scenario, false);
    const daemon = await claim(scenario, true);
    expect(direct.via).toBe('direct');
    expect(daemon.via).toBe('daemon');
    expect(daemon.compared).toEqual(direct.compared);
    if (scenario.warns) {
      expect(direct.stderr).toContain(scenario.warns);
      expect(daemon.stderr).toContain(scenario.warns);
    }
    const c = direct.compared as { exit: number; result: { error?: { code: string } }; audit: { allowed: boolean }[] };
    if (scenario.code === null) {
      expect(c.exit).toBe(0);
      expect(c.audit.map((r) => r.allowed)).toEqual([true, true]);
    } else {
      expect(c.exit).toBe(1);
      expect(c.result.error?.code).toBe(scenario.code);
    }
  });
});
