// A stand-in kubelet for the guest, from the published device plugin API v1beta1 alone (the stand-in's
// own test/kubelet/v1beta1.proto; nothing of the plugin's code): serves Registration on DIR/kubelet.sock,
// dials each registered endpoint, keeps its ListAndWatch stream, and calls Allocate / PreStartContainer.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { REPO } from './lib.mjs';

const require = createRequire(path.join(REPO, 'package.json'));
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const api = grpc.loadPackageDefinition(
  protoLoader.loadSync(path.join(REPO, 'test/kubelet/v1beta1.proto'), { keepCase: true, longs: Number, defaults: true, oneofs: true }),
).v1beta1;

export class GuestKubelet {
  constructor(dir) {
    this.dir = dir;
    this.registrations = [];
    this.plugins = new Map(); // resource -> { client, lists }
    this.server = null;
  }

  async start() {
    fs.mkdirSync(this.dir, { recursive: true });
    const server = new grpc.Server();
    server.addService(api.Registration.service, {
      Register: (call, callback) => {
        const r = call.request;
        this.registrations.push(r);
        callback(null, {});
        const client = new api.DevicePlugin(`unix:${path.join(this.dir, r.endpoint)}`, grpc.credentials.createInsecure());
        const p = { client, lists: [], resource: r.resource_name };
        this.plugins.get(r.resource_name)?.client.close();
        this.plugins.set(r.resource_name, p);
        const stream = client.ListAndWatch({});
        stream.on('data', (m) => p.lists.push(m.devices));
        stream.on('error', () => undefined);
      },
    });
    await new Promise((resolve, reject) =>
      server.bindAsync(`unix:${path.join(this.dir, 'kubelet.sock')}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
    );
    this.server = server;
    return this;
  }

  call(resource, method, request) {
    const p = this.plugins.get(resource);
    if (!p) return Promise.reject(new Error(`${resource} is not registered`));
    return new Promise((resolve, reject) => p.client[method](request, { deadline: Date.now() + 60000 }, (e, r) => (e ? reject(e) : resolve(r))));
  }

  latest(resource) {
    return this.plugins.get(resource)?.lists.at(-1) ?? null;
  }

  close() {
    for (const p of this.plugins.values()) p.client.close();
    this.server?.forceShutdown();
  }
}
