//! The prompt form: a textarea, the Generate button and the advanced settings. A plain form
//! posting to `submit_job`, so it works before (and without) the WASM: field names are
//! `params[prompt]`, `params[width]`, …; blank numbers mean "the model's default". In the
//! browser ([`bind`]) the fields feed the studio's signals and the submit is sent from them.

use leptos::prelude::*;

use super::params::size_presets;
use super::{Studio, FORM_ID};
use crate::api::{wire::decimal, MAX_PROMPT_CHARS, SUBMIT_FN_PATH};

fn counter_text(prompt: &str) -> String {
    format!("{} / {}", prompt.trim().chars().count(), MAX_PROMPT_CHARS)
}

/// The form as the server renders it, with the studio's current values.
#[component]
pub fn GenerateForm() -> impl IntoView {
    let studio = expect_context::<Studio>();
    let f = studio.fields;
    let model = studio.selected_model();
    let current_size = f.size();
    let current_model = f.model.get_untracked();
    let models = studio.models.with_value(|m| m.models.clone());
    view! {
        <form action=SUBMIT_FN_PATH method="post" id=FORM_ID class="prompt-form">
            <fieldset class="form-fields" disabled=untrack(|| studio.busy())>
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
                >
                    {f.prompt.get_untracked()}
                </textarea>
                <p class="counter" id="prompt-counter" data-testid="prompt-counter">
                    <span>{f.prompt.with_untracked(|p| counter_text(p))}</span>
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
                            >
                                {f.negative_prompt.get_untracked()}
                            </textarea>
                        </div>
                        <div class="field">
                            <label for="model">"Model"</label>
                            <select id="model" name="params[model]">
                                {models
                                    .into_iter()
                                    .map(|m| {
                                        let selected = m.name == current_model;
                                        view! { <option value=m.name.clone() selected=selected>{format!("{} ({})", m.name, m.kind)}</option> }
                                    })
                                    .collect_view()}
                            </select>
                        </div>
                        <div class="field">
                            <label for="size">"Size"</label>
                            <select id="size">
                                {size_presets(&model)
                                    .into_iter()
                                    .map(|p| view! { <option value=p.value() selected=p == current_size>{p.label()}</option> })
                                    .collect_view()}
                            </select>
                            <input type="hidden" id="width" name="params[width]" value=current_size.width/>
                            <input type="hidden" id="height" name="params[height]" value=current_size.height/>
                        </div>
                        <div class="field">
                            <label for="steps">"Steps"</label>
                            <input
                                id="steps"
                                name="params[steps]"
                                type="number"
                                inputmode="numeric"
                                min="1"
                                max=model.max_steps
                                placeholder=model.default_steps
                                value=f.steps.get_untracked()
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
                                min=decimal(model.min_guidance)
                                max=decimal(model.max_guidance)
                                placeholder=decimal(model.default_guidance)
                                value=f.guidance.get_untracked()
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
                                    value=f.seed.get_untracked()
                                />
                                <button type="button" class="button small" id="random-seed" data-testid="random-seed">
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

/// The limits a model puts on the number fields: (id, attribute, value).
#[cfg(feature = "hydrate")]
fn model_limits(m: &crate::api::ModelSummary) -> [(&'static str, &'static str, String); 5] {
    [
        ("steps", "max", m.max_steps.to_string()),
        ("steps", "placeholder", m.default_steps.to_string()),
        ("guidance", "min", decimal(m.min_guidance)),
        ("guidance", "max", decimal(m.max_guidance)),
        ("guidance", "placeholder", decimal(m.default_guidance)),
    ]
}

/// Wires the server's form to the studio: fields to signals and back, the model's limits and
/// sizes, the busy lock, the shortcut and the submit.
#[cfg(feature = "hydrate")]
pub fn bind(studio: Studio) {
    use super::dom::*;
    use wasm_bindgen::JsCast;

    let f = studio.fields;
    let form = by_id(FORM_ID);
    let texts = [("prompt", f.prompt), ("negative-prompt", f.negative_prompt), ("steps", f.steps), ("guidance", f.guidance), ("seed", f.seed), ("model", f.model)];
    for (id, signal) in texts {
        let el = by_id(id);
        let input = el.clone();
        on(&el, "input", move |_| signal.set(value(&input)));
        Effect::new(move |_| set_value(&el, &signal.get()));
    }


    // A model with a smaller limit than the chosen size falls back to its own default size.
    on(&by_id("model"), "change", move |_| {
        let m = studio.selected_model();
        if !size_presets(&m).contains(&f.size()) {
            f.width.set(m.default_width);
            f.height.set(m.default_height);
        }
    });
    // The model's limits and sizes: the server rendered the first model's, so only a change
    // rebuilds them.
    let size = by_id("size");
    Effect::new({
        let size = size.clone();
        move |before: Option<String>| {
            let m = studio.selected_model();
            if before.is_some_and(|b| b != m.name) {
                for (id, name, value) in model_limits(&m) {
                    set_attr(&by_id(id), name, Some(&value));
                }
                size.set_text_content(None);
                for p in size_presets(&m) {
                    let option = element("option", &[("value", &p.value())]);
                    option.set_text_content(Some(&p.label()));
                    let _ = size.append_child(&option);
                }
            }
            m.name
        }
    });
    // The counter, the lock while busy and the chosen size (after the model's sizes).
    let (counter, fieldset) = (find(&by_id("prompt-counter"), "span"), find(&form, "fieldset"));
    let (width, height) = (by_id("width"), by_id("height"));
    Effect::new(move |_| {
        set_text(&counter, &f.prompt.with(|p| counter_text(p)));
        set_property(&fieldset, "disabled", studio.busy());
        f.model.track();
        let p = f.size();
        set_value(&size, &p.value());
        set_value(&width, &p.width.to_string());
        set_value(&height, &p.height.to_string());
    });
    on(&by_id("size"), "change", move |ev| {
        let picked = ev.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()).map(|el| value(&el));
        if let Some(p) = picked.as_deref().and_then(super::params::SizePreset::parse) {
            f.width.set(p.width);
            f.height.set(p.height);
        }
    });

    on(&by_id("random-seed"), "click", move |_| {
        let n = (web_sys::js_sys::Math::random() * f64::from(u32::MAX)).floor() as u32;
        f.seed.set(n.to_string());
    });

    // Ctrl+Enter or Cmd+Enter in a text field submits.
    on(&form, "keydown", move |ev| {
        let Some(key) = ev.dyn_ref::<web_sys::KeyboardEvent>() else { return };
        if key.key() == "Enter" && (key.ctrl_key() || key.meta_key()) && target_closest(&ev, "textarea").is_some() {
            ev.prevent_default();
            if !studio.busy() {
                studio.request_submit();
            }
        }
    });

    on(&form, "submit", move |ev| {
        ev.prevent_default();
        match f.params() {
            Ok(params) => {
                studio.submit(params);
            }
            Err(e) => studio.error.set(Some(e)),
        }
    });
}
