// The v1beta1 device plugin API loaded from deviceplugin.proto (next to this module, copied beside the
// build), with the message shapes as TypeScript sees them (field names as in the .proto).

import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** The API version a plugin registers with. */
export const API_VERSION = 'v1beta1';
/** The kubelet's registration socket in DevicePluginPath. */
export const KUBELET_SOCKET = 'kubelet.sock';

export interface DevicePluginOptions {
  pre_start_required: boolean;
  get_preferred_allocation_available: boolean;
}

export interface RegisterRequest {
  version: string;
  endpoint: string;
  resource_name: string;
  options: DevicePluginOptions;
}

export interface Device {
  ID: string;
  health: string;
  topology: { nodes: { ID: number }[] } | null;
}

export interface ListAndWatchResponse {
  devices: Device[];
}

export interface PreferredAllocationRequest {
  container_requests: { available_deviceIDs: string[]; must_include_deviceIDs: string[]; allocation_size: number }[];
}

export interface PreferredAllocationResponse {
  container_responses: { deviceIDs: string[] }[];
}

export interface AllocateRequest {
  container_requests: { devices_ids: string[] }[];
}

export interface ContainerAllocateResponse {
  envs: Record<string, string>;
  mounts: { container_path: string; host_path: string; read_only: boolean }[];
  devices: { container_path: string; host_path: string; permissions: string }[];
  annotations: Record<string, string>;
  cdi_devices: { name: string }[];
}

export interface AllocateResponse {
  container_responses: ContainerAllocateResponse[];
}

export interface PreStartContainerRequest {
  devices_ids: string[];
}

const PROTO_FILE = fileURLToPath(new URL('./deviceplugin.proto', import.meta.url));

let loaded: { Registration: grpc.ServiceClientConstructor; DevicePlugin: grpc.ServiceClientConstructor } | null = null;

/** The two services (loaded once). */
export const v1beta1 = (): { Registration: grpc.ServiceClientConstructor; DevicePlugin: grpc.ServiceClientConstructor } => {
  if (!loaded) {
    const definition = protoLoader.loadSync(PROTO_FILE, { keepCase: true, longs: Number, defaults: true, oneofs: true });
    const pkg = (grpc.loadPackageDefinition(definition) as Record<string, Record<string, grpc.ServiceClientConstructor>>).v1beta1!;
    loaded = { Registration: pkg.Registration!, DevicePlugin: pkg.DevicePlugin! };
  }
  return loaded;
};

/** A unix socket address as grpc-js takes it. */
export const unixAddress = (socketPath: string): string => `unix:${socketPath}`;
