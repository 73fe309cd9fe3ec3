//! Compiles the vendored KServe v2 / Triton protos (`proto/`) into the gRPC server's types.
//! protox parses them in pure Rust, so no `protoc` and no network is needed at build time.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/grpc_service.proto", "proto/model_config.proto"];
    let files = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // The client is for the tests (over their own tonic channel); no transport code, so
        // the server build needs no tonic transport feature.
        .build_client(true)
        .build_transport(false)
        .build_server(true)
        // The RPCs we do not serve answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        // Tensors travel as `bytes` fields: `Bytes` lets a decoded request's photos be
        // slices of the received message instead of copies.
        .bytes(".")
        .compile_fds(files)?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
