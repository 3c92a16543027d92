import * as fs from 'node:fs';
import * as path from 'node:path';
import { status as grpcStatus } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { DaemonClient } from '../../daemon/client.js';
import { GuardDaemon } from '../../daemon/daemon.js';
import { KubeletPlugin } from '../../kubelet/plugin.js';
import { readAudit } from '../../state/audit.js';
import { simCopy } from '../helpers/sim-root.js';
import { type KDevice, StandInKubelet } from './standin.js';

// The device plugin on the fixture kernel (mixed capture), driven by a stand-in kubelet built from the
// published v1beta1 API. Groups there: 23 = 0b:00.0 e1000e (8086:10d3) + 0b:00.1/.2 virtio under root
// port 00:10.4; 19 = switch port 05:00.0 + 06:00.0 e1000e (8086:10d3) and 20 = 05:01.0 + 07:00.0
// virtio-net (1af4:1041), both under root port 00:10.2; 22 = pcie-pci bridge 09:00.0 + 0a:01.0 e1000
// (8086:100e), 0a:02.0, 0a:03.0 under 00:10.3; 25 = 0e:00.0 vmxnet3 under 00:10.7.

const E1000E = 'isogroup.io/8086_10d3';
const E1000 = 'isogroup.io/8086_100e';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Rig {
  root: string;
  dir: string;
  stateDir: string;
  kubeletDir: string;
  cdiDir: string;
  daemon: GuardDaemon;
  client: DaemonClient;
  plugin: KubeletPlugin;
}

const rig = async (options: { kubeletResources?: string; numa?: Record<string, number>; before?: (root: string) => void } = {}): Promise<Rig> => {
  const sim = simCopy('mixed');
  const root = sim.root;
  const dir = path.dirname(root);
  for (const [bdf, node] of Object.entries(options.numa ?? {})) fs.writeFileSync(path.join(root, 'sys/bus/pci/devices', bdf, 'numa_node'), `${node}\n`);
  options.before?.(root);
  const stateDir = path.join(dir, 'state');
  const kubeletDir = path.join(dir, 'kubelet');
  const cdiDir = path.join(dir, 'cdi');
  const socket = path.join(dir, 'isogroup.sock');
  const daemon = await GuardDaemon.start({
    root,
    simulate: true,
    stateDir,
    socket,
    rescanMs: 0,
    kubeletDir,
    cdiDir,
    ...(options.kubeletResources ? { kubeletResources: options.kubeletResources } : {}),
  });
  cleanups.push(() => daemon.close());
  const plugin = await KubeletPlugin.start(daemon, { pollMs: 200 });
  cleanups.push(() => plugin.close());
  return { root, dir, stateDir, kubeletDir, cdiDir, daemon, client: new DaemonClient(socket), plugin };
};

const kubelet = async (r: Rig): Promise<StandInKubelet> => {
  const k = await StandInKubelet.start(r.kubeletDir);
  cleanups.push(() => k.close());
  return k;
};

const assign = (r: Rig, group: string, owner = 'kubernetes') => r.client.post('/assign', { target: group, owner });
const release = (r: Rig, group: string) => r.client.post('/release', { target: group });
const ids = (list: KDevice[] | null): string[] => (list ?? []).map((d) => d.ID);
const health = (list: KDevice[] | null): Record<string, string> => Object.fromEntries((list ?? []).map((d) => [d.ID, d.health]));

