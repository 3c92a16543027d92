import * as fs from 'node:fs';
import * as path from 'node:path';
import { threadId } from 'node:worker_threads';
import { IsogroupError } from '../errors.js';
import { withFileLock } from '../os/flock.js';

// The fixture kernel's own memory, kept inside the fixture root so that separate processes (daemon,
// CLI, `sim`, tests) share one simulated kernel. Every change happens under an flock on SIM_DIR/lock.

export const SIM_DIR = '.isogroup-sim';

export interface SimHold {
  pid: number;
  token: string;
  /** Container id once VFIO_GROUP_SET_CONTAINER succeeded (the group's DMA owner is claimed). */
  container: string | null;
}

export interface SimContainer {
  pid: number;
  groups: string[];
  iommu: 'type1' | 'type1v2' | null;
}

export interface SimFailure {
  /** Fail the write whose global sequence number is `at`. */
  at?: number;
  /** Fail writes to a path ending in this text. */
  file?: string;
  errno: string;
  /** Keep failing (default: one shot). */
  persistent?: boolean;
}

export interface SimPendingAdd {
  bridge: string;
  bdf: string;
  vendor: number;
  device: number;
  classCode: number;
  driver: string | null;
}

export interface SimState {
  version: 1;
  writeCount: number;
  /** Each device's default host driver: what a probe without driver_override binds (null: none). */
  defaultDrivers: Record<string, string | null>;
  /** Default host driver of the VFs of a PF. */
  vfDrivers: Record<string, string | null>;
  holds: Record<string, SimHold>;
  containers: Record<string, SimContainer>;
  failures: SimFailure[];
  pending: SimPendingAdd[];
  nextVfioDev: number;
}

export const emptyState = (): SimState => ({
  version: 1,
  writeCount: 0,
  defaultDrivers: {},
  vfDrivers: {},
  holds: {},
  containers: {},
  failures: [],
  pending: [],
  nextVfioDev: 0,
});

export const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
};

export class SimStateStore {
  readonly dir: string;
  readonly file: string;
  readonly lockFile: string;

  constructor(root: string) {
    this.dir = path.join(root, SIM_DIR);
    this.file = path.join(this.dir, 'state.json');
    this.lockFile = path.join(this.dir, 'lock');
  }

  exists(): boolean {
    return fs.existsSync(this.file);
  }

  // The last state this handle read or wrote, with its exact text. Under the lock, a file whose text
  // equals `cachedText` holds this very state, so the parse (the dearest part of a transaction) is
  // skipped; any other writer (thread or process) changes the text and forces a fresh parse.
  // Transaction callbacks return copies, never references into the state, so nothing outside a
  // transaction can change the cached object.
  private cached: SimState | null = null;
  private cachedText: string | null = null;

  private readText(): string | null {
    try {
      return fs.readFileSync(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
  }

  private load(): SimState {
    const text = this.readText();
    if (text === null) {
      this.cached = null;
      this.cachedText = null;
      return emptyState();
    }
    if (this.cached && text === this.cachedText) return this.cached;
    try {
      const st = JSON.parse(text) as SimState;
      if (st.version !== 1) throw new Error(`version ${String(st.version)}`);
      this.cached = { ...emptyState(), ...st };
      this.cachedText = text;
      return this.cached;
    } catch (error) {
      this.cached = null;
      this.cachedText = null;
      throw new IsogroupError(
        'E_INVALID_INPUT',
        `fixture kernel state ${this.file} is corrupt: ${(error as Error).message}`,
        { file: this.file },
        { cause: error },
      );
    }
  }

  private save(text: string): void {
    const tmp = `${this.file}.tmp-${process.pid}-${threadId}`;
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, this.file);
  }

  /** Read-modify-write the state under the lock. Holds of dead processes vanish first, as their fds would. */
  transact<T>(fn: (st: SimState) => T): T {
    fs.mkdirSync(this.dir, { recursive: true });
    return withFileLock(this.lockFile, () => {
      const st = this.load();
      const before = this.cachedText;
      pruneDead(st);
      let outcome: { ok: true; value: T } | { ok: false; error: unknown };
      try {
        outcome = { ok: true, value: fn(st) };
      } catch (error) {
        outcome = { ok: false, error };
      }
      // Saved even when fn threw: a failed write still counts, a one-shot failure is used up. A failed
      // save is the error then (the kernel's memory would otherwise be lost).
      const after = JSON.stringify(st);
      if (after !== before) {
        try {
          this.save(after);
          this.cached = st;
          this.cachedText = after;
        } catch (error) {
          this.cached = null;
          this.cachedText = null;
          throw error;
        }
      }
      if (!outcome.ok) throw outcome.error;
      return outcome.value;
    });
  }
}

const pruneDead = (st: SimState): void => {
  // One kill(pid, 0) per distinct process (usually one daemon holds every group).
  const seen = new Map<number, boolean>();
  const alive = (pid: number): boolean => {
    let a = seen.get(pid);
    if (a === undefined) seen.set(pid, (a = pidAlive(pid)));
    return a;
  };
  for (const [id, c] of Object.entries(st.containers)) if (!alive(c.pid)) delete st.containers[id];
  for (const [group, h] of Object.entries(st.holds)) {
    if (!alive(h.pid)) delete st.holds[group];
    else if (h.container !== null && !st.containers[h.container]) h.container = null;
  }
};
