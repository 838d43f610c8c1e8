//! Compiles `proto/` with protox (pure Rust, so no `protoc` is needed) and
//! generates prost/tonic code plus the encoded descriptor set that feeds the
//! type registry and gRPC reflection.

use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "google/rpc/status.proto",
        "google/rpc/code.proto",
        "google/rpc/error_details.proto",
        "google/longrunning/operations.proto",
        "longrun/v1/metadata.proto",
        "longrun/v1/control.proto",
        "longrun/v1/watch.proto",
    ];
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptors.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Undecodable requests are INVALID_ARGUMENT (src/codec.rs).
        .codec_path("crate::codec::Codec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
