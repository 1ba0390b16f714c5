//! The server binary carries the built site (`src/server/embedded.rs`): rebuild it when
//! `target/site` changes, including files added after the last build (which the embedding's own
//! tracking misses). Only for the server build: the WASM build does not carry the site.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_SSR").is_some() {
        println!("cargo:rerun-if-changed=target/site");
        println!("cargo:rerun-if-changed=models/shapes");
    }
}
