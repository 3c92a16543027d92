// The real-kernel checks, run INSIDE the test guest by test/kernel/run.sh (through boot.sh):
//   node test/kernel/guest/suite.mjs [CHECK...]      (default: $TOPO_CHECKS from the topology file)
// Each check compares the guest kernel's own answer (sysfs, /dev/vfio, ioctl errnos, dmesg) with what
// isogroup says or did, prints every comparison, and the results go to $KT_RUNDIR/checks.json.
// A CLI command that does not exist yet fails its check with "command missing", never the whole suite.
import fs from 'node:fs';
import path from 'node:path';
import {
  Check,
  CommandMissing,
  driverState,
  endpointsOf,
  hex,
  isogroup,
  isogroupAsync,
  Kmsg,
  modprobe,
  openQmpTty,
  poll,
  REPO,
  rawBind,
  rawRelease,
  requireCommand,
  shortOut,
  sleep,
  sysfs,
  Vfio,
} from './lib.mjs';

const TOPO = process.env.KT_TOPOLOGY ?? 'unknown';
const RUNDIR = process.env.KT_RUNDIR ?? '/tmp';
const HARNESS = ['0000:00:18.0', '0000:00:19.0']; // 9p: the guest's root fs and the run dir
const HOTPLUGS = Number(process.env.KT_HOTPLUGS ?? 20);

// ---------------------------------------------------------------- shared helpers

const partition = (groups) => [...groups].map((m) => [...m].sort().join('+')).sort();

/** Compares two {key: value} maps, printing only the differences (all of them). */
function compareMap(t, what, kernel, other, labels = {}) {
  const keys = [...new Set([...Object.keys(kernel), ...Object.keys(other)])].sort();
  const diff = keys.filter((k) => JSON.stringify(kernel[k] ?? null) !== JSON.stringify(other[k] ?? null));
  if (!diff.length) return t.compare(`${what} (${keys.length} devices)`, 'same', 'same', labels);
  return t.compare(what, Object.fromEntries(diff.map((k) => [k, kernel[k] ?? null])), Object.fromEntries(diff.map((k) => [k, other[k] ?? null])), labels);
}

/** Runs isogroup and fails the check (with the command's own words) unless it exits 0. */
async function must(t, args, opts) {
  const r = await isogroup(args, opts);
  if (r.code !== 0) {
    t.fail(`isogroup ${args.join(' ')} failed: ${shortOut(r)}`);
    return null;
  }
  t.note(`isogroup ${args.join(' ')}: exit 0 (${r.ms} ms${opts?.spawn ? ', separate process' : ''})`);
  return r;
}

/** The group behind a PCIe-to-PCI bridge with several endpoints (the group the bind checks hand out). */
function bridgeGroup() {
  for (const [id, members] of sysfs.groups()) {
    const bridge = members.find((b) => sysfs.pcieType(b) === 7);
    if (bridge && endpointsOf(members).length >= 2 && !members.some((b) => HARNESS.includes(b))) return { id, members, bridge };
  }
  return null;
}

/** A group of several functions of one multifunction endpoint below a port (no bridge in the group). */
function multifunctionGroup() {
  for (const [id, members] of sysfs.groups()) {
    if (members.length < 2 || members.some((b) => sysfs.isBridge(b) || HARNESS.includes(b))) continue;
    const slots = new Set(members.map((b) => b.slice(0, -2)));
    if (slots.size === 1 && sysfs.parent(members[0])) return { id, members };
  }
  return null;
}

function expectDrivers(t, what, want) {
  const now = driverState(Object.keys(want));
  compareMap(
    t,
    what,
    Object.fromEntries(Object.entries(now).map(([b, s]) => [b, s.driver])),
    Object.fromEntries(Object.entries(want).map(([b, s]) => [b, s !== null && typeof s === 'object' ? s.driver : s])),
    { label: 'expected' },
  );
}

function expectRestored(t, what, before) {
  const now = driverState(Object.keys(before));
  compareMap(t, `${what}: driver and override back`, now, before, { label: 'before' });
}

/** Opens /dev/vfio/N with our own prober: {open, flags, setContainer} as the kernel answers. */
function probeGroup(vfio, id, { devices = [] } = {}) {
  const res = { node: fs.existsSync(`/dev/vfio/${id}`), open: null, viable: null, setContainer: null, setIommu: null, deviceFds: {} };
  const g = vfio.open(`/dev/vfio/${id}`);
  res.open = g.err ?? 'ok';
  if (g.err) return res;
  const c = vfio.container();
  try {
    res.viable = vfio.groupFlags(g.fd).viable;
    res.setContainer = vfio.setContainer(g.fd, c.fd) ?? 'ok';
    if (res.setContainer === 'ok') {
      res.setIommu = vfio.setIommu(c.fd) ?? 'ok';
      for (const b of devices) {
        const d = vfio.deviceFd(g.fd, b);
        res.deviceFds[b] = d.err ?? 'ok';
        vfio.close(d.fd);
      }
    }
  } finally {
    vfio.close(g.fd);
    vfio.close(c.fd);
  }
  return res;
}

// ---------------------------------------------------------------- checks

const checks = {};

/** Infrastructure: `devices --json` against the guest's own sysfs (count, drivers, kernel groups). */
checks.devices = async (t) => {
  const r = await must(t, ['devices', '--json'], { spawn: true }); // bin/isogroup itself, once
  if (!r) return;
  const list = r.json?.devices;
  if (!t.expect(Array.isArray(list), 'devices --json prints {"devices":[...]}')) return;
  const kernel = sysfs.devices();
  t.compare('device count', kernel.length, list.length);
  t.compare('BDF set', kernel, list.map((d) => d.bdf).sort());
  const by = Object.fromEntries(list.map((d) => [d.bdf, d]));
  compareMap(t, 'drivers', Object.fromEntries(kernel.map((b) => [b, sysfs.driver(b)])), Object.fromEntries(kernel.map((b) => [b, by[b]?.driver ?? null])));
  compareMap(
    t,
    'kernel groups',
    Object.fromEntries(kernel.map((b) => [b, sysfs.group(b)])),
    Object.fromEntries(kernel.map((b) => [b, by[b]?.kernelGroup ?? null])),
  );
  compareMap(t, 'class', Object.fromEntries(kernel.map((b) => [b, sysfs.cls(b)])), Object.fromEntries(kernel.map((b) => [b, by[b]?.class ?? null])));
};

