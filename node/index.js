'use strict';

// longrun's payload types for Google's Node clients. google-gax's REST
// transport decodes every `Any` in an Operation through the client's proto
// root, so `longrun.v1.OperationMetadata` (and `google.protobuf.Struct`, for
// untyped JSON) must be in it. `addTo(root)` puts them there.

const protos = require('./protos.json');

/** A package (not a message, enum or service), as JSON or as reflected. */
function isNamespace(object) {
  return !object.fields && !object.values && !object.methods;
}

/**
 * Adds what `nested` defines to `namespace`, keeping what it already has:
 * a root that already defines `google.protobuf.Timestamp` keeps its own.
 */
function merge(namespace, nested) {
  for (const [name, definition] of Object.entries(nested)) {
    const existing = namespace.get(name);
    if (!existing) {
      namespace.addJSON({[name]: definition});
    } else if (isNamespace(definition) && isNamespace(existing)) {
      merge(existing, definition.nested || {});
    }
  }
}

/**
 * Adds longrun's types to a protobufjs root, such as the `protoJson` a
 * google-gax REST (fallback) client is built with. Returns the root.
 *
 * @param {import('protobufjs').Root} root
 * @returns {import('protobufjs').Root}
 */
function addTo(root) {
  merge(root, protos.nested);
  return root;
}

module.exports = {addTo, protos};
