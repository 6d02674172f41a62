//! The gRPC API generated from `proto/equiserve/v1/dynamics.proto`.

pub mod v1 {
    tonic::include_proto!("equiserve.v1");
}

/// Encoded descriptors of our protos, served by grpc.reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/equiserve_descriptor.bin"));
