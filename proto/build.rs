//! Compiles the `.proto` files with protox (pure Rust), so no system
//! `protoc` is needed, then generates the Rust types with prost.

fn main() {
    let files = [
        "proto/mesos/v1/mesos.proto",
        "proto/mesos/v1/scheduler/scheduler.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"]).expect("the .proto files compile");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("prost generates code");
}