/** (a) `groups --compare` agrees with /sys/kernel/iommu_groups; --kernel and --derived membership too. */
checks.groups = async (t) => {
  const kernel = sysfs.groups();
  const kernelPartition = partition(kernel.values());
  t.note(`kernel: ${kernel.size} groups, ${kernelPartition.filter((g) => g.includes('+')).length} with several devices`);
  const cmp = await isogroup(['groups', '--compare', '--json']);
  t.note(`isogroup groups --compare --json: exit ${cmp.code} (${cmp.ms} ms)`);
  if (t.expect(cmp.json && typeof cmp.json.agree === 'boolean', 'groups --compare --json prints {"agree":bool,...}')) {
    t.compare('agree', true, cmp.json.agree, { left: 'expected' });
    t.compare('kernelGroups', kernel.size, cmp.json.kernelGroups);
    t.compare('derivedGroups', kernel.size, cmp.json.derivedGroups);
    t.compare('mismatches', [], cmp.json.mismatches ?? null, { left: 'expected' });
    t.compare('exit status', 0, cmp.code, { left: 'expected' });
  } else t.fail(shortOut(cmp));
  // Membership as isogroup reads it from sysfs is compared device by device in the `devices` check;
  // every further isogroup start costs 10-60 s under TCG, so this check makes one call.
};

/** Groups the reset check can hold: not the harness, no host or ISA bridge (the chipset's own functions), something to hand out. */
function resettableGroups() {
  const out = [];
  for (const [id, members] of sysfs.groups()) {
    if (members.some((b) => HARNESS.includes(b) || /^0x060[01]/.test(sysfs.cls(b) ?? ''))) continue;
    const eps = endpointsOf(members);
    // A bridge on shpchp (native hot-plug) owns DMA: unbound while the group is held, as assign does.
    const unbind = members.filter((b) => sysfs.isBridge(b) && sysfs.driver(b) === 'shpchp');
    if (eps.length) out.push({ id, members, eps, unbind });
  }
  return out;
}

/** Opens a held group's endpoints with our own prober: VFIO's reset flag and hot-reset information of each. */
function probeResets(vfio, id, eps) {
  const out = { open: null, devices: {} };
  const g = vfio.open(`/dev/vfio/${id}`);
  if (g.err) return { ...out, open: g.err };
  const c = vfio.container();
  try {
    const set = vfio.setContainer(g.fd, c.fd) ?? vfio.setIommu(c.fd);
    out.open = set ?? 'ok';
    if (set) return out;
    for (const b of eps) {
      const d = vfio.deviceFd(g.fd, b);
      if (d.err) {
        out.devices[b] = { err: d.err };
        continue;
      }
      const info = vfio.deviceInfo(d.fd);
      const hot = vfio.hotResetInfo(d.fd);
      out.devices[b] = { reset: info.err ?? info.reset, hot: hot.err ?? hot.devices };
      vfio.close(d.fd);
    }
  } finally {
    vfio.close(g.fd);
    vfio.close(c.fd);
  }
  return out;
}

/** The same through isogroup's own VFIO backend (os/vfio-kernel.ts): the hot-reset information it parses. */
async function backendResets(id, eps) {
  const { KernelVfioBackend } = await import(path.join(REPO, 'dist/os/vfio-kernel.js'));
  const backend = new KernelVfioBackend();
  const g = backend.openGroup(id);
  const c = backend.openContainer();
  const out = {};
  try {
    g.setContainer(c);
    c.setIommu('type1v2');
    for (const b of eps) {
      const d = g.openDevice(b);
      try {
        const hot = d.hotResetInfo();
        out[b] = { reset: d.info().reset, hot: hot === null ? 'ENODEV' : hot.devices.map((x) => ({ group: x.groupId, bdf: x.bdf })) };
      } finally {
        d.close();
      }
    }
  } finally {
    g.close();
    c.close();
  }
  return out;
}

/** Reset report: isogroup's derived reset methods against reset_method for every device; for every group that can
 * be held, VFIO's own answer on each open device (VFIO_DEVICE_GET_INFO's reset flag, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO)
 * against the computed resetAlone and reset scope, and the groups it names against the group's groupsAffected. */
checks.reset = async (t) => {
  const all = sysfs.devices();
  const kernel = Object.fromEntries(all.map((b) => [b, sysfs.resetMethod(b)]));
  const dj = await must(t, ['devices', '--json']);
  if (!dj) return;
  const dev = Object.fromEntries((dj.json?.devices ?? []).map((d) => [d.bdf, d]));
  compareMap(t, 'reset_method vs isogroup resetDerived', kernel, Object.fromEntries(all.map((b) => [b, dev[b]?.resetDerived ?? null])));
  compareMap(t, 'reset_method vs isogroup resetMethods', kernel, Object.fromEntries(all.map((b) => [b, dev[b]?.resetMethods ?? null])));
  compareMap(t, 'resetSource', Object.fromEntries(all.map((b) => [b, 'kernel'])), Object.fromEntries(all.map((b) => [b, dev[b]?.resetSource ?? null])), {
    left: 'expected',
  });
  const gj = await must(t, ['groups', '--kernel', '--json']);
  if (!gj) return;
  const reset = Object.fromEntries((gj.json?.groups ?? []).map((g) => [String(g.id), g.reset]));
  const groups = resettableGroups();
  t.note(`groups held in turn: ${groups.map((g) => `${g.id} (${g.eps.join(' ')})`).join(', ')}`);
  modprobe('vfio-pci', 'vfio_iommu_type1');
  const vfio = await Vfio.create();
  const before = driverState(groups.flatMap((g) => [...g.eps, ...g.unbind]));
  try {
    for (const g of groups) {
      for (const b of g.unbind) sysfs.write(`devices/${b}/driver/unbind`, b);
      for (const b of g.eps) rawBind(b, 'vfio-pci');
      const mine = probeResets(vfio, g.id, g.eps);
      if (!t.compare(`group ${g.id}: open, SET_CONTAINER, SET_IOMMU`, 'ok', mine.open, { left: 'expected', label: 'kernel' })) continue;
      const hot = Object.fromEntries(g.eps.map((b) => [b, mine.devices[b]?.hot]));
      const scopes = Object.fromEntries(g.eps.map((b) => [b, Array.isArray(hot[b]) ? hot[b].map((x) => x.bdf).sort() : hot[b] === 'ENODEV' ? [] : hot[b]]));
      compareMap(t, `group ${g.id}: hot-reset devices vs resetScope`, scopes, Object.fromEntries(g.eps.map((b) => [b, dev[b]?.resetScope ?? null])));
      compareMap(
        t,
        `group ${g.id}: VFIO reset flag vs resetAlone != none`,
        Object.fromEntries(g.eps.map((b) => [b, mine.devices[b]?.reset])),
        Object.fromEntries(g.eps.map((b) => [b, dev[b] ? dev[b].resetAlone !== 'none' : null])),
      );
      const named = [...new Set(Object.values(hot).flatMap((h) => (Array.isArray(h) ? h.map((x) => x.group) : [])))].sort((a, b) => a - b);
      t.compare(`group ${g.id}: groups in the hot-reset information vs groupsAffected`, named, reset[g.id]?.groupsAffected ?? null);
      const theirs = await backendResets(g.id, g.eps);
      compareMap(t, `group ${g.id}: isogroup's VFIO backend reads the same answer`, Object.fromEntries(g.eps.map((b) => [b, mine.devices[b]])), theirs, {
        left: 'prober',
        label: 'backend',
      });
      for (const b of [...g.eps, ...g.unbind]) rawRelease(b);
    }
  } finally {
    for (const b of Object.keys(before)) if (sysfs.driver(b) !== before[b].driver || sysfs.override(b)) rawRelease(b);
  }
  expectRestored(t, 'after the check', before);
};

