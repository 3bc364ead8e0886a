//! Compiles proto/grpc_predict_v2.proto (the Open Inference Protocol's gRPC service) with a
//! protobuf compiler written in Rust (protox), so a plain `cargo build` needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc_predict_v2.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        // Tensor bytes stay slices of the received message instead of copies.
        .bytes(".inference")
        .compile_fds(fds)?;
    Ok(())
}
