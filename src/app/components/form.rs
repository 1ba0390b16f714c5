//! The prompt form: a textarea, the Generate button and the advanced settings. A plain form
//! posting to `submit_job`, so it works before (and without) the WASM: field names are
//! `params[prompt]`, `params[width]`, …; blank numbers mean "the model's default". With the
//! WASM the submit is dispatched from the fields' signals (no form-data decoding shipped).

use leptos::prelude::*;

use super::params::{size_presets, SizePreset};
use super::{Studio, FORM_ID};
use crate::api::{SubmitJob, MAX_PROMPT_CHARS, SUBMIT_FN_PATH};

#[component]
pub fn GenerateForm() -> impl IntoView {
    let studio = expect_context::<Studio>();
    let f = studio.fields;
    let busy = move || studio.busy();
    let length = move || f.prompt.with(|p| p.trim().chars().count());
    let model = move || studio.selected_model();

    // Ctrl+Enter or Cmd+Enter in a text field submits.
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) {
            ev.prevent_default();
            if !studio.busy() {
                studio.request_submit();
            }
        }
    };

    // A model with a smaller limit than the chosen size falls back to its own default size.
    let on_model_change = move |ev: leptos::ev::Event| {
        let name = event_target_value(&ev);
        f.model.set(name.clone());
        let m = studio.model(&name);
        let size = SizePreset { width: f.width.get_untracked(), height: f.height.get_untracked() };
        if !size_presets(&m).contains(&size) {
            f.width.set(m.default_width);
            f.height.set(m.default_height);
        }
    };

    let on_size_change = move |ev: leptos::ev::Event| {
        if let Some(p) = SizePreset::parse(&event_target_value(&ev)) {
            f.width.set(p.width);
            f.height.set(p.height);
        }
    };

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match f.params() {
            Ok(params) => {
                studio.submit.dispatch(SubmitJob { params });
            }
            Err(e) => studio.error.set(Some(e)),
        }
    };

    let random_seed = move |_| {
        #[cfg(feature = "hydrate")]
        {
            let n = (web_sys::js_sys::Math::random() * f64::from(u32::MAX)).floor() as u32;
            f.seed.set(n.to_string());
        }
    };

    let models = studio.models.with_value(|m| m.models.clone());
    // `bind:value` sets only the live property; the server-rendered HTML needs the initial
    // values as content/attributes (a page without JavaScript keeps the last parameters).
    let initial_prompt = f.prompt.get_untracked();
    let initial_negative = f.negative_prompt.get_untracked();
    let initial_steps = f.steps.get_untracked();
    let initial_guidance = f.guidance.get_untracked();
    let initial_seed = f.seed.get_untracked();

    view! {
        <form action=SUBMIT_FN_PATH method="post" node_ref=studio.form id=FORM_ID class="prompt-form" on:submit=on_submit>
            <fieldset class="form-fields" disabled=busy>
                <legend class="visually-hidden">"Describe your picture"</legend>
                <div class="prompt-head">
                    <label for="prompt">"Prompt"</label>
                    <span class="hint" id="prompt-hint">
                        <kbd>"Ctrl"</kbd>
                        "+"
                        <kbd>"Enter"</kbd>
                        " to generate"
                    </span>
                </div>
                <textarea
                    id="prompt"
                    name="params[prompt]"
                    rows="3"
                    maxlength=MAX_PROMPT_CHARS
                    aria-describedby="prompt-hint prompt-counter"
                    placeholder="A lighthouse on a cliff at dusk, oil painting"
                    bind:value=f.prompt
                    on:keydown=on_keydown
                >
                    {initial_prompt}
                </textarea>
                <p class="counter" id="prompt-counter" data-testid="prompt-counter">
                    <span>{move || format!("{} / {}", length(), MAX_PROMPT_CHARS)}</span>
                </p>

                <details class="advanced">
                    <summary>"Advanced settings"</summary>
                    <div class="advanced-grid">
                        <div class="field wide">
                            <label for="negative-prompt">"Negative prompt"</label>
                            <textarea
                                id="negative-prompt"
                                name="params[negativePrompt]"
                                rows="2"
                                maxlength=MAX_PROMPT_CHARS
                                placeholder="What to keep out of the picture"
                                bind:value=f.negative_prompt
                                on:keydown=on_keydown
                            >
                                {initial_negative}
                            </textarea>
                        </div>
                        <div class="field">
                            <label for="model">"Model"</label>
                            <select id="model" name="params[model]" on:change=on_model_change prop:value=move || f.model.get()>
                                {models
                                    .into_iter()
                                    .map(|m| {
                                        let name = m.name.clone();
                                        let selected = move || f.model.get() == name;
                                        view! {
                                            <option value=m.name.clone() selected=selected>
                                                {format!("{} ({})", m.name, m.kind)}
                                            </option>
                                        }
                                    })
                                    .collect_view()}
                            </select>
                        </div>
                        <div class="field">
                            <label for="size">"Size"</label>
                            <select id="size" on:change=on_size_change prop:value=move || f.size().value()>
                                {move || {
                                    let current = f.size();
                                    size_presets(&model())
                                        .into_iter()
                                        .map(|p| {
                                            view! {
                                                <option value=p.value() selected=p == current>
                                                    {p.label()}
                                                </option>
                                            }
                                        })
                                        .collect_view()
                                }}
                            </select>
                            <input type="hidden" name="params[width]" prop:value=move || f.width.get().to_string() value=move || f.width.get().to_string()/>
                            <input type="hidden" name="params[height]" prop:value=move || f.height.get().to_string() value=move || f.height.get().to_string()/>
                        </div>
                        <div class="field">
                            <label for="steps">"Steps"</label>
                            <input
                                id="steps"
                                name="params[steps]"
                                type="number"
                                inputmode="numeric"
                                min="1"
                                max=move || model().max_steps
                                placeholder=move || model().default_steps.to_string()
                                value=initial_steps
                                bind:value=f.steps
                            />
                        </div>
                        <div class="field">
                            <label for="guidance">"Guidance"</label>
                            <input
                                id="guidance"
                                name="params[guidance]"
                                type="number"
                                inputmode="decimal"
                                step="0.5"
                                min=move || model().min_guidance
                                max=move || model().max_guidance
                                placeholder=move || model().default_guidance.to_string()
                                value=initial_guidance
                                bind:value=f.guidance
                            />
                        </div>
                        <div class="field">
                            <label for="seed">"Seed"</label>
                            <div class="seed-row">
                                <input
                                    id="seed"
                                    name="params[seed]"
                                    type="number"
                                    inputmode="numeric"
                                    min="0"
                                    max=u32::MAX
                                    placeholder="random"
                                    value=initial_seed
                                    bind:value=f.seed
                                />
                                <button type="button" class="button small" on:click=random_seed data-testid="random-seed">
                                    "Random"
                                </button>
                            </div>
                        </div>
                    </div>
                </details>

                <div class="submit-row">
                    <button type="submit" class="button primary generate" aria-describedby="job-status">
                        "Generate"
                    </button>
                </div>
            </fieldset>
        </form>
    }
}
