#!/usr/bin/env node
// Node.js client for alphaswarm-controller.
//
// Loads the .proto files at run time (no code generation), starts a service with
// 2 replicas on the `local` provider (each prints "started", then runs `sleep 300`),
// prints a few StreamMetrics samples and the replicas' last log line (StreamLogs,
// which ends by itself without `follow`), stops the service and exits 0. On a gRPC error it prints the status
// code and the google.rpc.ErrorInfo reason decoded from the
// `grpc-status-details-bin` trailer, stops what it started, and exits 1.
//
// Usage: node client.mjs [--target HOST:PORT] [--samples N] [--env KEY=VALUE]...
// Run `node client.mjs --help` for every option.

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const DEFAULT_PROTOS = resolve(HERE, "..", "..", "protos");
const SERVICE_PROTO = "alphaswarm/provider/v1/provider_service.proto";
const UNARY_DEADLINE_MS = 30_000;

const USAGE = `usage: node client.mjs [options]

  --target HOST:PORT   server address (env ALPHASWARM_TARGET; default 127.0.0.1:50051)
  --token TOKEN        bearer token sent as 'authorization: Bearer ...' (env ALPHASWARM_TOKEN)
  --tls                use TLS with the system's root certificates
  --ca-cert FILE       use TLS and verify the server with this CA bundle (env ALPHASWARM_CA_CERT)
  --client-cert FILE   client certificate for mutual TLS, with --client-key (implies TLS)
  --client-key FILE    client private key for mutual TLS
  --tls-server-name N  expected name in the server certificate, when it differs from the host
  --provider ALIAS     provider alias (env ALPHASWARM_PROVIDER; default local)
  --namespace NS       namespace of the service (default examples)
  --service ID         service id (default node-example)
  --replicas N         replicas to start (default 2)
  --samples N          metric samples to print before stopping (default 4)
  --interval SECONDS   time between samples (default 0.5)
  --env KEY=VALUE      environment variable of every replica (repeatable)
  --protos DIR         directory holding alphaswarm/provider/v1/*.proto (default ../../protos)
  --help               show this help`;

// google.rpc.Status and the detail messages the server sends. proto-loader does
// not ship google/rpc/*.proto, and three small messages do not justify a
// dependency on the googleapis protos; the field numbers are the published ones.
const RPC_PROTO = `
syntax = "proto3";
package google.rpc;
import "google/protobuf/any.proto";
message Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
message BadRequest {
  message FieldViolation { string field = 1; string description = 2; }
  repeated FieldViolation field_violations = 1;
}
`;
const rpcRoot = new protobuf.Root();
rpcRoot.addJSON(protobuf.common.get("google/protobuf/any.proto").nested);
protobuf.parse(RPC_PROTO, rpcRoot, { keepCase: false });
const RpcStatus = rpcRoot.lookupType("google.rpc.Status");
const ErrorInfo = rpcRoot.lookupType("google.rpc.ErrorInfo");
const BadRequest = rpcRoot.lookupType("google.rpc.BadRequest");

/** Parses argv and the environment into the options the run needs. */
function options(argv, env) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      target: { type: "string", default: env.ALPHASWARM_TARGET || "127.0.0.1:50051" },
      token: { type: "string", default: env.ALPHASWARM_TOKEN || "" },
      tls: { type: "boolean", default: false },
      "ca-cert": { type: "string", default: env.ALPHASWARM_CA_CERT || "" },
      "client-cert": { type: "string", default: "" },
      "client-key": { type: "string", default: "" },
      "tls-server-name": { type: "string", default: "" },
      provider: { type: "string", default: env.ALPHASWARM_PROVIDER || "local" },
      namespace: { type: "string", default: "examples" },
      service: { type: "string", default: "node-example" },
      replicas: { type: "string", default: "2" },
      samples: { type: "string", default: "4" },
      interval: { type: "string", default: "0.5" },
      env: { type: "string", multiple: true, default: [] },
      protos: { type: "string", default: DEFAULT_PROTOS },
      help: { type: "boolean", default: false },
    },
  });
  const replicaEnv = {};
  for (const pair of values.env) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`--env wants KEY=VALUE, got ${JSON.stringify(pair)}`);
    replicaEnv[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  if (Boolean(values["client-cert"]) !== Boolean(values["client-key"])) {
    throw new UsageError("--client-cert and --client-key go together");
  }
  return {
    ...values,
    replicas: integer("--replicas", values.replicas),
    samples: integer("--samples", values.samples),
    interval: Number(values.interval),
    secure: values.tls || Boolean(values["ca-cert"] || values["client-cert"]),
    replicaEnv,
  };
}

