import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { HotplugHint } from '../../os/uevent.js';
import { FixtureWatchSource } from '../../sim/watch.js';
import { tmpDir } from '../helpers/tmp.js';

// Watchers start slowly on a loaded 2-core machine: wait generously (no fixed sleeps).
const poll = <T>(fn: () => T) => expect.poll(fn, { timeout: 15_000 });

describe.each(['chokidar', 'fs-watch'] as const)('FixtureWatchSource (%s on a fixture root)', (engine) => {
  it('turns device links and driver links into add/bind/unbind/remove hints', async () => {
    const root = tmpDir();
    const devDir = path.join(root, 'sys/devices/pci0000:00/0000:00:1e.0/0000:0a:04.0');
    fs.mkdirSync(devDir, { recursive: true });
    fs.mkdirSync(path.join(root, 'sys/bus/pci/devices'), { recursive: true });
    fs.mkdirSync(path.join(root, 'sys/bus/pci/drivers/e1000'), { recursive: true });
    const source = new FixtureWatchSource(root, { engine });
    onTestFinished(() => source.close());
    const hints: HotplugHint[] = [];
    source.start((h) => hints.push(h));
    await source.ready();
    const seen = () => hints.map((h) => [h.action, h.bdf, h.driver ?? null]);

    fs.symlinkSync('../../../devices/pci0000:00/0000:00:1e.0/0000:0a:04.0', path.join(root, 'sys/bus/pci/devices/0000:0a:04.0'));
    await poll(seen).toEqual([['add', '0000:0a:04.0', null]]);
    fs.symlinkSync('../../../../devices/pci0000:00/0000:00:1e.0/0000:0a:04.0', path.join(root, 'sys/bus/pci/drivers/e1000/0000:0a:04.0'));
    await poll(seen).toEqual([
      ['add', '0000:0a:04.0', null],
      ['bind', '0000:0a:04.0', 'e1000'],
    ]);
    fs.unlinkSync(path.join(root, 'sys/bus/pci/drivers/e1000/0000:0a:04.0'));
    fs.unlinkSync(path.join(root, 'sys/bus/pci/devices/0000:0a:04.0'));
    await poll(() => seen().slice(2).sort()).toEqual([
      ['remove', '0000:0a:04.0', null],
      ['unbind', '0000:0a:04.0', 'e1000'],
    ]);
    // Files in a driver directory that are not device links (bind, unbind, new_id) are no hints.
    fs.writeFileSync(path.join(root, 'sys/bus/pci/drivers/e1000/unbind'), '');
    fs.symlinkSync('../../../devices/pci0000:00/0000:00:1e.0/0000:0a:04.0', path.join(root, 'sys/bus/pci/devices/0000:0a:05.0'));
    await poll(() => hints.length).toBe(5);
    expect(hints[4]).toMatchObject({ action: 'add', bdf: '0000:0a:05.0', path: 'sys/bus/pci/devices/0000:0a:05.0' });
    // A driver directory that appears later (first bind of a new driver) is watched too.
    fs.mkdirSync(path.join(root, 'sys/bus/pci/drivers/vfio-pci'));
    await poll(async () => {
      // Re-create the link until the new directory's watch is in place (events are hints; no sleeps).
      const link = path.join(root, 'sys/bus/pci/drivers/vfio-pci/0000:0a:05.0');
      if (!hints.some((h) => h.driver === 'vfio-pci')) {
        fs.rmSync(link, { force: true });
        fs.symlinkSync('../../../../devices/pci0000:00/0000:00:1e.0/0000:0a:04.0', link);
      }
      return hints.some((h) => h.action === 'bind' && h.driver === 'vfio-pci' && h.bdf === '0000:0a:05.0');
    }).toBe(true);
  });
});
