#!/usr/bin/env node
// Writes protos.json: longrun's payload types as protobufjs JSON, read from
// the repository's proto/ with protobufjs (a google-gax dependency).
//
//   node scripts/generate.js [output]    (default: protos.json beside package.json)
//
// Run where `protobufjs` resolves, e.g. with
// NODE_PATH=tests/interop-node/node_modules after `npm ci` there. The
// interop suite checks that protos.json is what this writes.

'use strict';

const fs = require('fs');
const path = require('path');

const protoDir = path.join(__dirname, '..', '..', 'proto');

/** longrun's types that appear in operations, and the untyped JSON ones. */
const FILES = ['longrun/v1/metadata.proto', 'google/protobuf/struct.proto'];

/** protos.json's text, read with `protobuf` (the protobufjs module). */
function generate(protobuf) {
  const root = new protobuf.Root();
  // protobufjs knows the well-known types itself; longrun's come from proto/.
  root.resolvePath = (origin, target) =>
    target.startsWith('google/protobuf/') ? target : path.join(protoDir, target);
  root.loadSync(FILES, {keepCase: false});
  return JSON.stringify(root.toJSON(), null, 2) + '\n';
}

if (require.main === module) {
  const output = process.argv[2] || path.join(__dirname, '..', 'protos.json');
  fs.writeFileSync(output, generate(require('protobufjs')));
}

module.exports = {generate};
