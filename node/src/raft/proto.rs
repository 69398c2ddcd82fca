//! Generated gRPC types for `proto/raft.proto`.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("unisondb.raft.v1");
