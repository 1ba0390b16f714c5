//! The UI: the HTML shell, the router and the pages. Compiles for both targets; it talks to the
//! server only through `crate::api`.

pub mod components;
mod generator;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    SsrMode, StaticSegment,
};

/// The document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options islands=true/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/easel.css"/>
        <Title text="easel — text to image"/>
        <Router>
            <main>
                <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                    // Async: the page waits for the models and the visitor's jobs, so it is
                    // whole without JavaScript (streamed Suspense needs a script to resolve).
                    <Route path=StaticSegment("") view=generator::GeneratorPage ssr=SsrMode::Async/>
                </Routes>
            </main>
        </Router>
    }
}
