//! The easel server binary: configuration -> store -> engine -> worker -> serve.

/// Many small, short-lived allocations on every thread (rendering, JSON, HTTP): mimalloc serves
/// them from per-thread pages where glibc's malloc contends and consolidates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    easel::server::main().await
}
