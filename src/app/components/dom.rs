//! The few DOM operations the browser side needs. The page's markup is rendered by the server
//! (its components run there only); the island keeps it current through these: text,
//! attributes, `hidden`, form values and listeners. Thin calls into the browser, so the WASM
//! carries no view machinery for markup that never changes shape.

use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::js_sys::Reflect;
use web_sys::{Element, Event, HtmlElement};

/// The element with this id. The page is the server's, so a missing one is a bug of ours.
pub fn by_id(id: &str) -> Element {
    leptos::prelude::document().get_element_by_id(id).unwrap_or_else(|| panic!("the page has no #{id}"))
}

/// The first element inside `root` that matches `selector`.
pub fn find(root: &Element, selector: &str) -> Element {
    root.query_selector(selector).ok().flatten().unwrap_or_else(|| panic!("no {selector} in #{}", root.id()))
}

/// Every element inside `root` that matches `selector`.
pub fn find_all(root: &Element, selector: &str) -> Vec<Element> {
    let list = root.query_selector_all(selector).expect("a valid selector");
    (0..list.length()).filter_map(|i| list.item(i)?.dyn_into::<Element>().ok()).collect()
}

pub fn set_text(el: &Element, text: &str) {
    if el.text_content().as_deref() != Some(text) {
        el.set_text_content(Some(text));
    }
}

/// Sets an attribute, or removes it for `None`; untouched when it already reads so.
pub fn set_attr(el: &Element, name: &str, value: Option<&str>) {
    if el.get_attribute(name).as_deref() == value {
        return;
    }
    let _ = match value {
        Some(v) => el.set_attribute(name, v),
        None => el.remove_attribute(name),
    };
}

pub fn set_flag(el: &Element, name: &str, on: bool) {
    set_attr(el, name, on.then_some(""));
}

pub fn set_hidden(el: &Element, hidden: bool) {
    set_flag(el, "hidden", hidden);
}

/// A form control's live value (`input`, `textarea`, `select` alike).
pub fn value(el: &Element) -> String {
    Reflect::get(el, &"value".into()).ok().and_then(|v| v.as_string()).unwrap_or_default()
}

/// Sets a form control's live value, only when it differs (so a caret never jumps).
pub fn set_value(el: &Element, value: &str) {
    if self::value(el) != value {
        let _ = Reflect::set(el, &"value".into(), &JsValue::from_str(value));
    }
}

/// Sets a live boolean property (`disabled`) of a control.
pub fn set_property(el: &Element, name: &str, on: bool) {
    let _ = Reflect::set(el, &name.into(), &JsValue::from_bool(on));
}

/// Listens for `event` on `el` for the life of the page.
pub fn on(el: &Element, event: &str, handler: impl FnMut(Event) + 'static) {
    let closure = Closure::<dyn FnMut(Event)>::new(handler);
    let _ = el.add_event_listener_with_callback(event, closure.as_ref().unchecked_ref());
    closure.forget();
}

/// The element an event came from, or its nearest ancestor matching `selector`.
pub fn target_closest(ev: &Event, selector: &str) -> Option<Element> {
    ev.target()?.dyn_into::<Element>().ok()?.closest(selector).ok().flatten()
}

pub fn focus(el: &Element) {
    if let Some(el) = el.dyn_ref::<HtmlElement>() {
        let _ = el.focus();
    }
}

/// A new element with these attributes.
pub fn element(tag: &str, attrs: &[(&str, &str)]) -> Element {
    let el = leptos::prelude::document().create_element(tag).expect("a valid tag");
    for (name, value) in attrs {
        let _ = el.set_attribute(name, value);
    }
    el
}