/** Infrastructure: bind a group behind a bridge with raw sysfs writes, open /dev/vfio/N with our own
 * prober, then the partial state (one device back on its host driver): open ok, SET_CONTAINER EPERM. */
checks['vfio-raw'] = async (t) => {
  const g = bridgeGroup();
  if (!t.expect(g, 'a multi-device group behind a PCIe-to-PCI bridge exists')) return;
  const eps = endpointsOf(g.members);
  t.note(`group ${g.id}: ${g.members.join(' ')} (endpoints ${eps.join(' ')})`);
  const before = driverState(g.members);
  modprobe('vfio-pci', 'vfio_iommu_type1');
  const vfio = await Vfio.create();
  try {
    for (const b of eps) rawBind(b, 'vfio-pci');
    expectDrivers(t, 'after raw bind', Object.fromEntries(eps.map((b) => [b, 'vfio-pci'])));
    t.compare(`/dev/vfio/${g.id} exists`, true, fs.existsSync(`/dev/vfio/${g.id}`), { left: 'kernel', label: 'expected' });
    const full = probeGroup(vfio, g.id, { devices: eps });
    t.compare(
      'whole group: open / viable / SET_CONTAINER / SET_IOMMU',
      { open: 'ok', viable: true, setContainer: 'ok', setIommu: 'ok' },
      { open: full.open, viable: full.viable, setContainer: full.setContainer, setIommu: full.setIommu },
      { left: 'kernel', label: 'expected' },
    );
    t.compare('GET_DEVICE_FD for every endpoint', Object.fromEntries(eps.map((b) => [b, 'ok'])), full.deviceFds, { left: 'kernel', label: 'expected' });
    const g2 = vfio.open(`/dev/vfio/${g.id}`);
    const g3 = vfio.open(`/dev/vfio/${g.id}`);
    t.compare('second open() while the group is open', 'EBUSY', g3.err, { label: 'NOTES.md' });
    vfio.close(g2.fd);
    vfio.close(g3.fd);
    const back = eps[0];
    rawRelease(back);
    t.note(`partial: ${back} back on ${sysfs.driver(back)}, the others on vfio-pci`);
    const part = probeGroup(vfio, g.id);
    t.compare(
      'partial group: open / viable / SET_CONTAINER',
      { open: 'ok', viable: false, setContainer: 'EPERM' },
      { open: part.open, viable: part.viable, setContainer: part.setContainer },
      { label: 'NOTES.md' },
    );
  } finally {
    for (const b of eps) rawRelease(b);
  }
  expectRestored(t, 'after raw release', before);
  t.compare(`/dev/vfio/${g.id} gone after release`, false, fs.existsSync(`/dev/vfio/${g.id}`), { left: 'kernel', label: 'expected' });
};

/** (c) A partial group is reported non-viable by isogroup, and the kernel refuses SET_CONTAINER (EPERM). */
checks.partial = async (t) => {
  const g = bridgeGroup();
  if (!t.expect(g, 'a multi-device group behind a PCIe-to-PCI bridge exists')) return;
  const eps = endpointsOf(g.members);
  const before = driverState(g.members);
  const stay = eps[eps.length - 1];
  modprobe('vfio-pci', 'vfio_iommu_type1');
  const vfio = await Vfio.create();
  try {
    for (const b of eps.filter((x) => x !== stay)) rawBind(b, 'vfio-pci');
    t.note(`group ${g.id}: ${eps.filter((x) => x !== stay).join(' ')} on vfio-pci, ${stay} still on ${sysfs.driver(stay)}`);
    const k = probeGroup(vfio, g.id);
    t.compare(
      'kernel: open / viable / SET_CONTAINER',
      { open: 'ok', viable: false, setContainer: 'EPERM' },
      { open: k.open, viable: k.viable, setContainer: k.setContainer },
      { label: 'NOTES.md' },
    );
    const r = await isogroup(['groups', '--kernel', '--json']);
    const mine = r.json?.groups?.find((x) => (x.devices ?? []).includes(stay));
    if (!t.expect(mine, `isogroup groups --kernel --json lists the group of ${stay}`)) {
      t.fail(shortOut(r));
      return;
    }
    t.compare('viable', k.viable, mine.viable);
    const blockers = JSON.stringify(mine.blockers ?? []);
    t.compare(`blockers name ${stay} and its driver`, true, blockers.includes(stay) && blockers.includes(sysfs.driver(stay) ?? '?'), {
      equal: (a, b) => a === b,
    });
  } finally {
    for (const b of eps) rawRelease(b);
  }
  expectRestored(t, 'after the check', before);
};

/** A group holding switch ports (upstream port type 5) and several endpoints: root port without ACS. */
function switchGroup() {
  for (const [id, members] of sysfs.groups()) {
    if (members.some((b) => sysfs.pcieType(b) === 5) && endpointsOf(members).length >= 2) return { id, members };
  }
  return null;
}

