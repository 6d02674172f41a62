//! Generates, from `proto/` with protox (so no `protoc` binary is needed), the gRPC
//! services for the `serve` feature (ours and the Open Inference Protocol's) and the ONNX message subset for the `train` feature.

use std::{env, fs, path::PathBuf};

use protox::prost::Message;

const SERVICE: &str = "equiserve/v1/dynamics.proto";
const INFERENCE: &str = "inference/grpc_service.proto";
const ONNX: &str = "onnx/onnx_subset.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build emits nothing here, and without it cargo reruns this script on every edit.
    println!("cargo:rerun-if-changed=build.rs");
    let feature = |name: &str| env::var_os(format!("CARGO_FEATURE_{}", name.to_uppercase())).is_some();
    let mut protos = Vec::new();
    if feature("serve") {
        protos.extend([SERVICE, INFERENCE]);
    }
    if feature("train") {
        protos.push(ONNX);
    }
    if protos.is_empty() {
        return Ok(());
    }
    for proto in &protos {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let descriptors = protox::compile(&protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    if feature("serve") {
        // Served by grpc.reflection so grpcurl works without the .proto files.
        let service = protox::compile([SERVICE, INFERENCE], ["proto"])?;
        fs::write(out_dir.join("equiserve_descriptor.bin"), service.encode_to_vec())?;
    }
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
