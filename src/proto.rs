//! The gRPC APIs generated from `proto/`.

pub mod v1 {
    tonic::include_proto!("equiserve.v1");
}

/// The Open Inference Protocol (KServe v2) with Triton's extensions, from
/// `proto/inference/grpc_service.proto`.
pub mod inference {
    tonic::include_proto!("inference");
}

/// Encoded descriptors of our protos, served by grpc.reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/equiserve_descriptor.bin"));