/** (b) assign of a multi-device group behind a bridge; /dev/vfio/N opens; release restores drivers. */
checks.assign = (t) => assignCheck(t, bridgeGroup(), 'a multi-device group behind a PCIe-to-PCI bridge exists');
/** (b) on a group that holds a whole switch (ports stay on pcieport, endpoints go to vfio-pci). */
checks['assign-switch'] = (t) => assignCheck(t, switchGroup(), 'a group with a switch and several endpoints exists');

async function assignCheck(t, g, what) {
  if (!t.expect(g, what)) return;
  const eps = endpointsOf(g.members);
  const before = driverState(g.members);
  const state = '/run/kt-assign';
  t.note(`group ${g.id}: ${g.members.join(' ')}; before: ${eps.map((b) => `${b}=${before[b].driver}`).join(' ')}`);
  try {
    if (!(await must(t, ['assign', g.id, '--state-dir', state, '--json']))) return;
    expectDrivers(t, 'after assign', Object.fromEntries(eps.map((b) => [b, 'vfio-pci'])));
    // Bridges stay on pcieport (DMA-managed); a bridge on shpchp (a normal driver) must have been unbound,
    // or the group is not viable (NOTES.md, native-hotplug findings).
    expectDrivers(
      t,
      'bridges: pcieport kept, shpchp unbound',
      Object.fromEntries(g.members.filter((b) => sysfs.isBridge(b)).map((b) => [b, before[b].driver === 'shpchp' ? null : before[b].driver])),
    );
    const vfio = await Vfio.create();
    const k = probeGroup(vfio, g.id, { devices: eps });
    t.compare(
      `/dev/vfio/${g.id}: node / open / viable / SET_CONTAINER`,
      { node: true, open: 'ok', viable: true, setContainer: 'ok' },
      { node: k.node, open: k.open, viable: k.viable, setContainer: k.setContainer },
      { left: 'kernel', label: 'expected' },
    );
    t.compare('GET_DEVICE_FD for every endpoint', Object.fromEntries(eps.map((b) => [b, 'ok'])), k.deviceFds, { left: 'kernel', label: 'expected' });
    const st = await isogroup(['status', '--state-dir', state, '--json']);
    const listed = st.json?.groups?.find((x) => String(x.id) === g.id);
    t.compare('status lists the group with its endpoints', eps, listed ? [...(listed.devices ?? [])].filter((b) => eps.includes(b)).sort() : shortOut(st));
    if (!(await must(t, ['release', g.id, '--state-dir', state, '--json']))) return;
    expectRestored(t, 'after release', before);
  } finally {
    if (eps.some((b) => sysfs.driver(b) === 'vfio-pci')) {
      for (const b of eps) rawRelease(b);
      t.note('cleanup: raw release');
    }
  }
}

/** (d) kill -9 of assign in the middle, then recover: every device back on its driver. */
checks.crash = async (t) => {
  const g = bridgeGroup();
  if (!t.expect(g, 'a multi-device group behind a PCIe-to-PCI bridge exists')) return;
  const eps = endpointsOf(g.members);
  const before = driverState(g.members);
  // Round 1 kills at the first sysfs change (an override written), round 2 once a device is on vfio-pci.
  const rounds = [
    { name: 'first override written', trigger: () => eps.some((b) => sysfs.override(b) === 'vfio-pci') },
    { name: 'first device on vfio-pci', trigger: () => eps.some((b) => sysfs.driver(b) === 'vfio-pci') },
  ];
  try {
    for (const [i, round] of rounds.entries()) {
      const state = `/run/kt-crash-${i}`;
      const child = isogroupAsync(['assign', g.id, '--state-dir', state, '--json'], path.join(RUNDIR, `crash-assign-${i}.log`));
      let killedMidway = false;
      for (;;) {
        // no sleep: a poll per event-loop turn, so the kill lands right after the change
        if (child.exited) break;
        if (round.trigger()) {
          child.child.kill('SIGKILL');
          killedMidway = true;
          break;
        }
        await new Promise((r) => setImmediate(r));
      }
      await child.done;
      if (child.stderr.includes('unknown command')) throw new CommandMissing('command missing: isogroup assign');
      const mid = driverState(eps);
      const onVfio = eps.filter((b) => mid[b].driver === 'vfio-pci').length;
      const moved = eps.filter((b) => mid[b].driver !== before[b].driver || mid[b].override !== before[b].override).length;
      if (!killedMidway) {
        t.note(`round ${i + 1} (${round.name}): assign finished before the kill (${shortOut(child)})`);
        await must(t, ['release', g.id, '--state-dir', state]);
        t.skip(`round ${i + 1}: the kill did not land mid-way`);
        continue;
      }
      t.note(
        `round ${i + 1}: killed at "${round.name}": ${moved}/${eps.length} endpoints touched, ${onVfio} on vfio-pci (${eps.map((b) => `${b}=${mid[b].driver}/${mid[b].override ?? '-'}`).join(' ')})`,
      );
      const rec = await isogroup(['recover', '--state-dir', state, '--json']);
      t.compare(`round ${i + 1}: recover exit status`, 0, rec.code, { left: 'expected', label: 'isogroup' });
      if (rec.code !== 0) t.note(shortOut(rec));
      expectRestored(t, `round ${i + 1}: after recover`, before);
      for (const b of eps) if (sysfs.driver(b) !== before[b].driver) rawRelease(b);
    }
  } finally {
    for (const b of eps) if (sysfs.driver(b) !== before[b].driver || sysfs.override(b)) rawRelease(b);
  }
};

/** (f) Two groups assigned to one owner share one container: the kernel's IOVA ranges for that
 * container equal the ones `contexts show` computes. */
