//! Compiles `proto/` into Rust types with prost. The .proto files are parsed by protox, in
//! Rust, so a machine needs no `protoc`.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["remote.proto"], ["proto"]).expect("proto/ compiles");
    prost_build::Config::new().compile_fds(descriptors).expect("prost generates the remote-write types");
}
