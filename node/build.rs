//! Compiles `proto/*.proto` with tonic; protoc comes from `protoc-bin-vendored`, so no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded, so setting the variable here is sound.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=../proto/replication.proto");
    println!("cargo:rerun-if-changed=../proto/raft.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Record payloads stay `Bytes` end to end (WAL reader → wire → apply) without copies.
        .bytes(".unisondb.replication.v1.WalRecord.payload")
        .compile_protos(
            &["../proto/replication.proto", "../proto/raft.proto"],
            &["../proto"],
        )?;
    Ok(())
}
