// The daemon's front end for the kubelet: the pool (the groups assigned to the kubelet's owner) offered
// as v1beta1 device plugin resources, one endpoint and one registration per resource, and the CDI spec
// kept current. Event-driven: every daemon event that can change the pool (assign, release, hold,
// unhold, violation, hotplug, ...) re-reads it and sends each resource's new list, if it changed, to
// every ListAndWatch stream. It survives the kubelet: a new kubelet.sock (a kubelet restart) means
// register again; our own socket removed (the kubelet cleans its directory when it starts) means serve
// again and register again. Nothing here assigns, holds or releases: that is the daemon's pipeline.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { auditKubelet, cdiSpecPath, cdiYaml, type PoolRead, readPool, writeCdiFile } from '../api/kubernetes.js';
import type { Session } from '../api/session.js';
import type { DaemonEvent, EventHub } from '../daemon/events.js';
import type { Logger } from '../daemon/log.js';
import { IsogroupError, isIsogroupError } from '../errors.js';
import { containerAllocation } from '../pool/allocation.js';
import { cdiSpec } from '../pool/cdi.js';
import { devicesOf, HEALTHY, type PoolDevice, resourcesOf, UNHEALTHY } from '../pool/devices.js';
import { preferredAllocation } from '../pool/preferred.js';
import {
  type AllocateRequest,
  type AllocateResponse,
  API_VERSION,
  type Device,
  type DevicePluginOptions,
  KUBELET_SOCKET,
  type PreferredAllocationRequest,
  type PreferredAllocationResponse,
  type PreStartContainerRequest,
  unixAddress,
  v1beta1,
} from './api.js';
import { type EndpointHandlers, fileIdentity, ResourceEndpoint } from './endpoint.js';

/** What the front end needs of the daemon (daemon/daemon.ts GuardDaemon has it). */
export interface PoolDaemon {
  readonly session: Session;
  readonly hub: EventHub;
  readonly logger: Logger;
  /** Group ids the daemon holds open in a container now. */
  heldGroups(): Set<string>;
  /** Groups handed to the containers the kubelet started. */
  containerGroups(): Set<string>;
  /** Drop the holds on these groups so the container being started can open them. */
  handToContainer(groupIds: readonly string[]): void;
}

export interface KubeletPluginOptions {
  /** Serve the kubelet (default true); false keeps only the CDI spec current. */
  serveKubelet?: boolean;
  /** Keep the CDI spec current (default true). */
  keepCdi?: boolean;
  /** Backstop check of the kubelet's directory in ms, besides inotify (default 5000; 0: none). */
  pollMs?: number;
  /** How long one Register call may take (default 10 s). */
  registerTimeoutMs?: number;
  /** Debounce of pool re-reads after events (default 20 ms). */
  settleMs?: number;
  /** Least time between two pool re-reads after events (default 200 ms): a re-read scans the host, and a hot-add burst must not starve the guard. */
  minIntervalMs?: number;
}

// The daemon events after which the pool may look different.
const POOL_EVENTS = new Set([
  'assign',
  'release',
  'hold',
  'unhold',
  'violation',
  'hotplug',
  'membership-changed',
  'recover',
  'destroy',
  'merge',
  'handoff',
  'handoff-opened',
  'handoff-ended',
  'action',
  'reload',
]);

/** A pool group as the kubelet sees it. */
export const kubeletDevice = (d: PoolDevice): Device => ({
  ID: d.id,
  health: d.healthy ? HEALTHY : UNHEALTHY,
  topology: d.numaNodes.length ? { nodes: d.numaNodes.map((n) => ({ ID: n })) } : null,
});

export class KubeletPlugin implements EndpointHandlers {
  readonly kubeletDir: string | null;
  readonly cdiFile: string | null;
  private readonly endpoints = new Map<string, ResourceEndpoint>();
  private pool: PoolRead | null = null;
  /** The resource each group was first offered under: it keeps it while it stays in the pool. */
  private previous = new Map<string, string | null>();
  private lastCdi: string | null = null;
  private syncing: Promise<void> | null = null;
  private syncAgain = false;
  private syncTimer: NodeJS.Timeout | null = null;
  private lastSync = 0;
  private ensuring: Promise<void> | null = null;
  private ensureAgain = false;
  private watcher: fs.FSWatcher | null = null;
  private poll: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  private closed = false;
  private started = false;
  private readonly registerErrors = new Map<string, string>();
  private readonly session: Session;
  private readonly logger: Logger;