describe('kubelet device plugin v1beta1 on the fixture kernel', () => {
  it('registers each resource once the kubelet appears, sends the pool at once and a new list on assign and release', async () => {
    const r = await rig();
    await assign(r, '23');
    await assign(r, '19', 'alice'); // not the kubelet's: never offered
    await r.plugin.settled();
    const k = await kubelet(r);
    await expect.poll(() => k.registrationsOf(E1000E).length, { timeout: 5000 }).toBe(1);
    expect(k.registrationsOf(E1000E)[0]).toEqual({
      version: 'v1beta1',
      endpoint: 'isogroup.io_8086_10d3.sock',
      resource_name: E1000E,
      options: { pre_start_required: true, get_preferred_allocation_available: true },
    });
    expect(fs.statSync(path.join(r.kubeletDir, 'isogroup.io_8086_10d3.sock')).isSocket()).toBe(true);
    const plugin = k.plugin(E1000E);
    await expect.poll(() => plugin.latest(), { timeout: 5000 }).toEqual([{ ID: '23', health: 'Healthy', topology: null }]);
    expect(plugin.options).toEqual({ pre_start_required: true, get_preferred_allocation_available: true });

    // Assign: a second group of the same resource joins the list; a group of another resource gets its own registration.
    await release(r, '19');
    await assign(r, '19');
    await expect.poll(() => health(plugin.latest()), { timeout: 5000 }).toEqual({ '19': 'Healthy', '23': 'Healthy' });
    await assign(r, '22');
    await expect.poll(() => k.registrationsOf(E1000).length, { timeout: 5000 }).toBe(1);
    await expect.poll(() => ids(k.plugin(E1000).latest()), { timeout: 5000 }).toEqual(['22']);
    expect(k.registrations.map((x) => x.resource_name).sort()).toEqual([E1000, E1000E]);

    // Release: gone from the list at once; the ID of the group that stays is unchanged.
    const before = plugin.lists.length;
    await release(r, '19');
    await expect.poll(() => ids(plugin.latest()), { timeout: 5000 }).toEqual(['23']);
    // One list per change (the unhold during the release may show 19 Unhealthy first, never a repeat of the same list).
    const sent = plugin.lists.slice(before).map((l) => JSON.stringify(l));
    expect(new Set(sent).size).toBe(sent.length);
    // The CDI spec follows the pool.
    const spec = fs.readFileSync(path.join(r.cdiDir, 'isogroup.io.yaml'), 'utf8');
    expect(spec).toMatch(/name: "22"/);
    expect(spec).toMatch(/name: "23"/);
    expect(spec).not.toMatch(/name: "19"/);
  });

  it('a hot-removed device makes its group Unhealthy at once', async () => {
    const r = await rig();
    await assign(r, '23');
    await assign(r, '19');
    const k = await kubelet(r);
    await expect.poll(() => health(k.connections.get(E1000E)?.latest() ?? null), { timeout: 5000 }).toEqual({ '19': 'Healthy', '23': 'Healthy' });
    // The e1000e of group 23 leaves (its virtio functions stay): the group no longer has a device of its resource.
    r.daemon.session.sim().kernel.write('sys/bus/pci/devices/0000:0b:00.0/remove', '1');
    await expect.poll(() => health(k.plugin(E1000E).latest()), { timeout: 5000 }).toEqual({ '19': 'Healthy', '23': 'Unhealthy' });
    // Allocating it is refused, and nothing is allocated.
    await expect(k.plugin(E1000E).allocate([['23']])).rejects.toMatchObject({ code: grpcStatus.FAILED_PRECONDITION });
  });

  it('GetPreferredAllocation on two NUMA nodes: one node first, then one root port, honouring must_include', async () => {
    const file = path.join(fs.mkdtempSync('/dev/shm/isogroup-res-'), 'resources.yaml');
    fs.writeFileSync(file, 'resources:\n  - name: nic\n    selector: { class: "02" }\n');
    cleanups.push(() => fs.rmSync(path.dirname(file), { recursive: true, force: true }));
    const numa = { '0000:05:00.0': 0, '0000:06:00.0': 0, '0000:05:01.0': 0, '0000:07:00.0': 0, '0000:0a:01.0': 0, '0000:0b:00.0': 1, '0000:0e:00.0': 1 };
    const r = await rig({ kubeletResources: file, numa });
    for (const g of ['19', '20', '22', '23', '25']) await assign(r, g);
    const k = await kubelet(r);
    await expect.poll(() => ids(k.connections.get('isogroup.io/nic')?.latest() ?? null), { timeout: 5000 }).toEqual(['19', '20', '22', '23', '25']);
    const nic = k.plugin('isogroup.io/nic');
    const topology = Object.fromEntries(nic.latest()!.map((d) => [d.ID, d.topology?.nodes.map((n) => n.ID)]));
    // 22's bridge and 0a:02.0/0a:03.0 stay at -1 (unknown): its node is the one known.
    expect(topology).toEqual({ '19': [0], '20': [0], '22': [0], '23': [1], '25': [1] });
    const all = ['19', '20', '22', '23', '25'];
    expect(await nic.preferred(all, [], 2)).toEqual(['23', '25']); // node 1 holds exactly two
    expect(await nic.preferred(all, [], 3)).toEqual(['19', '20', '22']); // node 0 holds exactly three
    expect(await nic.preferred(['19', '20', '22'], [], 2)).toEqual(['19', '20']); // one root port (00:10.2)
    expect(await nic.preferred(all, ['22'], 2)).toEqual(['22', '19']); // 22's node first
    // 23's node, then the tightest root port of the other node (22 alone), keeping the pair under 00:10.2 whole.
    expect(await nic.preferred(all, ['23'], 3)).toEqual(['23', '25', '22']);
    expect(await nic.preferred(all, [], 4)).toEqual(['19', '20', '22', '23']); // no node holds four: the fullest first
    await expect(nic.preferred(['19', '99'], [], 1)).rejects.toMatchObject({ code: grpcStatus.NOT_FOUND });
  });

  it('Allocate answers device specs, PCI_RESOURCE_ and CDI names per container, audits it, and refuses unknown IDs with nothing allocated', async () => {
    const r = await rig();
    await assign(r, '23');
    await assign(r, '19');
    const k = await kubelet(r);
    await expect.poll(() => ids(k.connections.get(E1000E)?.latest() ?? null), { timeout: 5000 }).toEqual(['19', '23']);
    const plugin = k.plugin(E1000E);
    const vfio = (rel: string) => ({ container_path: `/${rel}`, host_path: path.join(r.root, rel), permissions: 'rw' });
    const answer = await plugin.allocate([['23'], ['19', '23']]);
    expect(answer.container_responses).toHaveLength(2);
    expect(answer.container_responses[0]).toEqual({
      envs: { PCI_RESOURCE_ISOGROUP_IO_8086_10D3: '0000:0b:00.0,0000:0b:00.1,0000:0b:00.2' },
      mounts: [],
      devices: [vfio('dev/vfio/vfio'), vfio('dev/vfio/23')],
      annotations: {},
      cdi_devices: [{ name: 'isogroup.io/group=23' }],
    });
    // Each group's first endpoint first (KubeVirt takes one address per device from the front), then the rest.
    expect(answer.container_responses[1]!.envs).toEqual({ PCI_RESOURCE_ISOGROUP_IO_8086_10D3: '0000:06:00.0,0000:0b:00.0,0000:0b:00.1,0000:0b:00.2' });
    expect(answer.container_responses[1]!.devices).toEqual([vfio('dev/vfio/vfio'), vfio('dev/vfio/19'), vfio('dev/vfio/23')]);
    expect(answer.container_responses[1]!.cdi_devices).toEqual([{ name: 'isogroup.io/group=19' }, { name: 'isogroup.io/group=23' }]);
    const lines = () => readAudit(path.join(r.stateDir, 'audit.jsonl')).records.filter((x) => x.action === 'kubelet-allocate');
    expect(lines().map((x) => [x.target.group, x.allowed])).toEqual([
      ['23', true],
      ['19', true],
    ]);
    // The groups stay held by the daemon.
    expect(r.daemon.heldGroups()).toEqual(new Set(['19', '23']));

    // Bad requests: an unknown ID (alone, or beside a good one in another container) is a gRPC error and nothing is allocated.
    await expect(plugin.allocate([['99']])).rejects.toMatchObject({ code: grpcStatus.NOT_FOUND, details: expect.stringMatching(/unknown device ID\(s\) 99/) });
    await expect(plugin.allocate([['23'], ['23', 'x/../1']])).rejects.toMatchObject({ code: grpcStatus.NOT_FOUND });
    // A group of another resource is unknown here too.
    await assign(r, '22');
    await expect(plugin.allocate([['22']])).rejects.toMatchObject({ code: grpcStatus.NOT_FOUND });
    expect(lines().map((x) => [x.target.group, x.allowed])).toEqual([
      ['23', true],
      ['19', true],
      [null, false],
      [null, false],
      [null, false],
    ]);
  });

  it('PreStartContainer lets the container open the group (one opener at a time), and the daemon holds it again once the container closes it', async () => {
    const r = await rig();
    await assign(r, '23');
    const k = await kubelet(r);
    await expect.poll(() => health(k.connections.get(E1000E)?.latest() ?? null), { timeout: 5000 }).toEqual({ '23': 'Healthy' });
    const plugin = k.plugin(E1000E);
    await plugin.allocate([['23']]);
    const vfio = r.daemon.session.vfio();
    // While the daemon holds the group, the container's open (QEMU's, a DPDK app's) would fail.
    expect(() => vfio.openGroup('23')).toThrow(/EBUSY/);
    await expect(plugin.preStart(['24'])).rejects.toMatchObject({ code: grpcStatus.NOT_FOUND });
    expect(await plugin.preStart(['23'])).toEqual({});
    expect(r.daemon.heldGroups().has('23')).toBe(false);
    const prestart = readAudit(path.join(r.stateDir, 'audit.jsonl')).records.filter((x) => x.action === 'kubelet-prestart');
    expect(prestart.map((x) => [x.target.group, x.allowed])).toEqual([
      [null, false],
      ['23', true],
    ]);
    const container = vfio.openGroup('23');
    await r.daemon.reconcile('test');
    expect(r.daemon.handoffs.get('23')).toMatchObject({ container: true, opened: true });
    // In use by the container, it stays Healthy for the kubelet (its accounting counts it as allocated).
    await r.plugin.settled();
    expect(health(plugin.latest())).toEqual({ '23': 'Healthy' });
    // The container exits: the next pass takes the group back.
    container.close();
    await r.daemon.reconcile('test');
    expect(r.daemon.heldGroups().has('23')).toBe(true);
    expect(r.daemon.handoffs.has('23')).toBe(false);
    expect(() => vfio.openGroup('23')).toThrow(/EBUSY/);
    await r.plugin.settled();
    expect(health(plugin.latest())).toEqual({ '23': 'Healthy' });
  });

  it('survives the kubelet: registers again when kubelet.sock is recreated, and when its own socket is removed', async () => {
    const r = await rig();
    await assign(r, '23');
    const k = await kubelet(r);
    await expect.poll(() => ids(k.connections.get(E1000E)?.latest() ?? null), { timeout: 5000 }).toEqual(['23']);
    const socket = path.join(r.kubeletDir, 'isogroup.io_8086_10d3.sock');

    // Kubelet restart: every socket in the directory is removed, kubelet.sock comes back.
    await k.restart();
    expect(fs.existsSync(socket)).toBe(false);
    await expect.poll(() => k.registrationsOf(E1000E).length, { timeout: 5000 }).toBe(2);
    await expect.poll(() => ids(k.connections.get(E1000E)?.latest() ?? null), { timeout: 5000 }).toEqual(['23']);
    expect(fs.statSync(socket).isSocket()).toBe(true);

    // Our socket removed alone (kubelet.sock unchanged): serve again, register again.
    fs.rmSync(socket);
    await expect.poll(() => k.registrationsOf(E1000E).length, { timeout: 5000 }).toBe(3);
    await expect.poll(() => fs.existsSync(socket) && fs.statSync(socket).isSocket(), { timeout: 5000 }).toBe(true);
    await expect.poll(() => ids(k.connections.get(E1000E)?.latest() ?? null), { timeout: 5000 }).toEqual(['23']);
    // The new connection works end to end.
    const answer = await k.plugin(E1000E).allocate([['23']]);
    expect(answer.container_responses[0]!.cdi_devices).toEqual([{ name: 'isogroup.io/group=23' }]);

    // Stopping the plugin removes its socket (the kubelet then marks the resource's devices unhealthy itself).
    await r.plugin.close();
    expect(fs.existsSync(socket)).toBe(false);
  });
});
