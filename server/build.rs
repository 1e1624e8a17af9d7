//! Compiles the internal gRPC contracts in `proto/` with a vendored protoc,
//! so building Cete never needs a system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds protoc through this variable.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(
            &["../proto/raft.proto", "../proto/peer.proto"],
            &["../proto"],
        )?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