  private constructor(
    private readonly daemon: PoolDaemon,
    private readonly settings: KubeletPluginOptions,
  ) {
    this.session = daemon.session;
    this.logger = daemon.logger;
    this.kubeletDir = settings.serveKubelet === false ? null : this.session.requireKubeletPlace('kubeletDir', 'the kubelet device plugin');
    this.cdiFile = settings.keepCdi === false ? null : cdiSpecPath(this.session);
    this.session.kubeletResources(); // a bad resources file stops the start, not a later event
  }

  /** Read the pool, serve it, register with the kubelet (now or when it appears), keep the CDI spec. */
  static async start(daemon: PoolDaemon, options: KubeletPluginOptions = {}): Promise<KubeletPlugin> {
    const p = new KubeletPlugin(daemon, options);
    try {
      await p.boot();
    } catch (error) {
      await p.close();
      throw error;
    }
    return p;
  }

  private async boot(): Promise<void> {
    if (this.cdiFile) fs.mkdirSync(path.dirname(this.cdiFile), { recursive: true });
    if (this.kubeletDir) fs.mkdirSync(this.kubeletDir, { recursive: true });
    await this.sync();
    this.unsubscribe = this.daemon.hub.onEvent((e: DaemonEvent) => {
      if (POOL_EVENTS.has(e.type)) this.scheduleSync();
    });
    if (this.kubeletDir) {
      this.watcher = fs.watch(this.kubeletDir, () => void this.ensure());
      this.watcher.on('error', (error) => this.logger.warn('watching the kubelet directory failed; polling only', { error: error.message }));
      const every = this.settings.pollMs ?? 5000;
      if (every > 0) {
        this.poll = setInterval(() => void this.ensure(), every);
        this.poll.unref();
      }
      await this.ensure();
    }
    this.started = true;
    this.logger.info('kubelet front end started', {
      kubeletDir: this.kubeletDir,
      cdiFile: this.cdiFile,
      owner: this.session.kubeletOwner,
      resources: [...this.endpoints.keys()],
    });
  }

  /** The resources served now, each with the list the kubelet has and whether it is registered. */
  resources(): { resource: string; endpoint: string; registered: boolean; watchers: number; devices: Device[] }[] {
    return [...this.endpoints.values()].map((e) => ({
      resource: e.resource,
      endpoint: e.socketPath,
      registered: e.registeredWith !== null,
      watchers: e.watchers,
      devices: e.devices,
    }));
  }

  /** Wait until the pool read and the registrations under way are done (tests, stopping). */
  async settled(): Promise<void> {
    for (;;) {
      if (this.syncTimer) {
        clearTimeout(this.syncTimer);
        this.syncTimer = null;
        void this.sync();
      }
      if (this.syncing) await this.syncing;
      else if (this.ensuring) await this.ensuring;
      else return;
    }
  }

  // Groups protected now: the daemon's holds, and groups handed to a container (which holds them once open).
  private protectedGroups(): Set<string> {
    return new Set([...this.daemon.heldGroups(), ...this.daemon.containerGroups()]);
  }

  private read(): PoolRead {
    return readPool(this.session, { protectedGroups: this.protectedGroups(), previous: this.previous });
  }

