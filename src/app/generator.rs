//! The generator page: prompt form, progress and result.

use leptos::prelude::*;

use crate::api::MAX_PROMPT_CHARS;

#[component]
pub fn GeneratorPage() -> impl IntoView {
    let prompt = RwSignal::new(String::new());
    let length = move || prompt.with(|p| p.trim().chars().count());
    view! {
        <header class="masthead">
            <h1>"easel"</h1>
            <p class="tagline">"Describe a picture; easel paints it."</p>
        </header>
        <form class="prompt-form">
            <label for="prompt">"Prompt"</label>
            <textarea
                id="prompt"
                name="prompt"
                rows="3"
                maxlength=MAX_PROMPT_CHARS
                placeholder="A lighthouse on a cliff at dusk, oil painting"
                bind:value=prompt
            ></textarea>
            <p class="counter" data-testid="prompt-counter">
                {move || format!("{} / {}", length(), MAX_PROMPT_CHARS)}
            </p>
        </form>
    }
}