checks.contexts = async (t) => {
  const a = bridgeGroup();
  const b = multifunctionGroup();
  if (!t.expect(a && b, 'two multi-device groups (behind a bridge, a multifunction endpoint) exist')) return;
  const groups = [a, b];
  const all = groups.flatMap((g) => g.members);
  const before = driverState(all);
  const state = '/run/kt-contexts';
  const owner = 'root'; // the default policy lets root claim anything; other owners need a policy file
  await requireCommand('contexts'); // "command missing" before anything is touched
  try {
    for (const g of groups) if (!(await must(t, ['assign', g.id, '--to', owner, '--state-dir', state, '--json']))) return;
    const show = await isogroup(['contexts', 'show', owner, '--state-dir', state, '--json']);
    const ctx = show.json?.context;
    if (!t.expect(ctx && Array.isArray(ctx.iovaRanges), `contexts show ${owner} --json prints {"context":{"iovaRanges":[...]}}`)) {
      t.fail(shortOut(show));
      return;
    }
    t.compare('context groups', groups.map((g) => g.id).sort(), (ctx.groups ?? []).map((g) => String(g.id)).sort());
    modprobe('vfio-pci', 'vfio_iommu_type1');
    const vfio = await Vfio.create();
    const c = vfio.container();
    const fds = [];
    try {
      for (const g of groups) {
        const o = vfio.open(`/dev/vfio/${g.id}`);
        if (!t.compare(`open /dev/vfio/${g.id}`, 'ok', o.err ?? 'ok', { left: 'expected', label: 'kernel' })) return;
        fds.push(o.fd);
        t.compare(`SET_CONTAINER group ${g.id}`, 'ok', vfio.setContainer(o.fd, c.fd) ?? 'ok', { left: 'expected', label: 'kernel' });
        if (fds.length === 1) t.compare('SET_IOMMU TYPE1v2', 'ok', vfio.setIommu(c.fd) ?? 'ok', { left: 'expected', label: 'kernel' });
      }
      const info = vfio.iommuInfo(c.fd);
      if (!t.expect(!info.err && info.ranges, `VFIO_IOMMU_GET_INFO gives the IOVA range capability (${info.err ?? 'ok'})`)) return;
      const norm = (rs) => rs.map((r) => `${hex(r.start)}-${hex(r.end)}`);
      t.compare('IOVA ranges of the shared container (VFIO_IOMMU_GET_INFO vs contexts show)', norm(info.ranges), norm(ctx.iovaRanges));
    } finally {
      for (const fd of fds) vfio.close(fd);
      vfio.close(c.fd);
    }
    for (const g of groups) await must(t, ['release', g.id, '--state-dir', state, '--json']);
    expectRestored(t, 'after release', before);
  } finally {
    for (const bdf of all) if (!sysfs.isBridge(bdf) && (sysfs.driver(bdf) !== before[bdf].driver || sysfs.override(bdf))) rawRelease(bdf);
  }
};

/** Finds a QEMU device by id in query-pci: its BDF as the guest numbered it, and its secondary bus. */
function findQdev(buses, id) {
  const walk = (devs) => {
    for (const d of devs ?? []) {
      if (d.qdev_id === id) {
        const bdf = `0000:${d.bus.toString(16).padStart(2, '0')}:${d.slot.toString(16).padStart(2, '0')}.${d.function}`;
        return { bdf, secondary: d.pci_bridge?.bus?.secondary ?? null };
      }
      const sub = walk(d.pci_bridge?.devices);
      if (sub) return sub;
    }
    return null;
  };
  for (const b of buses) {
    const f = walk(b.devices);
    if (f) return f;
  }
  return null;
}

/** Hot-plug rounds against a held group: each round adds an e1000 onto the held group's bridge (it must
 * end on vfio-pci without its host driver ever binding) and one device elsewhere (host driver binds).
 * `repair` (raw harness check only) plays the daemon's part for devices that arrive driverless. */
