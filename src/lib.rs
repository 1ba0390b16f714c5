//! easel: a text-to-image web app. The UI (`app`) and the wire types (`api`) compile for both
//! the browser (WASM, `hydrate`) and the server (`ssr`); everything else is server-only.
//!
//! Data flows one way: app -> api -> jobs -> engine; `webhooks` sends jobs' ends out over
//! `jobs`; `server` wires them together.
// The generator island is one deep view type: its parts are not type-erased (smaller WASM).
#![recursion_limit = "256"]

pub mod api;
pub mod app;

#[cfg(feature = "ssr")]
pub mod engine;
#[cfg(feature = "ssr")]
pub mod jobs;
#[cfg(feature = "ssr")]
pub mod scenes;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod webhooks;

/// WASM entry point: takes over the server-rendered page's islands (the generator); the rest
/// of the page is plain HTML and ships no code.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_islands();
}
