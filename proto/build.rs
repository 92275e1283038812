//! Generates the gRPC code for every .proto under `proto/` with protox (pure
//! Rust, so no `protoc` is needed) and tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/workload.proto",
        "proto/sigil/types/v1/types.proto",
        "proto/sigil/agent/v1/agent.proto",
        "proto/sigil/admin/v1/admin.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // Kept for tests that enumerate every generated method (deny by default).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("sigil_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // The Workload API alone (with what it imports), for the reflection
    // service on the agent's socket: it must not describe Sigil's other APIs.
    let workload = protox::compile(["proto/workload.proto"], ["proto"])?;
    std::fs::write(
        out.join("workload_descriptor.bin"),
        prost::Message::encode_to_vec(&workload),
    )?;
    // The APIs' modules are flat (`crate::admin_api`, not
    // `crate::sigil::admin::v1`), so their references to the shared types
    // are pointed at `crate::types` instead of relative `super::` paths.
    tonic_prost_build::configure()
        .extern_path(".sigil.types.v1", "crate::types")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    // ... and the shared types themselves, which `extern_path` left out.
    let types = protox::compile(["proto/sigil/types/v1/types.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_fds(types)?;
    Ok(())
}