async function hotplugRounds(t, qmp, kmsg, { gb, ob, ep, gid, guardBus, otherBus, emptyPort, rounds, repair = null, tag = 'g', slotBase = 4 }) {
  const HOTPLUGS = rounds;
  const sec = gb.secondary.toString(16).padStart(2, '0');
  const guarded = { added: 0, onVfio: 0, hostDriverSeen: [], refused: 0, sameGroup: 0, failures: [] };
  const others = { added: 0, hostBound: 0, newGroup: 0, removed: 0, failures: [] };
  const tAdd = [];
  for (let i = 0; i < HOTPLUGS; i++) {
    // Into the held group: a device onto the bridge, at a free slot.
    const slot = slotBase + i;
    const id = `kt${tag}${i}`;
    const bdf = `0000:${gb.secondary.toString(16).padStart(2, '0')}:${slot.toString(16).padStart(2, '0')}.0`;
    const t0 = Date.now();
    try {
      await qmp.execute('device_add', {
        driver: 'e1000',
        id,
        bus: guardBus,
        addr: `0x${slot.toString(16)}`,
        mac: `52:54:00:ee:00:${i.toString(16).padStart(2, '0')}`,
      });
      guarded.added++;
      if (!(await poll(() => sysfs.exists(bdf), 30000, 10))) {
        guarded.failures.push(`${bdf} never appeared`);
        continue;
      }
      if (repair) await repair(bdf);
      const seen = new Set();
      const final = await poll(
        () => {
          const d = sysfs.driver(bdf);
          if (d) seen.add(d);
          return d === 'vfio-pci' ? d : null;
        },
        30000,
        5,
      );
      tAdd.push(Date.now() - t0);
      if (final) guarded.onVfio++;
      else guarded.failures.push(`${bdf} ended on ${sysfs.driver(bdf)}`);
      const host = [...seen].filter((d) => d !== 'vfio-pci');
      if (host.length) guarded.hostDriverSeen.push(`${bdf}:${host.join(',')}`);
      if (sysfs.group(bdf) === gid) guarded.sameGroup++;
    } catch (e) {
      guarded.failures.push(`${id}: ${e.message}`);
    }

    // Elsewhere: alternately onto the unassigned bridge and into the empty root port, unplugged again
    // after each round (the bridge's fixed memory window would run out: e1000 "can't ioremap BAR 0").
    const intoPort = i % 2 === 1;
    const oid = `kt${tag}o${i}`;
    const target = intoPort ? ep : ob;
    const oslot = intoPort ? 0 : slotBase;
    const obdf = `0000:${target.secondary.toString(16).padStart(2, '0')}:${oslot.toString(16).padStart(2, '0')}.0`;
    const drv = intoPort ? 'e1000e' : 'e1000';
    const netdev = () => {
      try {
        return fs.readdirSync(`/sys/bus/pci/devices/${obdf}/net`).length > 0;
      } catch {
        return false;
      }
    };
    try {
      await qmp.execute('device_add', {
        driver: drv,
        id: oid,
        bus: intoPort ? emptyPort : otherBus,
        addr: `0x${oslot.toString(16)}`,
        mac: `52:54:00:ef:00:${i.toString(16).padStart(2, '0')}`,
      });
      others.added++;
      // The driver link appears when probing STARTS; a registered netdev says the probe succeeded.
      const bound = await poll(() => sysfs.driver(obdf) === drv && netdev(), 30000, 10);
      if (bound) others.hostBound++;
      else others.failures.push(`${obdf} driver ${sysfs.driver(obdf)}, netdev ${netdev()}, want ${drv}`);
      const og = sysfs.group(obdf);
      if (og && og !== gid) others.newGroup++;
      // QEMU 7.2 (TCG, intel-iommu) segfaulted on a device_del issued ~200 ms after the add, while the
      // guest driver was still probing: unplug only once the probe finished and settled.
      await sleep(1000);
      await qmp.execute('device_del', { id: oid });
      await qmp.waitEvent((e) => e.event === 'DEVICE_DELETED' && e.data?.device === oid, 30000);
      if (await poll(() => !sysfs.exists(obdf), 30000, 10)) others.removed++;
    } catch (e) {
      others.failures.push(`${oid}: ${e.message}`);
    }
  }
  kmsg.read();
  const log = kmsg.lines;
  const refusedBdfs = new Set(log.map((l) => /pci (\S+): device attach failed \(-16\)/.exec(l)?.[1]).filter(Boolean));
  const heldBdfs = [...Array(HOTPLUGS).keys()].map((i) => `0000:${sec}:${(slotBase + i).toString(16).padStart(2, '0')}.0`);
  // A host driver that probed a device logs "<driver> <BDF>: ..."; the kernel's refusal logs "pci <BDF>: device attach failed (-16)".
  const hostProbeLines = log.filter((l) => heldBdfs.some((b) => l.includes(b)) && !l.startsWith('pci ') && !l.startsWith('vfio-pci '));
  guarded.refused = heldBdfs.filter((b) => refusedBdfs.has(b)).length;
  tAdd.sort((x, y) => x - y);
  t.note(`hot-add into the held group, device_add to vfio-pci: median ${tAdd[tAdd.length >> 1]} ms, max ${tAdd[tAdd.length - 1]} ms`);
  t.compare('hot-adds into the held group', HOTPLUGS, guarded.added, { left: 'planned', label: 'done' });
  t.compare('... ended on vfio-pci (driver link)', guarded.added, guarded.onVfio, { left: 'added', label: 'sysfs' });
  t.compare('... joined the held group (iommu_group link)', guarded.added, guarded.sameGroup, { left: 'added', label: 'sysfs' });
  t.compare('... host driver seen in the driver link', [], guarded.hostDriverSeen, { left: 'expected', label: 'sysfs' });
  t.compare('... dmesg "device attach failed (-16)" (kernel refused the host driver)', guarded.added, guarded.refused, { left: 'added', label: 'dmesg' });
  t.compare('... host-driver messages for them in dmesg', [], hostProbeLines, { left: 'expected', label: 'dmesg' });
  if (guarded.failures.length) t.fail(`held group: ${guarded.failures.slice(0, 5).join('; ')}`);
  t.compare('hot-adds elsewhere', HOTPLUGS, others.added, { left: 'planned', label: 'done' });
  t.compare('... got their host driver (driver link + netdev: probe succeeded)', others.added, others.hostBound, { left: 'added', label: 'sysfs' });
  t.compare('... outside the held group', others.added, others.newGroup, { left: 'added', label: 'sysfs' });
  t.compare('... unplugged again (gone from sysfs)', others.added, others.removed, { left: 'device_del', label: 'sysfs' });
  if (others.failures.length) t.fail(`elsewhere: ${others.failures.slice(0, 5).join('; ')}`);
}

/** Infrastructure for (e) without the daemon: our own prober holds a group behind a bridge (container
 * set), QMP hot-adds devices onto that bridge: the kernel refuses the host driver (-16), the device waits
 * driverless, we bind it to vfio-pci; devices added elsewhere get their host driver. */
checks['hotplug-raw'] = async (t) => {
  const [guardBus, otherBus, emptyPort] = [process.env.TOPO_GUARD_BUS, process.env.TOPO_OTHER_BUS, process.env.TOPO_EMPTY_PORT];
  if (!t.expect(guardBus && otherBus && emptyPort, 'topology names TOPO_GUARD_BUS, TOPO_OTHER_BUS, TOPO_EMPTY_PORT')) return;
  const qmp = openQmpTty();
  const kmsg = new Kmsg();
  modprobe('vfio-pci', 'vfio_iommu_type1');
  const vfio = await Vfio.create();
  let gfd = -1;
  let cfd = -1;
  let eps = [];
  let before = {};
  try {
    const pci = await qmp.execute('query-pci', undefined, 60000);
    const [gb, ob, ep] = [findQdev(pci, guardBus), findQdev(pci, otherBus), findQdev(pci, emptyPort)];
    if (!t.expect(gb && ob && ep, `QMP query-pci (over the guest's serial line) finds ${guardBus}=${gb?.bdf} ${otherBus}=${ob?.bdf} ${emptyPort}=${ep?.bdf}`))
      return;
    const gid = sysfs.group(gb.bdf);
    eps = endpointsOf(sysfs.groups().get(gid));
    before = driverState(eps);
    for (const b of eps) rawBind(b, 'vfio-pci');
    const g = vfio.open(`/dev/vfio/${gid}`);
    const c = vfio.container();
    gfd = g.fd;
    cfd = c.fd;
    const held = { open: g.err ?? 'ok', setContainer: g.err ? null : (vfio.setContainer(g.fd, c.fd) ?? 'ok') };
    held.setIommu = held.setContainer === 'ok' ? (vfio.setIommu(c.fd) ?? 'ok') : null;
    if (
      !t.compare(`hold group ${gid} (open, SET_CONTAINER, SET_IOMMU)`, { open: 'ok', setContainer: 'ok', setIommu: 'ok' }, held, {
        left: 'expected',
        label: 'kernel',
      })
    )
      return;
    const repair = async (bdf) => {
      await poll(() => {
        kmsg.read();
        return kmsg.lines.some((l) => l.includes(`${bdf}: device attach failed`));
      }, 10000);
      rawBind(bdf, 'vfio-pci');
    };
    await hotplugRounds(t, qmp, kmsg, {
      gb,
      ob,
      ep,
      gid,
      guardBus,
      otherBus,
      emptyPort,
      rounds: Number(process.env.KT_RAW_HOTPLUGS ?? 3),
      repair,
      tag: 'r',
      slotBase: Number(process.env.KT_RAW_SLOT_BASE ?? 26),
    });
  } finally {
    vfio.close(gfd);
    vfio.close(cfd);
    // Back to the state before the check (devices an earlier check left on vfio-pci stay there).
    for (const b of eps) {
      if (before[b]?.override) rawBind(b, before[b].override);
      else rawRelease(b);
    }
    qmp.close();
    kmsg.close();
  }
  expectRestored(t, 'after releasing the hold', before);
};

