//! Compiles `proto/pgpilot.proto` with protox (pure Rust): no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["pgpilot.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/pgpilot.proto");
    Ok(())
}
