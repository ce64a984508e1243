//! Generates the gRPC code from `proto/autoagent/v1`. Needs `protoc` (Debian `protobuf-compiler`,
//! installed by `make setup`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../proto";
    let protos = ["../proto/autoagent/v1/sensor.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &[proto_root])?;
    Ok(())
}
