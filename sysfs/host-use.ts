import * as path from 'node:path';
import { execaSync } from 'execa';
import type { Bdf } from '../model/bdf.js';
import { isBdf } from '../model/bdf.js';
import type { HostSnapshot } from '../model/device.js';
import { BLOCK, block, GRAPHICS_CLASS, netInterfaceFile, PROC_MOUNTS, PROC_NET_IF_INET6, PROC_NET_IPV6_ROUTE, PROC_NET_ROUTE, PROC_SWAPS } from './paths.js';
import { linkTargetRel, type SysfsPort } from './port.js';

// Is the host using a device? Everything is read from files under the root (proc/mounts, proc/swaps,
// proc/net/*, sys/class/net, sys/block/*/holders, sys/class/graphics), so fixtures can supply them
// and the live host answers from its own /proc and /sys (plus `ip -j addr` for IPv4 addresses).

export type HostUseKind = 'mount' | 'swap' | 'holder' | 'net' | 'boot-vga' | 'framebuffer' | 'root-fs';

export interface HostUse {
  bdf: Bdf;
  kind: HostUseKind;
  /** What on the device is in use (/dev/sda2 mounted at /home, eth0 ...). */
  what: string;
  /** What the host would lose. */
  loss: string;
  /** false for the root filesystem: refused even with --force. */
  forceable: boolean;
}

const readOr = (port: SysfsPort, rel: string): string | null => {
  try {
    return port.readText(rel);
  } catch {
    return null;
  }
};

const listNames = (port: SysfsPort, rel: string): string[] => {
  try {
    return port.list(rel).map((e) => e.name);
  } catch {
    return [];
  }
};

interface MountLine {
  source: string;
  target: string;
  fstype: string;
  options: string;
}

// /proc/mounts escapes spaces and tabs as octal.
const unescapeMount = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

const parseMounts = (text: string | null): MountLine[] =>
  (text ?? '')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 3)
    .map((f) => ({ source: unescapeMount(f[0]!), target: unescapeMount(f[1]!), fstype: f[2]!, options: f[3] ?? '' }));

/** Non-PCI children of a device dir whose name matches, not descending into child PCI functions. */
const findChildren = (port: SysfsPort, dir: string, depth: number, visit: (rel: string, name: string) => void): void => {
  if (depth < 0) return;
  let entries: ReturnType<SysfsPort['list']>;
  try {
    entries = port.list(dir);
  } catch {
    return;
  }
  for (const e of entries) {
    if (e.kind !== 'dir' || isBdf(e.name)) continue;
    const rel = `${dir}/${e.name}`;
    visit(rel, e.name);
    findChildren(port, rel, depth - 1, visit);
  }
};

/** Block devices (disks) that sit on a PCI function. */
const disksOf = (port: SysfsPort, devDir: string): string[] => {
  const out = new Set<string>();
  findChildren(port, devDir, 6, (rel, name) => {
    if (name === 'block') for (const d of listNames(port, rel)) out.add(d);
    else if (port.kind(`${rel}/subsystem`) === 'link') {
      const t = linkTargetRel(`${rel}/subsystem`, port.readLink(`${rel}/subsystem`));
      if (t !== null && path.posix.basename(t) === 'block') out.add(name);
    }
  });
  return [...out];
};

/** A disk and its partitions. */
const withPartitions = (port: SysfsPort, disk: string): string[] => {
  const parts = listNames(port, block(disk)).filter((n) => n.startsWith(disk) && port.exists(`${block(disk)}/${n}/partition`));
  return [disk, ...parts];
};

/** Every name (/dev/X) a mount source may use for these block devices, following holders (dm, md, LVM). */
const expandHolders = (port: SysfsPort, names: string[]): { names: Set<string>; holders: { dev: string; holder: string }[] } => {
  const all = new Set<string>();
  const holders: { dev: string; holder: string }[] = [];
  const stack = [...names];
  while (stack.length) {
    const n = stack.pop()!;
    if (all.has(n)) continue;
    all.add(n);
    const devDir = port.exists(block(n)) ? block(n) : findPartitionDir(port, n);
    for (const h of devDir ? listNames(port, `${devDir}/holders`) : []) {
      holders.push({ dev: n, holder: h });
      stack.push(h);
    }
    const dmName = readOr(port, `${block(n)}/dm/name`)?.trim();
    if (dmName) all.add(`mapper/${dmName}`);
  }
  return { names: all, holders };
};