class UsageError extends Error {}

function integer(name, raw) {
  if (!/^\d+$/.test(raw)) throw new UsageError(`${name} wants a whole number, got ${raw}`);
  return Number(raw);
}

/** Loads the ProviderService definition straight from the .proto files. */
function loadService(protosDir) {
  const definition = protoLoader.loadSync(SERVICE_PROTO, {
    // Resolves alphaswarm/provider/v1/types.proto; the google/protobuf well-known
    // types (duration, timestamp) are built into protobufjs and need no directory.
    includeDirs: [protosDir],
    keepCase: false, // fields in lowerCamelCase: serviceId, desiredReplicas, ...
    longs: String, // int64 (memoryBytes, Timestamp.seconds) as decimal strings
    enums: String, // DEPLOYMENT_STATE_RUNNING rather than 2
    defaults: true, // absent scalars read as 0 / "" / false
  });
  const loaded = grpc.loadPackageDefinition(definition);
  return loaded.alphaswarm.provider.v1.ProviderService;
}

/** Channel credentials: plaintext, or TLS (system roots or a CA file, optional client cert). */
function credentials(opts) {
  if (!opts.secure) return grpc.credentials.createInsecure();
  const read = (file) => (file ? readFileSync(file) : null);
  const channel = grpc.credentials.createSsl(
    read(opts["ca-cert"]), // null: the system's root certificates
    read(opts["client-key"]),
    read(opts["client-cert"]),
  );
  if (!opts.token) return channel;
  const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${opts.token}`);
    callback(null, metadata);
  });
  return grpc.credentials.combineChannelCredentials(channel, bearer);
}

/** Per-call metadata: the bearer token on plaintext channels (see credentials()). */
function callMetadata(opts) {
  const metadata = new grpc.Metadata();
  // grpc-js refuses call credentials on an insecure channel, so plaintext
  // (a loopback development server) gets the token as plain metadata instead.
  if (opts.token && !opts.secure) {
    metadata.set("authorization", `Bearer ${opts.token}`);
  }
  return metadata;
}

/** One unary call as a promise, with a deadline. */
function unary(client, method, request, metadata) {
  return new Promise((resolvePromise, reject) => {
    const deadline = new Date(Date.now() + UNARY_DEADLINE_MS);
    client[method](request, metadata, { deadline }, (error, response) => {
      if (error) {
        error.method = method;
        reject(error);
      } else {
        resolvePromise(response);
      }
    });
  });
}

/**
 * Reads `samples` messages of StreamMetrics, then cancels the stream.
 * Resolves with the samples read; rejects with the stream's gRPC error.
 */
function streamMetrics(client, request, metadata, samples, intervalSeconds, onSample) {
  return new Promise((resolvePromise, reject) => {
    // A generous deadline so a stalled backend cannot hang the example forever.
    const deadline = new Date(Date.now() + (samples * intervalSeconds + 30) * 1000);
    const call = client.StreamMetrics(request, metadata, { deadline });
    const seen = [];
    let done = false;
    const finish = (error) => {
      if (done) return;
      done = true;
      if (error) {
        error.method = "StreamMetrics";
        reject(error);
      } else {
        resolvePromise(seen);
      }
    };
    const interrupt = () => {
      call.cancel();
      finish();
    };
    process.once("SIGINT", interrupt);
    call.on("data", (message) => {
      if (done) return;
      seen.push(message.sample);
      onSample(message.sample, seen.length);
      if (seen.length >= samples) {
        process.removeListener("SIGINT", interrupt);
        call.cancel(); // the server streams until the caller cancels
        finish();
      }
    });
    call.on("error", (error) => {
      process.removeListener("SIGINT", interrupt);
      finish(error.code === grpc.status.CANCELLED && done ? undefined : error);
    });
    call.on("end", () => {
      process.removeListener("SIGINT", interrupt);
      finish();
    });
  });
}

/**
 * Reads StreamLogs to its end: without `follow` the server sends the last `tailLines`
 * lines of each replica and ends the call. Resolves with the entries.
 */
function streamLogs(client, request, metadata) {
  return new Promise((resolvePromise, reject) => {
    const deadline = new Date(Date.now() + UNARY_DEADLINE_MS);
    const call = client.StreamLogs(request, metadata, { deadline });
    const entries = [];
    call.on("data", (message) => entries.push(message.entry));
    call.on("error", (error) => {
      error.method = "StreamLogs";
      reject(error);
    });
    call.on("end", () => resolvePromise(entries));
  });
}

/** Decodes google.rpc.Status from the trailer into printable lines. */
function errorDetails(error) {
  const lines = [];
  const raw = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (raw.length === 0) return lines;
  let status;
  try {
    status = RpcStatus.decode(raw[0]);
  } catch (decodeError) {
    return [`  (could not decode grpc-status-details-bin: ${decodeError.message})`];
  }
  for (const any of status.details) {
    const type = any.type_url ?? any.typeUrl ?? "";
    if (type.endsWith("/google.rpc.ErrorInfo")) {
      const info = ErrorInfo.decode(any.value);
      lines.push(`  reason: ${info.reason} (domain ${info.domain})`);
      for (const [key, value] of Object.entries(info.metadata ?? {}).sort()) {
        lines.push(`  metadata ${key}: ${value}`);
      }
    } else if (type.endsWith("/google.rpc.BadRequest")) {
      for (const violation of BadRequest.decode(any.value).fieldViolations) {
        lines.push(`  field ${violation.field}: ${violation.description}`);
      }
    }
  }
  return lines;
}

function describeError(error) {
  if (error.code === undefined) return `error: ${error.message}`;
  const name = Object.keys(grpc.status).find((key) => grpc.status[key] === error.code);
  const head = `error: ${error.method ?? "call"} failed: ${name ?? "UNKNOWN"} (${error.code}): ${error.details}`;
  return [head, ...errorDetails(error)].join("\n");
}

function timestamp(ts) {
  if (!ts) return "-";
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6)).toISOString();
}

function statusLine(verb, status) {
  return (
    `${verb} ${status.namespace}/${status.serviceId} on ${status.provider}: ` +
    `state=${status.state} desired=${status.desiredReplicas} ready=${status.readyReplicas}`
  );
}

function sampleLine(sample, index) {
  const mib = (Number(sample.memoryBytes) / 2 ** 20).toFixed(1);
  const tail = sample.ok ? "ok" : `not ok: ${sample.error}`;
  return (
    `sample ${index}: at=${timestamp(sample.timestamp)} replicas=${sample.replicas} ` +
    `cpu=${sample.cpuPercent.toFixed(1)}% memory=${mib}MiB ` +
    `rx=${sample.networkRxBytes} tx=${sample.networkTxBytes} ${tail}`
  );
}

async function run(opts) {
  const ProviderService = loadService(opts.protos);
  const channelOptions = opts["tls-server-name"]
    ? { "grpc.ssl_target_name_override": opts["tls-server-name"] }
    : {};
  const client = new ProviderService(opts.target, credentials(opts), channelOptions);
  const metadata = callMetadata(opts);
  const ref = { provider: opts.provider, serviceId: opts.service, namespace: opts.namespace };
  console.log(`target ${opts.target}, provider ${opts.provider}`);

  let started = false;
  let failure;
  try {
    const spec = {
      serviceId: opts.service,
      namespace: opts.namespace,
      command: ["sh", "-c", "echo started; exec sleep 300"],
      replicas: opts.replicas,
      env: opts.replicaEnv,
      labels: { "app.kubernetes.io/managed-by": "alphaswarm-example-node" },
    };
    const start = await unary(client, "StartDeployment", { provider: opts.provider, spec }, metadata);
    started = true;
    console.log(statusLine("started", start.status));

    const seconds = Math.floor(opts.interval);
    const interval = { seconds: String(seconds), nanos: Math.round((opts.interval - seconds) * 1e9) };
    const samples = await streamMetrics(
      client,
      { ...ref, interval },
      metadata,
      opts.samples,
      opts.interval,
      (sample, index) => console.log(sampleLine(sample, index)),
    );
    console.log(`received ${samples.length} samples`);

    const entries = await streamLogs(client, { ...ref, tailLines: 1 }, metadata);
    for (const entry of entries) {
      console.log(`log ${entry.instanceId} ${entry.stream}: ${entry.text}`);
    }
    console.log(`received ${entries.length} log lines`);
  } catch (error) {
    failure = error;
    console.error(describeError(error));
  }

  if (started) {
    // Stop even after a failed stream: the example must not leave replicas behind.
    try {
      const stop = await unary(client, "StopDeployment", ref, metadata);
      console.log(statusLine("stopped", stop.status));
    } catch (error) {
      failure ??= error;
      console.error(describeError(error));
    }
  }
  client.close();
  return failure ? 1 : 0;
}

async function main() {
  let opts;
  try {
    opts = options(process.argv.slice(2), process.env);
  } catch (error) {
    console.error(`${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (opts.help) {
    console.log(USAGE);
    return 0;
  }
  if (!(opts.interval > 0)) {
    console.error(`--interval wants a positive number of seconds\n\n${USAGE}`);
    return 2;
  }
  return run(opts);
}

process.exitCode = await main();
