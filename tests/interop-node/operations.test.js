'use strict';

// Google's Node client (google-gax, from npm, unmodified) against a real
// longrun server at LONGRUN_ENDPOINT: its Operations client over gRPC, and
// over REST (gax's "fallback") built the way a generated client builds it —
// its own proto root plus its service's HTTP rules — with longrun's types
// added by the `longrun-types` package (`node/`). Operations are polled to
// the end with gax's own LRO poller.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const {before, describe, test} = require('node:test');
const gax = require('google-gax');
const {PassThroughClient} = gax.googleAuthLibrary;
const protobuf = gax.protobuf;
const longrun = require('longrun-types');

const endpoint = new URL(process.env.LONGRUN_ENDPOINT || 'http://127.0.0.1:8080');
const servicePath = endpoint.hostname;
const port = Number(endpoint.port);
const parent = `projects/node/locations/l${process.pid}`;

/** longrun's REST API, for the producer and worker sides. */
async function call(method, path, body) {
  const response = await fetch(new URL(`/v1/${path}`, endpoint), {
    method,
    headers: body === undefined ? {} : {'content-type': 'application/json'},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  assert.equal(response.status, 200, `${method} ${path}: ${JSON.stringify(json)}`);
  return json;
}

/** An external operation (the producer finishes it) under `parent`. */
async function external(id, extra = {}) {
  return call('POST', `${parent}/operations`, {operationId: id, ...extra});
}

async function complete(id, outcome) {
  return call('POST', `${parent}/operations/${id}:complete`, outcome);
}

/** The HTTP rules a generated client for a service on longrun would carry. */
const httpRules = [
  {selector: 'google.longrunning.Operations.GetOperation', get: '/v1/{name=projects/*/locations/*/operations/*}'},
  {selector: 'google.longrunning.Operations.ListOperations', get: '/v1/{name=projects/*/locations/*}/operations'},
  {selector: 'google.longrunning.Operations.CancelOperation', post: '/v1/{name=projects/*/locations/*/operations/*}:cancel', body: '*'},
  {selector: 'google.longrunning.Operations.DeleteOperation', delete: '/v1/{name=projects/*/locations/*/operations/*}'},
];

function grpcClient() {
  return gax.lro({}).operationsClient({
    servicePath,
    port,
    sslCreds: gax.grpc.credentials.createInsecure(),
  });
}

/**
 * A generated client's proto root: its service's protos, which include
 * Google's google/longrunning/operations.proto with its HTTP annotations
 * (gax's own copy, which its package does not export by name).
 */
function serviceRoot() {
  const file = path.join(path.dirname(require.resolve('google-gax')), '..', 'protos', 'operations.json');
  return protobuf.Root.fromJSON(JSON.parse(fs.readFileSync(file, 'utf8')));
}

/** The REST client, longrun's types added to its root as the README says. */
function restClient() {
  const root = longrun.addTo(serviceRoot());
  const options = {servicePath, port, protocol: 'http', fallback: true, auth: new PassThroughClient()};
  const client = gax.fallback.lro({...options, protoJson: root, httpRules}).operationsClient(options);
  return {client, root};
}

/** Polls `operation` to the end with gax's LRO poller. */
async function pollToEnd(client, root, operation) {
  const Struct = root.lookupType('google.protobuf.Struct');
  const Metadata = root.lookupType('longrun.v1.OperationMetadata');
  const descriptor = new gax.LongrunningDescriptor(client, Struct.decode.bind(Struct), Metadata.decode.bind(Metadata));
  const backoff = gax.createBackoffSettings(50, 1.5, 200, 0, 0, 0, 10000);
  const [response, metadata] = await gax.operation(operation, descriptor, backoff).promise();
  return {response: Struct.toObject(response), metadata: Metadata.toObject(metadata, {enums: String})};
}

/** A worker elsewhere: claims one operation of `queue` and completes it with `response`. */
async function work(queue, response) {
  const claimed = await call('POST', `${parent}/operations:claim`, {queue, worker: 'node', wait: '10s'});
  assert.ok(claimed.leaseToken, JSON.stringify(claimed));
  const id = claimed.operation.name.split('/').pop();
  await call('POST', `${parent}/operations/${id}:update`, {leaseToken: claimed.leaseToken, progressPercent: 50});
  await new Promise(resolve => setTimeout(resolve, 200));
  return complete(id, {leaseToken: claimed.leaseToken, response});
}

describe('gRPC', () => {
  before(async () => {
    await external('grpc-ok', {verb: 'import'});
    await complete('grpc-ok', {response: {rows: 3}});
    await external('grpc-open', {verb: 'import'});
  });

  test('gets an operation with a Struct response', async () => {
    const [op] = await grpcClient().getOperation({name: `${parent}/operations/grpc-ok`});
    assert.equal(op.done, true);
    assert.equal(op.response.type_url, 'type.googleapis.com/google.protobuf.Struct');
    const struct = protobuf.Root.fromJSON(longrun.protos).lookupType('google.protobuf.Struct');
    assert.deepEqual(struct.toObject(struct.decode(op.response.value)), {fields: {rows: {numberValue: 3}}});
  });

  test('lists with a filter', async () => {
    const [operations] = await grpcClient().listOperations({name: parent, filter: 'done = false', pageSize: 10});
    assert.deepEqual(operations.map(op => op.name), [`${parent}/operations/grpc-open`]);
  });

  test('cancels and deletes', async () => {
    const client = grpcClient();
    const name = `${parent}/operations/grpc-open`;
    await client.cancelOperation({name});
    const [op] = await client.getOperation({name});
    const metadata = protobuf.Root.fromJSON(longrun.protos).lookupType('longrun.v1.OperationMetadata');
    assert.equal(metadata.decode(op.metadata.value).cancelRequested, true);
    await client.deleteOperation({name});
    await assert.rejects(client.getOperation({name}), error => error.code === gax.Status.NOT_FOUND);
  });
});

describe('REST (fallback) with longrun-types', () => {
  before(async () => {
    await external('rest-ok', {verb: 'export'});
    await complete('rest-ok', {response: {rows: 3, table: 'cities'}});
    await external('rest-open', {verb: 'export'});
    await external('rest-failed', {verb: 'export'});
    await complete('rest-failed', {error: {code: 9, message: 'the table is locked'}});
  });

  test('gets an operation, its metadata and Struct response decoded', async () => {
    const {client, root} = restClient();
    const [op] = await client.getOperation({name: `${parent}/operations/rest-ok`});
    assert.equal(op.done, true);
    assert.equal(op.metadata.type_url, 'type.googleapis.com/longrun.v1.OperationMetadata');
    const metadata = root.lookupType('longrun.v1.OperationMetadata').decode(op.metadata.value);
    assert.equal(metadata.verb, 'export');
    assert.equal(metadata.state, 3 /* SUCCEEDED */);
    const struct = root.lookupType('google.protobuf.Struct');
    assert.deepEqual(struct.toObject(struct.decode(op.response.value)), {
      fields: {rows: {numberValue: 3}, table: {stringValue: 'cities'}},
    });
  });

  test('lists with a filter, page by page', async () => {
    const {client} = restClient();
    const [first, next] = await client.listOperations(
      {name: parent, filter: 'metadata.verb = "export"', pageSize: 1},
      {autoPaginate: false},
    );
    assert.equal(first.length, 1);
    assert.ok(next && next.pageToken, 'a second page is promised');
    const names = [];
    for await (const op of client.listOperationsAsync({name: parent, filter: 'metadata.verb = "export"', pageSize: 1})) {
      names.push(op.name.split('/').pop());
    }
    assert.deepEqual(names.sort(), ['rest-failed', 'rest-ok', 'rest-open']);
  });

  test('a failed operation is an error with its code', async () => {
    const {client, root} = restClient();
    const [op] = await client.getOperation({name: `${parent}/operations/rest-failed`});
    await assert.rejects(pollToEnd(client, root, op), error => {
      assert.equal(error.code, 9);
      assert.match(error.message, /the table is locked/);
      return true;
    });
  });

  test("gax's poller follows a worker's operation to its response", async () => {
    const {client, root} = restClient();
    const op = await call('POST', `${parent}/operations`, {operationId: 'rest-work', queue: `node-${process.pid}`});
    const [started] = await client.getOperation({name: op.name});
    const worker = work(`node-${process.pid}`, {total: 6});
    const {response, metadata} = await pollToEnd(client, root, started);
    await worker;
    assert.deepEqual(response, {fields: {total: {numberValue: 6}}});
    assert.equal(metadata.state, 'SUCCEEDED');
    assert.equal(metadata.progressPercent, 100);
  });

  test('cancels and deletes; a missing operation is NOT_FOUND', async () => {
    const {client} = restClient();
    const name = `${parent}/operations/rest-open`;
    await client.cancelOperation({name});
    await complete('rest-open', {error: {code: 1, message: 'cancelled by request'}});
    const [op] = await client.getOperation({name});
    assert.equal(op.done, true);
    assert.equal(op.error.code, 1);
    await client.deleteOperation({name});
    await assert.rejects(client.getOperation({name}), error => error.code === gax.Status.NOT_FOUND);
  });

});

test("longrun-types' protos.json is what proto/ says", () => {
  const {generate} = require('../../node/scripts/generate.js');
  const shipped = fs.readFileSync(require.resolve('longrun-types/protos.json'), 'utf8');
  assert.equal(shipped, generate(protobuf), 'run node/scripts/generate.js');
});
