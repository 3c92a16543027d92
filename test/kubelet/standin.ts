import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

// A stand-in kubelet, built from the published device plugin API v1beta1 alone (its own .proto, its own
// registration server and plugin client; nothing of the plugin's code). It does what the kubelet's
// device manager does with a plugin: serve Registration on DIR/kubelet.sock; on Register, check the
// version and resource name, then dial the plugin's endpoint, ask GetDevicePluginOptions and keep one
// ListAndWatch stream per resource (a new registration of a resource replaces the old connection); on a
// restart, remove every file in DIR and serve kubelet.sock anew.

const PROTO = fileURLToPath(new URL('./v1beta1.proto', import.meta.url));
const CHECKPOINT = 'kubelet_internal_checkpoint';

type Ctor = grpc.ServiceClientConstructor;
const api = (() => {
  const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true, oneofs: true });
  const pkg = (grpc.loadPackageDefinition(def) as unknown as { v1beta1: { Registration: Ctor; DevicePlugin: Ctor } }).v1beta1;
  return pkg;
})();

export interface KDevice {
  ID: string;
  health: string;
  topology: { nodes: { ID: number }[] } | null;
}
export interface KRegistration {
  version: string;
  endpoint: string;
  resource_name: string;
  options: { pre_start_required: boolean; get_preferred_allocation_available: boolean } | null;
}
export interface KAllocateResponse {
  container_responses: {
    envs: Record<string, string>;
    devices: { container_path: string; host_path: string; permissions: string }[];
    mounts: unknown[];
    annotations: Record<string, string>;
    cdi_devices: { name: string }[];
  }[];
}

type Unary = (request: unknown, options: grpc.CallOptions, callback: (error: grpc.ServiceError | null, response: unknown) => void) => void;

export class PluginConnection {
  readonly lists: KDevice[][] = [];
  options: KRegistration['options'] = null;
  streamError: grpc.ServiceError | null = null;
  private readonly client: grpc.Client;
  private stream: grpc.ClientReadableStream<{ devices: KDevice[] }> | null = null;

  constructor(
    readonly resource: string,
    readonly socket: string,
  ) {
    this.client = new api.DevicePlugin(`unix:${socket}`, grpc.credentials.createInsecure());
  }

  private call<T>(method: string, request: unknown): Promise<T> {
    const fn = (this.client as unknown as Record<string, Unary>)[method]!.bind(this.client);
    return new Promise<T>((resolve, reject) => fn(request, { deadline: Date.now() + 10_000 }, (e, r) => (e ? reject(e) : resolve(r as T))));
  }

  async open(): Promise<void> {
    this.options = await this.call('GetDevicePluginOptions', {});
    const stream = (this.client as unknown as { ListAndWatch: (r: unknown) => grpc.ClientReadableStream<{ devices: KDevice[] }> }).ListAndWatch({});
    stream.on('data', (m: { devices: KDevice[] }) => this.lists.push(m.devices));
    stream.on('error', (e: grpc.ServiceError) => {
      this.streamError = e;
    });
    this.stream = stream;
  }

  /** The last list received (null before the first). */
  latest(): KDevice[] | null {
    return this.lists.at(-1) ?? null;
  }

  allocate(containers: string[][]): Promise<KAllocateResponse> {
    return this.call('Allocate', { container_requests: containers.map((ids) => ({ devices_ids: ids })) });
  }

  async preferred(available: string[], mustInclude: string[], size: number): Promise<string[]> {
    const r = await this.call<{ container_responses: { deviceIDs: string[] }[] }>('GetPreferredAllocation', {
      container_requests: [{ available_deviceIDs: available, must_include_deviceIDs: mustInclude, allocation_size: size }],
    });
    return r.container_responses[0]!.deviceIDs;
  }

  preStart(ids: string[]): Promise<unknown> {
    return this.call('PreStartContainer', { devices_ids: ids });
  }

  close(): void {
    this.stream?.cancel();
    this.client.close();
  }
}

export class StandInKubelet {
  readonly registrations: KRegistration[] = [];
  readonly connections = new Map<string, PluginConnection>();
  readonly refused: { request: KRegistration; reason: string }[] = [];
  private server: grpc.Server | null = null;

  private constructor(readonly dir: string) {}

  static async start(dir: string): Promise<StandInKubelet> {
    const k = new StandInKubelet(dir);
    await k.serve();
    return k;
  }

  get socket(): string {
    return path.join(this.dir, 'kubelet.sock');
  }

  private async serve(): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true });
    const server = new grpc.Server();
    server.addService(api.Registration.service, {
      Register: (call: grpc.ServerUnaryCall<KRegistration, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const r = call.request;
        const reason =
          r.version !== 'v1beta1'
            ? `unsupported version ${r.version}`
            : !/^[a-z0-9.-]+\/[A-Za-z0-9][-A-Za-z0-9_.]*$/.test(r.resource_name) || r.resource_name.startsWith('kubernetes.io/')
              ? `invalid resource name ${r.resource_name}`
              : path.basename(r.endpoint) !== r.endpoint
                ? `endpoint ${r.endpoint} is not a file name in ${this.dir}`
                : null;
        if (reason) {
          this.refused.push({ request: r, reason });
          callback({ code: grpc.status.INVALID_ARGUMENT, details: reason });
          return;
        }
        this.registrations.push(r);
        callback(null, {});
        // The kubelet dials the plugin after answering.
        this.connections.get(r.resource_name)?.close();
        const c = new PluginConnection(r.resource_name, path.join(this.dir, r.endpoint));
        this.connections.set(r.resource_name, c);
        void c.open().catch((e: grpc.ServiceError) => {
          c.streamError = e;
        });
      },
    });
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix:${this.socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
    );
    this.server = server;
  }

  /** The connection to a resource's plugin (throws when it never registered). */
  plugin(resource: string): PluginConnection {
    const c = this.connections.get(resource);
    if (!c) throw new Error(`${resource} never registered (registered: ${[...this.connections.keys()].join(', ') || 'none'})`);
    return c;
  }

  registrationsOf(resource: string): KRegistration[] {
    return this.registrations.filter((r) => r.resource_name === resource);
  }

  private stop(): void {
    for (const c of this.connections.values()) c.close();
    this.connections.clear();
    this.server?.forceShutdown();
    this.server = null;
  }

  /** A kubelet restart: stop, remove every file in the directory but the checkpoint, serve kubelet.sock anew. */
  async restart(): Promise<void> {
    this.stop();
    for (const name of fs.readdirSync(this.dir)) if (name !== CHECKPOINT) fs.rmSync(path.join(this.dir, name), { force: true, recursive: true });
    await this.serve();
  }

  close(): void {
    this.stop();
    fs.rmSync(this.socket, { force: true });
  }
}
