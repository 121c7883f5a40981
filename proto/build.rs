//! Compiles the `.proto` files with `protox` (pure Rust, no system `protoc`) and generates the
//! prost/tonic code into `OUT_DIR`. `bytes` fields become `bytes::Bytes`, so the tensor chunks
//! are sliced out of the receive buffers instead of copied.
fn main() -> anyhow::Result<()> {
    let protos = ["protos/ecg/v1/types.proto", "protos/ecg/v1/cluster.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["protos"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
