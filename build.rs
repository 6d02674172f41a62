//! Generates the gRPC service and the ONNX message subset from `proto/` with protox,
//! so no `protoc` binary is needed.

use std::{env, fs, path::PathBuf};

use protox::prost::Message;

const PROTOS: &[&str] = &["equiserve/v1/dynamics.proto", "onnx/onnx_subset.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build emits nothing here, and without it cargo reruns this script on every edit.
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Served by grpc.reflection so grpcurl works without the .proto files.
    fs::write(out_dir.join("equiserve_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
