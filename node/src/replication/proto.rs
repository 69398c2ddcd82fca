//! Generated gRPC types for `proto/replication.proto`.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("unisondb.replication.v1");