  private scheduleSync(): void {
    if (this.closed || this.syncTimer) return;
    const wait = Math.max(this.settings.settleMs ?? 20, this.lastSync + (this.settings.minIntervalMs ?? 200) - Date.now());
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      void this.sync();
    }, wait);
  }

  /** Re-read the pool; send changed lists; write a changed CDI spec; serve new resources. One at a time. */
  sync(): Promise<void> {
    if (this.syncing) {
      this.syncAgain = true;
      return this.syncing;
    }
    this.syncing = (async () => {
      try {
        do {
          this.syncAgain = false;
          await this.syncOnce();
        } while (this.syncAgain && !this.closed);
      } finally {
        this.syncing = null;
      }
    })();
    return this.syncing;
  }

  private async syncOnce(): Promise<void> {
    if (this.closed) return;
    this.lastSync = Date.now();
    let pool: PoolRead;
    try {
      pool = this.read();
    } catch (error) {
      this.logger.error('cannot read the pool; the kubelet keeps the last lists', { error: (error as Error).message });
      return;
    }
    this.pool = pool;
    this.previous = new Map(pool.devices.map((d) => [d.id, d.resource]));
    if (this.cdiFile) this.writeCdi(pool);
    if (!this.kubeletDir) return;
    let added = false;
    for (const resource of resourcesOf(pool.devices)) {
      if (this.endpoints.has(resource)) continue;
      let endpoint: ResourceEndpoint;
      try {
        endpoint = new ResourceEndpoint(resource, this.kubeletDir, this, this.logger);
        await endpoint.listen();
      } catch (error) {
        // At start this stops the daemon; later, the next change tries again.
        if (!this.started) throw error;
        this.logger.error('cannot serve a resource', { resource, error: (error as Error).message });
        continue;
      }
      if (this.closed) {
        await endpoint.close();
        return;
      }
      this.endpoints.set(resource, endpoint);
      added = true;
    }
    for (const [resource, endpoint] of this.endpoints) {
      const devices = devicesOf(pool.devices, resource).map(kubeletDevice);
      if (endpoint.publish(devices)) this.daemon.hub.publish('kubelet-devices', { resource, devices });
    }
    if (added) void this.ensure();
  }

  private writeCdi(pool: PoolRead): void {
    const yaml = cdiYaml(cdiSpec(pool.devices, pool.facts));
    if (yaml === this.lastCdi) return;
    try {
      writeCdiFile(this.cdiFile!, yaml);
      this.lastCdi = yaml;
      this.daemon.hub.publish('cdi', { file: this.cdiFile, devices: pool.devices.map((d) => d.id) });
    } catch (error) {
      this.logger.error('cannot write the CDI spec', { file: this.cdiFile, error: (error as Error).message });
    }
  }

  /** Serve every endpoint whose socket went, and register each with the kubelet it has not registered with yet. */
  ensure(): Promise<void> {
    if (this.ensuring) {
      this.ensureAgain = true;
      return this.ensuring;
    }
    this.ensuring = (async () => {
      try {
        do {
          this.ensureAgain = false;
          await this.ensureOnce();
        } while (this.ensureAgain && !this.closed);
      } finally {
        this.ensuring = null;
      }
    })();
    return this.ensuring;
  }

  private async ensureOnce(): Promise<void> {
    if (this.closed || !this.kubeletDir) return;
    const kubeletSocket = path.join(this.kubeletDir, KUBELET_SOCKET);
    for (const endpoint of this.endpoints.values()) {
      if (this.closed) return;
      if (!endpoint.intact()) {
        this.logger.warn('device plugin socket gone (kubelet restart?): serving it again', { resource: endpoint.resource, socket: endpoint.socketPath });
        try {
          await endpoint.listen();
        } catch (error) {
          this.logger.error('cannot serve the device plugin socket', { resource: endpoint.resource, error: (error as Error).message });
          continue;
        }
      }
      const kubelet = fileIdentity(kubeletSocket);
      if (kubelet === null || endpoint.registeredWith === kubelet) continue;
      try {
        await this.register(kubeletSocket, endpoint);
        endpoint.registeredWith = kubelet;
        this.registerErrors.delete(endpoint.resource);
        this.logger.info('registered with the kubelet', { resource: endpoint.resource, endpoint: endpoint.endpoint });
        this.daemon.hub.publish('kubelet-registered', { resource: endpoint.resource, endpoint: endpoint.endpoint });
      } catch (error) {
        const message = (error as Error).message;
        if (this.registerErrors.get(endpoint.resource) !== message) {
          this.logger.warn('kubelet registration failed; trying again on the next change or check', { resource: endpoint.resource, error: message });
          this.daemon.hub.publish('kubelet-register-failed', { resource: endpoint.resource, error: message });
        }
        this.registerErrors.set(endpoint.resource, message);
      }
    }
  }

  private register(kubeletSocket: string, endpoint: ResourceEndpoint): Promise<void> {
    const Registration = v1beta1().Registration;
    const client = new Registration(unixAddress(kubeletSocket), grpc.credentials.createInsecure());
    const request = { version: API_VERSION, endpoint: endpoint.endpoint, resource_name: endpoint.resource, options: this.options() };
    const deadline = Date.now() + (this.settings.registerTimeoutMs ?? 10_000);
    return new Promise<void>((resolve, reject) => {
      client.Register!(request, { deadline }, (error: grpc.ServiceError | null) => {
        client.close();
        if (error) reject(new IsogroupError('E_KUBELET', `the kubelet refused ${endpoint.resource}: ${error.details || error.message}`, { code: error.code }));
        else resolve();
      });
    });
  }

  // ---- the DevicePlugin service (called by each endpoint)

  options(): DevicePluginOptions {
    // PreStartContainer is where the daemon lets go of a group for the container about to open it.
    return { pre_start_required: true, get_preferred_allocation_available: true };
  }

  preferred(resource: string, request: PreferredAllocationRequest): PreferredAllocationResponse {
    const devices = new Map(devicesOf(this.pool?.devices ?? [], resource).map((d) => [d.id, d]));
    return {
      container_responses: request.container_requests.map((c) => ({
        deviceIDs: preferredAllocation(devices, { available: c.available_deviceIDs, mustInclude: c.must_include_deviceIDs, size: c.allocation_size }),
      })),
    };
  }

  /**
   * Allocate, on a fresh read of the pool: every ID must be a healthy group of this resource, or
   * nothing is allocated (gRPC error, audited). Each allocated group gets an audit line; the daemon
   * keeps holding it.
   */
  allocate(resource: string, request: AllocateRequest): AllocateResponse {
    const ids = request.container_requests.flatMap((c) => c.devices_ids);
    try {
      const pool = this.read();
      const byId = new Map(devicesOf(pool.devices, resource).map((d) => [d.id, d]));
      const containers = request.container_requests.map((c) => {
        const wanted = [...new Set(c.devices_ids)];
        const unknown = wanted.filter((id) => !byId.has(id));
        if (unknown.length)
          throw new IsogroupError('E_NOT_FOUND', `unknown device ID(s) ${unknown.join(', ')}: not groups of ${resource} in the pool`, {
            resource,
            ids: unknown,
          });
        const groups = wanted.map((id) => byId.get(id)!);
        const sick = groups.filter((g) => !g.healthy);
        if (sick.length)
          throw new IsogroupError('E_UNHEALTHY', sick.map((g) => `group ${g.id}: ${g.problems.join('; ')}`).join('; '), {
            resource,
            ids: sick.map((g) => g.id),
          });
        return groups;
      });
      const groups = [...new Map(containers.flat().map((g) => [g.id, g])).values()];
      auditKubelet(this.session, { call: 'allocate', resource, groups: groups.map((g) => ({ id: g.id, members: g.members })), ids }, { ok: true });
      this.daemon.hub.publish('kubelet-allocate', { resource, groups: groups.map((g) => g.id) });
      return {
        container_responses: containers.map((gs) => {
          const a = containerAllocation(resource, gs, pool.facts);
          return {
            envs: a.envs,
            mounts: [],
            devices: a.devices.map((n) => ({ container_path: n.containerPath, host_path: n.hostPath, permissions: n.permissions })),
            annotations: {},
            cdi_devices: a.cdiDevices.map((name) => ({ name })),
          };
        }),
      };
    } catch (error) {
      if (isIsogroupError(error)) {
        this.auditRefusal('allocate', resource, ids, error);
        this.daemon.hub.publish('kubelet-allocate', { resource, ids, ok: false, error: error.message });
      }
      throw error;
    }
  }

  /**
   * Before the container starts: the kernel lets one file at a time open a group, so the daemon's hold
   * goes and the container's open takes over (the guard repairs the group meanwhile, and holds it
   * again once the container has closed it).
   */
  preStart(resource: string, request: PreStartContainerRequest): void {
    const wanted = [...new Set(request.devices_ids)];
    try {
      const known = new Map(devicesOf(this.read().devices, resource).map((d) => [d.id, d]));
      const unknown = wanted.filter((id) => !known.has(id));
      if (unknown.length)
        throw new IsogroupError('E_NOT_FOUND', `unknown device ID(s) ${unknown.join(', ')}: not groups of ${resource} in the pool`, { resource, ids: unknown });
      this.daemon.handToContainer(wanted);
      const groups = wanted.map((id) => ({ id, members: known.get(id)!.members }));
      auditKubelet(this.session, { call: 'prestart', resource, groups, ids: wanted }, { ok: true });
    } catch (error) {
      if (isIsogroupError(error)) this.auditRefusal('prestart', resource, wanted, error);
      throw error;
    } finally {
      this.scheduleSync();
    }
  }

  private auditRefusal(call: 'allocate' | 'prestart', resource: string, ids: readonly string[], error: IsogroupError): void {
    try {
      auditKubelet(this.session, { call, resource, groups: [], ids }, { ok: false, error });
    } catch (auditError) {
      this.logger.error('cannot audit a refused kubelet request', { error: (auditError as Error).message });
    }
  }

  /** Stop serving (sockets removed); the CDI spec and the pool stay: the groups stay assigned and the next start serves them again. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe?.();
    this.watcher?.close();
    if (this.poll) clearInterval(this.poll);
    if (this.syncTimer) clearTimeout(this.syncTimer);
    await Promise.allSettled([this.syncing, this.ensuring]);
    await Promise.all([...this.endpoints.values()].map((e) => e.close()));
    this.endpoints.clear();
  }
}
