import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { assignGroup } from '../../api/assign.js';
import { generateCdi } from '../../api/kubernetes.js';
import { tryLockFile } from '../../os/flock.js';
import { fastTmpDir, simCopy } from '../helpers/sim-root.js';

// A real CDI consumer: podman (with runc; crun fails on this VM's cgroups) runs a container from a
// busybox-static root filesystem with `--device isogroup.io/group=23`, from the spec `cdi generate`
// writes. This VM has no IOMMU and no vfio module, so the fixture kernel's /dev/vfio entries (plain
// files) are replaced by character nodes with the numbers a real kernel gives them (misc 10:196 for
// the container; a dynamic major for groups): a spec whose nodes exist on this machine.

// A static busybox: the root filesystem has no libc.
const STATIC_BUSYBOX = '/bin/busybox';
// dpkg-query's own format field, not a template.
const STATUS_FORMAT = '-f=$' + '{Status}';
const installed = (pkg: string): boolean => spawnSync('dpkg-query', ['-W', STATUS_FORMAT, pkg], { encoding: 'utf8' }).stdout.includes('ok installed');
// Podman 4.3 reads specs only from /etc/cdi and /var/run/cdi; the lock keeps parallel runs from defining the same device twice.
const CDI_RUN_DIR = '/var/run/cdi';
const LOCK = '/run/lock/isogroup-podman-cdi.lock';

// The test's own setup installs what it runs (as .ci/run does), so a fresh machine runs it too.
beforeAll(() => {
  const missing = ['podman', 'runc', 'busybox-static'].filter((p) => !installed(p));
  if (missing.length === 0) return;
  execFileSync('sh', ['-c', `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${missing.join(' ')}`], {
    stdio: 'ignore',
    timeout: 540_000,
  });
}, 600_000);

const podman = (rootfs: string, args: string[], command: string) =>
  spawnSync(
    'podman',
    [
      '--runtime',
      'runc',
      '--cgroup-manager=cgroupfs',
      'run',
      '--rm',
      '--network',
      'none',
      '--ulimit',
      'nofile=1024:1024',
      '--ulimit',
      'nproc=1024:1024',
      ...args,
      '--rootfs',
      rootfs,
      '/bin/busybox',
      'sh',
      '-c',
      command,
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );

describe('podman consumes the CDI spec', () => {
  it('a container started with --device isogroup.io/group=N sees the group and container nodes (and only with it)', async () => {
    expect(process.getuid?.(), 'podman with runc needs root here').toBe(0);
    const sim = simCopy('mixed');
    await assignGroup('23', { root: sim.root, simulate: true, owner: 'kubernetes' });
    for (const [name, major, minor] of [
      ['vfio', 10, 196],
      ['23', 511, 23],
    ] as const) {
      const node = path.join(sim.root, 'dev/vfio', name);
      fs.rmSync(node);
      execFileSync('mknod', [node, 'c', String(major), String(minor)]);
    }
    const rootfs = path.join(fastTmpDir(), 'rootfs');
    for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'etc']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
    fs.copyFileSync(STATIC_BUSYBOX, path.join(rootfs, 'bin/busybox'));
    fs.chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);

    fs.mkdirSync(CDI_RUN_DIR, { recursive: true });
    const lock = tryLockFile(LOCK, { wait: true })!;
    const spec = path.join(CDI_RUN_DIR, 'isogroup.io.yaml');
    try {
      generateCdi({ root: sim.root, simulate: true }, spec);
      const seen = podman(
        rootfs,
        ['--device', 'isogroup.io/group=23'],
        'busybox stat -c "%n %F %t:%T" /dev/vfio/vfio /dev/vfio/23; busybox head -c1 /dev/vfio/23',
      );
      expect(seen.stdout.trim().split('\n'), seen.stderr).toEqual(['/dev/vfio/vfio character special file a:c4', '/dev/vfio/23 character special file 1ff:17']);
      // The device cgroup lets the container open it (no driver behind this number: ENXIO, not EPERM).
      expect(seen.stderr).toMatch(/No such device or address/);
      const without = podman(rootfs, [], 'busybox ls /dev/vfio');
      expect(without.status).not.toBe(0);
      expect(without.stderr).toMatch(/No such file or directory/);
      const unknown = podman(rootfs, ['--device', 'isogroup.io/group=99'], 'true');
      expect(unknown.status).not.toBe(0);
      expect(unknown.stderr).toMatch(/unresolvable CDI devices isogroup.io\/group=99/);
    } finally {
      fs.rmSync(spec, { force: true });
      lock.release();
    }
  }, 180_000);
});
