//! Compiles `proto/pgpilot.proto` with protox (pure Rust): no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["pgpilot.proto"], ["proto"])?;
    // A message that carries a secret gets a Debug of our own (src/lib.rs).
    tonic_prost_build::configure()
        .skip_debug(["pgpilot.v1.ReplicationPassword"])
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/pgpilot.proto");
    Ok(())
}