/** (e) The guard: the daemon holds a group behind a bridge; devices hot-added onto that bridge end on
 * vfio-pci and their host driver never binds (dmesg: attach failed -16); elsewhere, host drivers bind. */
checks.guard = async (t) => {
  const guardBus = process.env.TOPO_GUARD_BUS;
  const otherBus = process.env.TOPO_OTHER_BUS;
  const emptyPort = process.env.TOPO_EMPTY_PORT;
  if (!t.expect(guardBus && otherBus && emptyPort, 'topology names TOPO_GUARD_BUS, TOPO_OTHER_BUS, TOPO_EMPTY_PORT')) return;
  const qmp = openQmpTty();
  const kmsg = new Kmsg();
  const state = '/run/kt-guard';
  const sock = '/run/kt-guard.sock';
  let daemon = null;
  try {
    const pci = await qmp.execute('query-pci', undefined, 60000);
    const gb = findQdev(pci, guardBus);
    const ob = findQdev(pci, otherBus);
    const ep = findQdev(pci, emptyPort);
    if (!t.expect(gb && ob && ep, `QMP query-pci finds ${guardBus}=${gb?.bdf} ${otherBus}=${ob?.bdf} ${emptyPort}=${ep?.bdf}`)) return;
    const gid = sysfs.group(gb.bdf);
    const members = sysfs.groups().get(gid);
    const eps = endpointsOf(members);
    const before = driverState(members);
    const autoprobe0 = sysfs.autoprobe();
    t.note(`guarded group ${gid}: ${members.join(' ')}; drivers_autoprobe=${autoprobe0}`);
    modprobe('vfio-pci', 'vfio_iommu_type1');
    await requireCommand('daemon'); // "command missing" before anything is touched
    fs.mkdirSync(state, { recursive: true }); // as the systemd unit's StateDirectory= would
    const tDaemon = Date.now();
    daemon = isogroupAsync(['daemon', '--state-dir', state, '--socket', sock], path.join(RUNDIR, 'daemon.log'));
    // Starting node and the CLI takes 10-90 s under TCG on a busy host.
    const up = await poll(() => daemon.exited || fs.existsSync(sock), 360000, 50);
    if (daemon.exited || !up) {
      if (daemon.stderr.includes('unknown command')) throw new CommandMissing('command missing: isogroup daemon');
      t.fail(`daemon did not come up: ${shortOut(daemon)}`);
      return;
    }
    t.note(`daemon up, socket present after ${((Date.now() - tDaemon) / 1000).toFixed(1)} s`);
    if (!(await must(t, ['assign', gid, '--socket', sock, '--state-dir', state, '--json']))) return;
    expectDrivers(t, 'after assign', Object.fromEntries(eps.map((b) => [b, 'vfio-pci'])));
    let last = null;
    const held = await poll(
      async () => {
        last = await isogroup(['status', '--socket', sock, '--state-dir', state, '--json']);
        return last.json?.groups?.find((x) => String(x.id) === gid)?.held === true ? last : null;
      },
      60000,
      500,
    );
    if (!t.compare('status --json: the group is held (by the daemon)', true, !!held, { left: 'expected', label: 'isogroup' })) {
      t.note(`last status: ${last?.stdout.slice(0, 600) || shortOut(last)}`);
    }

    await hotplugRounds(t, qmp, kmsg, { gb, ob, ep, gid, guardBus, otherBus, emptyPort, rounds: HOTPLUGS });

    if (!(await must(t, ['release', gid, '--socket', sock, '--state-dir', state, '--json']))) return;
    expectDrivers(t, 'after release: original devices on their drivers', Object.fromEntries(eps.map((b) => [b, before[b].driver])));
    t.compare('drivers_autoprobe after release', autoprobe0, sysfs.autoprobe());
  } finally {
    if (daemon && !daemon.exited) {
      daemon.child.kill('SIGTERM');
      await Promise.race([daemon.done, sleep(10000)]);
      if (!daemon.exited) daemon.child.kill('SIGKILL');
    }
    qmp.close();
    kmsg.close();
  }
};

/** The kubelet device plugin on the real kernel: a stand-in kubelet (the published API) sees the group
 * assigned to `kubernetes` Healthy; Allocate's and the CDI spec's nodes are the kernel's character
 * devices; while the daemon holds the group a second opener gets EBUSY (the kernel's one-opener rule),
 * after PreStartContainer the "container" (this process) opens it and attaches it to a container of its
 * own, and once it closes the group the daemon holds it again. */
