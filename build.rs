//! Compiles proto/ with protox (pure Rust), so no system `protoc` is needed.
//! The generated code lands in OUT_DIR and is never committed or edited.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/ansinh/v1/envelope.proto",
        "proto/ansinh/v1/checkpoint.proto",
        "proto/ansinh/v1/gateway.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
