//! The easel server binary: configuration -> store -> engine -> worker -> serve.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    easel::server::main().await
}