checks.kubelet = async (t) => {
  const g = bridgeGroup() ?? multifunctionGroup();
  if (!t.expect(g, 'a multi-device group exists')) return;
  await requireCommand('cdi');
  const { GuestKubelet } = await import('./kubelet.mjs');
  const base = '/run/kt-kubelet';
  const state = `${base}/state`;
  const sock = `${base}/isogroup.sock`;
  const kdir = `${base}/device-plugins`;
  const cdi = `${base}/cdi`;
  fs.mkdirSync(state, { recursive: true });
  const eps = endpointsOf(g.members);
  const before = driverState(g.members);
  const at = ['--socket', sock, '--state-dir', state];
  modprobe('vfio-pci', 'vfio_iommu_type1');
  const kubelet = await new GuestKubelet(kdir).start();
  const daemon = isogroupAsync(
    ['daemon', ...at, '--rescan-ms', '1000', '--kubelet', '--kubelet-dir', kdir, '--cdi-dir', cdi],
    path.join(RUNDIR, 'kubelet-daemon.log'),
  );
  const vfio = await Vfio.create();
  try {
    const up = await poll(() => daemon.exited || fs.existsSync(sock), 360000, 50);
    if (daemon.exited || !up) return t.fail(`daemon did not come up: ${shortOut(daemon)}`);
    if (!(await must(t, ['assign', g.id, '--to', 'kubernetes', ...at, '--json']))) return;
    const id = (attr) => fs.readFileSync(`/sys/bus/pci/devices/${eps[0]}/${attr}`, 'utf8').trim().replace(/^0x/, '');
    const resource = `isogroup.io/${id('vendor')}_${id('device')}`;
    const listed = await poll(() => kubelet.latest(resource)?.find((d) => d.ID === g.id && d.health === 'Healthy') ?? null, 120000, 100);
    t.compare(`ListAndWatch of ${resource}`, `${g.id} Healthy`, listed ? `${listed.ID} ${listed.health}` : JSON.stringify(kubelet.registrations));
    const reg = kubelet.registrations.find((r) => r.resource_name === resource);
    t.compare('Register', { version: 'v1beta1', pre_start_required: true }, { version: reg?.version, pre_start_required: reg?.options?.pre_start_required });
    const answer = (await kubelet.call(resource, 'Allocate', { container_requests: [{ devices_ids: [g.id] }] })).container_responses[0];
    const rdev = (p) => {
      try {
        const st = fs.statSync(p);
        return st.isCharacterDevice() ? `c ${Math.floor(st.rdev / 256)}:${st.rdev % 256}` : 'not a char device';
      } catch (e) {
        return e.code;
      }
    };
    const vfioNode = rdev('/dev/vfio/vfio');
    t.compare(
      'Allocate: device specs are the kernel nodes',
      { '/dev/vfio/vfio': vfioNode, [`/dev/vfio/${g.id}`]: rdev(`/dev/vfio/${g.id}`) },
      Object.fromEntries(answer.devices.map((d) => [d.container_path, d.host_path === d.container_path ? rdev(d.host_path) : `host path ${d.host_path}`])),
    );
    t.compare('/dev/vfio/vfio is misc 10:196', 'c 10:196', vfioNode, { left: 'expected', label: 'kernel' });
    const env = Object.entries(answer.envs)[0] ?? [];
    t.compare('PCI_RESOURCE_ variable', [`PCI_RESOURCE_${resource.toUpperCase().replace(/[/.]/g, '_')}`, eps.join(',')], env, { left: 'expected' });
    const spec = await poll(() => (fs.existsSync(`${cdi}/isogroup.io.yaml`) ? fs.readFileSync(`${cdi}/isogroup.io.yaml`, 'utf8') : null), 30000, 100);
    const paths = [...(spec ?? '').matchAll(/- path: (\S+)/g)].map((m) => m[1]);
    t.compare(
      'CDI spec nodes exist as char devices',
      paths.map(() => 'char'),
      paths.map((p) => (rdev(p).startsWith('c ') ? 'char' : rdev(p))),
      { left: 'expected' },
    );
    const held = vfio.open(`/dev/vfio/${g.id}`);
    vfio.close(held.fd);
    t.compare('a second opener while the daemon holds the group', 'EBUSY', held.err ?? 'ok', { left: 'kernel (expected)' });
    await kubelet.call(resource, 'PreStartContainer', { devices_ids: [g.id] });
    // The container's open: the group and a container of its own, as QEMU does.
    const mine = vfio.open(`/dev/vfio/${g.id}`);
    const c = vfio.container();
    const attach = mine.err ? mine.err : (vfio.setContainer(mine.fd, c.fd) ?? 'ok');
    t.compare('after PreStartContainer: open + SET_CONTAINER by the container', 'ok', attach, { left: 'expected', label: 'kernel' });
    await sleep(2500); // passes run every second: the daemon notices the open
    vfio.close(mine.fd);
    vfio.close(c.fd);
    const back = await poll(
      () => {
        const probe = vfio.open(`/dev/vfio/${g.id}`);
        vfio.close(probe.fd);
        return probe.err === 'EBUSY' ? 'EBUSY' : null;
      },
      60000,
      200,
    );
    t.compare('once the container closed it, the daemon holds the group again (a new opener: EBUSY)', 'EBUSY', back ?? 'not held', { left: 'expected' });
    if (!(await must(t, ['release', g.id, ...at, '--json']))) return;
    expectRestored(t, 'after release', before);
  } finally {
    kubelet.close();
    if (!daemon.exited) {
      daemon.child.kill('SIGTERM');
      await Promise.race([daemon.done, sleep(10000)]);
      if (!daemon.exited) daemon.child.kill('SIGKILL');
    }
    if (eps.some((b) => sysfs.driver(b) === 'vfio-pci')) for (const b of eps) rawRelease(b);
  }
};

// ---------------------------------------------------------------- main

const wanted = process.argv.slice(2).length
  ? process.argv.slice(2)
  : (process.env.KT_CHECKS || process.env.TOPO_CHECKS || 'devices groups').split(/\s+/).filter(Boolean);
const results = [];
fs.writeFileSync(path.join(RUNDIR, 'checks.json'), JSON.stringify({ topology: TOPO, planned: wanted, checks: [] }, null, 1));
const t0 = Date.now();
console.log(
  `real-kernel checks on topology "${TOPO}": ${wanted.join(', ')} (kernel ${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}, ${sysfs.devices().length} PCI functions, ${sysfs.groups().size} IOMMU groups)`,
);
for (const name of wanted) {
  const t = new Check(name, TOPO);
  try {
    if (!checks[name]) t.fail(`no such check: ${name}`);
    else await checks[name](t);
  } catch (e) {
    t.fail(e instanceof CommandMissing ? e.message : `check crashed: ${e?.stack ?? e}`);
  }
  results.push(t.finish());
  fs.writeFileSync(path.join(RUNDIR, 'checks.json'), JSON.stringify({ topology: TOPO, planned: wanted, checks: results }, null, 1));
}
const failed = results.filter((r) => r.status === 'failed').length;
console.log(
  `\n[${TOPO}] ${results.length - failed} of ${results.length} checks without failure, ${failed} failed (${((Date.now() - t0) / 1000).toFixed(1)} s)`,
);
process.exit(failed ? 1 : 0);