const findPartitionDir = (port: SysfsPort, part: string): string | null => {
  for (const disk of listNames(port, BLOCK)) if (port.exists(`${block(disk)}/${part}/partition`)) return `${block(disk)}/${part}`;
  return null;
};

const deviceNameOf = (source: string): string | null => {
  if (!source.startsWith('/dev/')) return null;
  const rest = source.slice(5);
  // LVM's /dev/VG/LV is /dev/mapper/VG-LV (dashes inside names doubled).
  const lvm = /^([^/]+)\/([^/]+)$/.exec(rest);
  if (lvm && lvm[1] !== 'mapper' && lvm[1] !== 'disk') return `mapper/${lvm[1]!.replace(/-/g, '--')}-${lvm[2]!.replace(/-/g, '--')}`;
  return rest;
};

const netInterfacesOf = (port: SysfsPort, devDir: string): string[] => {
  const out = new Set<string>();
  findChildren(port, devDir, 3, (rel, name) => {
    if (name === 'net') for (const i of listNames(port, rel)) out.add(i);
  });
  return [...out];
};

const routesOf = (port: SysfsPort, iface: string): string[] => {
  const out: string[] = [];
  const v4 = readOr(port, PROC_NET_ROUTE) ?? '';
  for (const line of v4.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[0] !== iface || f.length < 3) continue;
    const dest = f[1]!;
    const ip = dest.length === 8 ? [6, 4, 2, 0].map((i) => parseInt(dest.slice(i, i + 2), 16)).join('.') : dest;
    out.push(ip === '0.0.0.0' ? 'default route' : `route to ${ip}`);
  }
  const v6 = readOr(port, PROC_NET_IPV6_ROUTE) ?? '';
  for (const line of v6.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 10 && f[9] === iface && !f[0]!.startsWith('fe80')) out.push(`IPv6 route ${f[0]}/${parseInt(f[1]!, 16)}`);
  }
  return out;
};

const addressesOf = (port: SysfsPort, iface: string): string[] => {
  const out: string[] = [];
  const v6 = readOr(port, PROC_NET_IF_INET6) ?? '';
  for (const line of v6.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 6 && f[5] === iface && !f[0]!.startsWith('fe80')) out.push(`IPv6 address ${f[0]!.match(/.{1,4}/g)!.join(':')}`);
  }
  // IPv4 addresses have no per-interface file in /proc: on the live host ask iproute2.
  if (port.root === '/') {
    try {
      const r = execaSync('ip', ['-j', '-4', 'addr', 'show', 'dev', iface], { timeout: 5000 });
      const parsed = JSON.parse(r.stdout) as { addr_info?: { local?: string; prefixlen?: number }[] }[];
      for (const a of parsed.flatMap((x) => x.addr_info ?? [])) if (a.local) out.push(`address ${a.local}/${a.prefixlen ?? 32}`);
    } catch {
      /* no iproute2: routes still tell */
    }
  }
  return out;
};

const interfaceUp = (port: SysfsPort, iface: string): boolean => {
  const flags = readOr(port, netInterfaceFile(iface, 'flags'))?.trim();
  if (flags && /^0x[0-9a-f]+$/i.test(flags)) return (parseInt(flags, 16) & 0x1) !== 0;
  return readOr(port, netInterfaceFile(iface, 'operstate'))?.trim() === 'up';
};

/** Framebuffers (console) whose device is this PCI function. */
const framebuffersOf = (port: SysfsPort, devDir: string): string[] =>
  listNames(port, GRAPHICS_CLASS).filter((fb) => {
    const rel = `${GRAPHICS_CLASS}/${fb}/device`;
    if (port.kind(rel) !== 'link') return false;
    // The class link points at the fb dir under the device; its `device` link points at the device.
    const t = linkTargetRel(rel, port.readLink(rel));
    if (t === devDir) return true;
    const classLink = `${GRAPHICS_CLASS}/${fb}`;
    if (port.kind(classLink) !== 'link') return false;
    const fbDir = linkTargetRel(classLink, port.readLink(classLink));
    return fbDir !== null && linkTargetRel(`${fbDir}/device`, port.readLink(rel)) === devDir;
  });

