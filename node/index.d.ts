import type {Root, INamespace} from 'protobufjs';

/** longrun's payload types as protobufjs JSON. */
export declare const protos: INamespace;

/**
 * Adds longrun's types (longrun.v1.OperationMetadata, longrun.v1.State and
 * google.protobuf.Struct/Value/ListValue) to a protobufjs root, such as the
 * `protoJson` a google-gax REST client is built with, keeping the types it
 * already has. Returns the root.
 */
export declare function addTo(root: Root): Root;
