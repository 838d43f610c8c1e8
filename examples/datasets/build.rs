//! Compiles the example's protos (protox: no `protoc` needed) into prost
//! types with `prost::Name`, and the descriptor set the server registers.

use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(["example/datasets/v1/datasets.proto"], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("datasets.bin"), fds.encode_to_vec())?;
    prost_build::Config::new()
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        .compile_fds(fds)?;
    Ok(())
}
