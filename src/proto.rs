//! The gRPC APIs generated from `proto/`.

pub mod v1 {
    tonic::include_proto!("equiserve.v1");
}

/// The Open Inference Protocol (KServe v2) with Triton's extensions, from
/// `proto/inference/grpc_service.proto`.
pub mod inference {
    tonic::include_proto!("inference");

    /// The protocol's name for float32 tensors.
    pub const FP32: &str = "FP32";

    /// float32 values as a tensor's raw contents (little-endian, as the protocol sends them).
    pub fn fp32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
        values.into_iter().flat_map(f32::to_le_bytes).collect()
    }
}

/// Encoded descriptors of our protos, served by grpc.reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/equiserve_descriptor.bin"));
