// One resource's device plugin endpoint: a gRPC server on a unix socket in the kubelet's directory,
// serving the v1beta1 DevicePlugin service. What it answers comes from the front end (kubelet/plugin.ts);
// this file only speaks the protocol: streams, errors, the socket's life.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../daemon/log.js';
import { grpcStatusFor, IsogroupError } from '../errors.js';
import {
  type AllocateRequest,
  type AllocateResponse,
  type Device,
  type DevicePluginOptions,
  type PreferredAllocationRequest,
  type PreferredAllocationResponse,
  type PreStartContainerRequest,
  unixAddress,
  v1beta1,
} from './api.js';

export interface EndpointHandlers {
  options(): DevicePluginOptions;
  preferred(resource: string, request: PreferredAllocationRequest): PreferredAllocationResponse;
  allocate(resource: string, request: AllocateRequest): AllocateResponse;
  preStart(resource: string, request: PreStartContainerRequest): void;
}

// The longest unix socket path (sun_path, with its terminating NUL).
const MAX_SOCKET_PATH = 107;

/** The endpoint's socket file name for a resource: isogroup.io/8086_10d3 -> isogroup.io_8086_10d3.sock. */
export const endpointName = (resource: string): string => `${resource.replace(/[^A-Za-z0-9_.-]/g, '_')}.sock`;

/** A file's identity: a socket removed and created again is a different one. */
export const fileIdentity = (file: string): string | null => {
  try {
    const st = fs.statSync(file);
    return st.isSocket() ? `${st.ino}:${st.ctimeMs}` : null;
  } catch {
    return null;
  }
};

// A ListAndWatch stream: the newest list only is kept while the kubelet is not reading, so a stalled
// kubelet costs one list, never a queue.
class ListStream {
  private pending: Device[] | null = null;
  private blocked = false;

  constructor(private readonly call: grpc.ServerWritableStream<unknown, { devices: Device[] }>) {
    call.on('drain', () => {
      this.blocked = false;
      if (this.pending) {
        const next = this.pending;
        this.pending = null;
        this.send(next);
      }
    });
  }

  send(devices: Device[]): void {
    if (this.blocked) {
      this.pending = devices;
      return;
    }
    if (!this.call.write({ devices })) this.blocked = true;
  }

  end(): void {
    this.call.end();
  }
}

export class ResourceEndpoint {
  readonly endpoint: string;
  readonly socketPath: string;
  /** The kubelet socket this endpoint last registered with (its identity), null: not registered. */
  registeredWith: string | null = null;
  private server: grpc.Server | null = null;
  private bound: string | null = null;
  private readonly streams = new Set<ListStream>();
  private current: Device[] = [];
  private currentKey = '[]';

  constructor(
    readonly resource: string,
    readonly dir: string,
    private readonly handlers: EndpointHandlers,
    private readonly logger: Logger,
  ) {
    this.endpoint = endpointName(resource);
    this.socketPath = path.join(dir, this.endpoint);
    if (this.socketPath.length > MAX_SOCKET_PATH)
      throw new IsogroupError('E_USAGE', `${this.socketPath} is longer than a unix socket path may be (${MAX_SOCKET_PATH}): use a shorter --kubelet-dir`, {
        socket: this.socketPath,
      });
  }

  /** Streams open now (tests, status). */
  get watchers(): number {
    return this.streams.size;
  }

  /** The list the kubelet has (or gets on connecting). */
  get devices(): Device[] {
    return this.current;
  }

  /** A new list: sent to every stream when it differs from the last one. */
  publish(devices: Device[]): boolean {
    const key = JSON.stringify(devices);
    if (key === this.currentKey) return false;
    this.current = devices;
    this.currentKey = key;
    for (const s of this.streams) s.send(devices);
    return true;
  }

  /** Our socket is the one we bound (the kubelet removes every socket in its directory when it starts). */
  intact(): boolean {
    return this.bound !== null && fileIdentity(this.socketPath) === this.bound;
  }

  /** Serve on the socket (a stale file of the same name is removed first). */
  async listen(): Promise<void> {
    if (this.server) await this.close();
    fs.rmSync(this.socketPath, { force: true });
    const server = new grpc.Server();
    server.addService(v1beta1().DevicePlugin.service, this.service());
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(unixAddress(this.socketPath), grpc.ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())),
    ).catch((error: Error) => {
      server.forceShutdown();
      throw new IsogroupError('E_KUBELET', `cannot serve ${this.resource} on ${this.socketPath}: ${error.message}`, { socket: this.socketPath });
    });
    this.server = server;
    this.bound = fileIdentity(this.socketPath);
    this.registeredWith = null;
  }

  /** Stop serving: open streams end, the socket file goes (unless another has replaced it). */
  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const s of this.streams) s.end();
    this.streams.clear();
    if (server) server.forceShutdown();
    if (this.bound !== null && fileIdentity(this.socketPath) === this.bound) fs.rmSync(this.socketPath, { force: true });
    this.bound = null;
    this.registeredWith = null;
  }

  private service(): grpc.UntypedServiceImplementation {
    const unary =
      <Req, Res>(name: string, fn: (request: Req) => Res) =>
      (call: grpc.ServerUnaryCall<Req, Res>, callback: grpc.sendUnaryData<Res>): void => {
        try {
          callback(null, fn(call.request));
        } catch (error) {
          const message = error instanceof Error ? error.message : String(error);
          this.logger.warn('device plugin request refused', { resource: this.resource, call: name, error: message });
          callback({ code: grpcStatusFor(error), details: message });
        }
      };
    return {
      GetDevicePluginOptions: unary('GetDevicePluginOptions', () => this.handlers.options()),
      ListAndWatch: (call: grpc.ServerWritableStream<unknown, { devices: Device[] }>) => {
        const stream = new ListStream(call);
        this.streams.add(stream);
        const gone = (): void => {
          this.streams.delete(stream);
        };
        call.on('cancelled', gone);
        call.on('close', gone);
        call.on('error', gone);
        stream.send(this.current);
      },
      GetPreferredAllocation: unary('GetPreferredAllocation', (r: PreferredAllocationRequest) => this.handlers.preferred(this.resource, r)),
      Allocate: unary('Allocate', (r: AllocateRequest) => this.handlers.allocate(this.resource, r)),
      PreStartContainer: unary('PreStartContainer', (r: PreStartContainerRequest) => {
        this.handlers.preStart(this.resource, r);
        return {};
      }),
    };
  }
}