/** 9p shares on virtio children (mount_tag), e.g. a VM's root filesystem shared from its host. */
const ninePTagsOf = (port: SysfsPort, devDir: string): string[] => {
  const out: string[] = [];
  findChildren(port, devDir, 2, (rel) => {
    const tag = readOr(port, `${rel}/mount_tag`);
    if (tag) out.push(tag.replace(/\0/g, '').trim());
  });
  return out;
};

/** What the host uses on each of these devices. */
export const findHostUse = (port: SysfsPort, snap: HostSnapshot, devices: Bdf[]): HostUse[] => {
  const mounts = parseMounts(readOr(port, PROC_MOUNTS));
  const swaps = (readOr(port, PROC_SWAPS) ?? '')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((s): s is string => !!s);
  const rootMount = [...mounts].reverse().find((m) => m.target === '/');
  const uses: HostUse[] = [];
  for (const bdf of devices) {
    const d = snap.devices.get(bdf);
    if (!d) continue;
    const dir = d.sysfsPath;
    const add = (kind: HostUseKind, what: string, loss: string): void => {
      uses.push({ bdf, kind, what, loss, forceable: kind !== 'root-fs' });
    };

    const disks = disksOf(port, dir);
    if (disks.length) {
      const direct = disks.flatMap((disk) => withPartitions(port, disk));
      const { names, holders } = expandHolders(port, direct);
      const isOurs = (source: string): boolean => {
        const n = deviceNameOf(source);
        return n !== null && names.has(n);
      };
      for (const m of mounts) {
        if (!isOurs(m.source)) continue;
        if (m.target === '/')
          add('root-fs', `${m.source} is the root filesystem`, 'the host itself: the root filesystem would vanish under the running system');
        else add('mount', `${m.source} is mounted at ${m.target}`, `access to ${m.target} and writes not yet flushed`);
      }
      // A root on overlay whose lower/upper layers live on our disks counts as the root too.
      if (rootMount && rootMount.fstype === 'overlay') {
        for (const m of mounts) {
          if (isOurs(m.source) && m.target !== '/' && rootMount.options.includes(`${m.target}/`))
            add('root-fs', `the root overlay uses ${m.target} on ${m.source}`, 'the host itself: the root filesystem would vanish');
        }
      }
      for (const s of swaps) if (isOurs(s)) add('swap', `${s} is active swap`, 'swapped-out memory (processes would crash)');
      for (const h of holders) add('holder', `${h.dev} is held by ${h.holder} (device-mapper/md/LVM)`, `the ${h.holder} volume and everything on it`);
    }

    for (const tag of ninePTagsOf(port, dir)) {
      for (const m of mounts) {
        if (m.fstype !== '9p' || m.source !== tag) continue;
        const isRoot = m.target === '/' || (rootMount?.fstype === 'overlay' && rootMount.options.includes(`${m.target}`));
        if (isRoot) add('root-fs', `9p share "${tag}" mounted at ${m.target} carries the root filesystem`, 'the host itself: the root filesystem would vanish');
        else add('mount', `9p share "${tag}" is mounted at ${m.target}`, `access to ${m.target}`);
      }
    }

    for (const iface of netInterfacesOf(port, dir)) {
      if (!interfaceUp(port, iface)) continue;
      const routes = routesOf(port, iface);
      const addrs = addressesOf(port, iface);
      if (routes.length || addrs.length) {
        add(
          'net',
          `network interface ${iface} is up with ${[...addrs, ...routes].slice(0, 3).join(', ')}`,
          `the host's connectivity through ${iface}${routes.includes('default route') ? ' (including its default route)' : ''}`,
        );
      }
    }

    if (d.bootVga === true) add('boot-vga', `${bdf} is the boot VGA device (boot_vga = 1)`, 'the host console and display');
    for (const fb of framebuffersOf(port, dir)) add('framebuffer', `${bdf} drives the console framebuffer ${fb}`, 'the host console');
  }
  return uses;
};
