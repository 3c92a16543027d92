// The fixture kernel's uevents: watches a fixture root's device and driver links and turns changes
// into hints (inotify does not fire on the real /sys, so this serves fixture roots and --simulate only).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { type FSWatcher, watch } from 'chokidar';
import { IsogroupError } from '../errors.js';
import { isBdf } from '../model/bdf.js';
import type { HotplugHint, HotplugSource } from '../os/uevent.js';
import { PCI_DEVICES, PCI_DRIVERS, pciDevice, pciDriver } from '../sysfs/paths.js';

export interface FixtureWatchOptions {
  /** More root-relative paths to watch (any change there is a `change` hint). */
  extraPaths?: string[];
  /**
   * 'chokidar' (default): chokidar on the tree. It re-reads a directory on each change (throttled to
   * once a second), so a hint can lag by a second or more in a busy directory.
   * 'fs-watch': node:fs.watch (inotify) per directory; the kernel names the entry that changed, so a
   * hint costs one lstat and arrives within milliseconds even in a 10,000-device tree.
   */
  engine?: 'chokidar' | 'fs-watch';
  /** chokidar polling (for filesystems without inotify). */
  usePolling?: boolean;
}

/**
 * Watches a fixture root: sys/bus/pci/devices/<bdf> links (add/remove) and
 * sys/bus/pci/drivers/<driver>/<bdf> links (bind/unbind). Wait for ready() before changing the tree
 * if every change must be seen.
 */
export class FixtureWatchSource implements HotplugSource {
  readonly name = 'fixture' as const;
  private watcher: FSWatcher | null = null;
  private readonly fsWatchers = new Map<string, fs.FSWatcher>();
  private readyPromise: Promise<void> | null = null;
  private closed = false;
  private started = false;

  constructor(
    readonly root: string,
    private readonly options: FixtureWatchOptions = {},
  ) {}

  start(onHint: (hint: HotplugHint) => void): void {
    if (this.started || this.closed) throw new IsogroupError('E_INTERNAL', 'fixture watch source already started or closed', {});
    this.started = true;
    if ((this.options.engine ?? 'chokidar') === 'fs-watch') this.startFsWatch(onHint);
    else this.startChokidar(onHint);
  }

  private startChokidar(onHint: (hint: HotplugHint) => void): void {
    const devices = path.join(this.root, PCI_DEVICES);
    const drivers = path.join(this.root, PCI_DRIVERS);
    const extra = (this.options.extraPaths ?? []).map((p) => path.join(this.root, p));
    const watcher = watch([devices, drivers, ...extra], {
      ignoreInitial: true,
      followSymlinks: false,
      depth: 1,
      usePolling: this.options.usePolling ?? false,
      interval: 50,
    });
    this.watcher = watcher;
    this.readyPromise = new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
    const rel = (p: string): string => path.relative(this.root, p);
    watcher.on('all', (event, file) => {
      if (this.closed) return;
      const hint = classify(event, file, devices, drivers);
      if (hint) onHint({ ...hint, path: rel(file) });
      else if (extra.some((e) => file === e || file.startsWith(`${e}${path.sep}`))) onHint({ source: 'fixture', action: 'change', path: rel(file) });
    });
    watcher.on('error', (error) => {
      if (!this.closed) onHint({ source: 'fixture', action: 'rescan', reason: `watch error: ${(error as Error).message}` });
    });
  }

  // One inotify watch per directory: devices/, drivers/, drivers/<d>/ (added as drivers appear), extras.
  private startFsWatch(onHint: (hint: HotplugHint) => void): void {
    const exists = (rel: string): boolean => {
      try {
        fs.lstatSync(path.join(this.root, rel));
        return true;
      } catch {
        return false;
      }
    };
    const watchDir = (rel: string, onEntry: (name: string | null) => void): void => {
      if (this.closed || this.fsWatchers.has(rel)) return;
      try {
        const w = fs.watch(path.join(this.root, rel), { persistent: false }, (_event, name) => {
          if (!this.closed) onEntry(name === null ? null : String(name));
        });
        w.on('error', (error) => {
          if (!this.closed) onHint({ source: 'fixture', action: 'rescan', reason: `watch error on ${rel}: ${error.message}` });
        });
        this.fsWatchers.set(rel, w);
      } catch (error) {
        onHint({ source: 'fixture', action: 'rescan', reason: `cannot watch ${rel}: ${(error as Error).message}` });
      }
    };
    const overflow = (rel: string): void => onHint({ source: 'fixture', action: 'rescan', reason: `events lost on ${rel}` });
    const watchDriver = (driver: string): void => {
      const rel = pciDriver(driver);
      watchDir(rel, (name) => {
        if (name === null) return overflow(rel);
        if (!isBdf(name)) return;
        const here = exists(`${rel}/${name}`);
        onHint({ source: 'fixture', action: here ? 'bind' : 'unbind', bdf: name, driver, path: `${rel}/${name}` });
      });
    };
    watchDir(PCI_DEVICES, (name) => {
      if (name === null) return overflow(PCI_DEVICES);
      if (!isBdf(name)) return;
      const rel = pciDevice(name);
      onHint({ source: 'fixture', action: exists(rel) ? 'add' : 'remove', bdf: name, path: rel });
    });
    watchDir(PCI_DRIVERS, (name) => {
      if (name === null) return overflow(PCI_DRIVERS);
      if (exists(pciDriver(name))) watchDriver(name);
    });
    try {
      for (const d of fs.readdirSync(path.join(this.root, PCI_DRIVERS))) watchDriver(d);
    } catch {
      // no drivers directory yet
    }
    for (const extra of this.options.extraPaths ?? []) {
      watchDir(extra, (name) => onHint({ source: 'fixture', action: 'change', path: name === null ? extra : `${extra}/${name}` }));
    }
    this.readyPromise = Promise.resolve();
  }

  /** Resolves once the watches are in place. */
  ready(): Promise<void> {
    return this.readyPromise ?? Promise.reject(new IsogroupError('E_INTERNAL', 'fixture watch source not started', {}));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.fsWatchers.values()) w.close();
    this.fsWatchers.clear();
    await this.watcher?.close();
  }
}

// Map a chokidar event to a hint: a device link, or a driver's device link.
const classify = (event: string, file: string, devices: string, drivers: string): HotplugHint | null => {
  const added = event === 'add' || event === 'addDir';
  const removed = event === 'unlink' || event === 'unlinkDir';
  if (path.dirname(file) === devices) {
    const bdf = path.basename(file);
    if (!isBdf(bdf)) return null;
    if (added) return { source: 'fixture', action: 'add', bdf };
    if (removed) return { source: 'fixture', action: 'remove', bdf };
    return { source: 'fixture', action: 'change', bdf };
  }
  if (path.dirname(path.dirname(file)) === drivers) {
    const bdf = path.basename(file);
    const driver = path.basename(path.dirname(file));
    if (!isBdf(bdf)) return null;
    if (added) return { source: 'fixture', action: 'bind', bdf, driver };
    if (removed) return { source: 'fixture', action: 'unbind', bdf, driver };
  }
  return null;
};
